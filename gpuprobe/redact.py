"""Keep credentials out of result files, reports and the terminal: the one owner of the rules.

Result files are shared (NFS folders, committed reports), so everything we record that a
user or a job chose is filtered here before it is written, and again before it is shown
(files written by older versions, or by hand):

- environments: only variables that describe the stack are kept, and any of those whose
  name looks like a credential has its value replaced;
- command lines (``argv`` lists, and the space-joined strings of process snapshots and of
  py-spy's ``Process N: ...`` headers): ``--api-key=X``, ``--api-key X``, ``--token X``,
  ``password=X``, ``DB_PASSWORD=X``, ``?access_token=X`` and ``user:pass@`` in URLs;
- free text (a log tail): the same rules, token by token.

docs/WATCHDOG.md ("Credentials") lists the rules for users.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Mapping

REDACTED = "<redacted>"

# Environment variable names that look like credentials, matched case-insensitively.
SECRET_PATTERNS = (
    "*_API_KEY", "*APIKEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*",
    "*PRIVATE_KEY*", "AWS_*", "WANDB_API_KEY", "HF_TOKEN", "*_AUTH", "*AUTH_*", "*SESSION_KEY*",
)

# Variables worth recording: they change how CUDA, torch, the scheduler or we behave.
RECORDED_PREFIXES = (
    "CUDA_", "NVIDIA_", "NCCL_", "TORCH_", "PYTORCH_", "OMP_", "MKL_", "SLURM_", "GPUPROBE_",
    "LD_LIBRARY_PATH", "CONDA_DEFAULT_ENV", "VIRTUAL_ENV", "WANDB_", "HYDRA_", "AWS_", "HF_",
)

# An option or key names a credential when one of its words is one of these, or two
# neighbouring words make one of the pairs. Words, not substrings: "--max-tokens 512"
# and "--tokenizer gpt2" are not credentials, "--hf-token X" and "--api-key X" are.
SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey", "credential",
                          "credentials", "auth", "passphrase"})
SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("session", "key"),
                          ("secret", "key"), ("client", "secret"), ("auth", "token")})

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@", re.I)
# key=value inside one argument: at its start (after dashes) or after ? & ; , (a query string)
_KEY_VALUE = re.compile(r"(?P<lead>^-{0,2}|[?&;,])(?P<key>[A-Za-z][\w.-]*)=(?P<value>[^&;,\s]*)")
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.I)
_PYSPY_HEAD = re.compile(r"^(?P<head>(?:Parent )?Process \d+: )(?P<cmd>.*)$", re.M)
# "key": "value" in JSON on a command line (a --config '{"api_key": ...}' argument)
_JSON_PAIR = re.compile(r'(?P<key>"[\w.-]+"\s*:\s*)"(?P<value>(?:[^"\\]|\\.)*)"')


def is_secret_name(name: str) -> bool:
    """An environment variable's name that looks like a credential (``WANDB_API_KEY``)."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in SECRET_PATTERNS)


def is_secret_key(name: str) -> bool:
    """An option or key (``--api-key``, ``password``, ``HF_TOKEN``, ``db.password``) that names a credential."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if any(w in SECRET_WORDS for w in words) or any(pair in SECRET_PAIRS for pair in zip(words, words[1:])):
        return True
    # an environment variable on a command line ("env AWS_ACCESS_KEY_ID=... python ...")
    bare = name.lstrip("-")
    return bare.isupper() and is_secret_name(bare)


def redact_value(value: str) -> str:
    """Strip ``user:password@`` from URLs inside a value (proxy settings, DSNs)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", value)


def _redact_pairs(arg: str) -> str:
    def pair(m: re.Match[str]) -> str:
        if not is_secret_key(m.group("key")) or not m.group("value"):
            return m.group(0)
        return f"{m.group('lead')}{m.group('key')}={REDACTED}"

    return _KEY_VALUE.sub(pair, redact_value(arg))


def _hides_next(arg: str) -> bool:
    """``--api-key`` (with its value in the next argument)."""
    return arg.startswith("-") and "=" not in arg and is_secret_key(arg)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the values of credential-like options replaced.

    ``--api-key=X``, ``--wandb-token X``, ``PASSWORD=X``, ``?token=X`` and ``user:pw@`` in
    URLs: a job's command line is recorded in shared result files.
    """
    out: list[str] = []
    hide_next = False
    for arg in (str(a) for a in argv):
        if hide_next:
            hide_next = False
            if not arg.startswith("-"):
                out.append(REDACTED)
                continue
        out.append(_redact_pairs(arg))
        hide_next = _hides_next(arg)
    return out


def redact_text(text: str) -> str:
    """Free text (a space-joined command line, a log tail) with the argv rules applied word by
    word, keeping its spacing and line breaks; ``Bearer X`` headers and JSON ``"token": "X"`` too."""
    parts = re.split(r"(\s+)", text)
    words = parts[0::2]
    clean = redact_argv(words)
    parts[0::2] = clean
    text = _BEARER.sub(lambda m: f"{m.group('kind')} {REDACTED}", "".join(parts))
    return _JSON_PAIR.sub(lambda m: f'{m.group("key")}"{REDACTED}"' if is_secret_key(m.group("key")) and m.group("value")
                          else m.group(0), text)


def redact_command(cmdline: list[str] | str | None) -> str:
    """A process's command line as one redacted string (process snapshots, reaper reports)."""
    if cmdline is None:
        return ""
    return redact_text(cmdline if isinstance(cmdline, str) else " ".join(cmdline))


def redact_stacks(text: str) -> str:
    """py-spy heads each process, and its parent, with its command line ("Process 12: python train.py --token X")."""
    return _PYSPY_HEAD.sub(lambda m: m.group("head") + redact_text(m.group("cmd")), text or "")


def redact_snapshot(snapshot: dict) -> dict:
    """A copy of a process snapshot (:func:`gpuprobe.run.evidence.process_snapshot`) with its
    command lines redacted."""
    out = dict(snapshot)
    if isinstance(out.get("processes"), list):
        out["processes"] = [{**p, "cmdline": redact_text(p["cmdline"])}
                            if isinstance(p, dict) and isinstance(p.get("cmdline"), str) else p
                            for p in out["processes"]]
    return out


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Options or config (``{"wandb": {"api_key": X}}``) with credential-like keys' values replaced."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out[key] = redact_mapping(value)
        elif is_secret_key(str(key)) and value not in (None, ""):
            out[key] = REDACTED
        elif isinstance(value, str):
            out[key] = redact_text(value)
        else:
            out[key] = value
    return out


def recorded_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The stack-relevant part of ``environ``, with credential-like values redacted."""
    out: dict[str, str] = {}
    for name in sorted(environ):
        if not name.upper().startswith(RECORDED_PREFIXES):
            continue
        out[name] = REDACTED if is_secret_name(name) else redact_text(environ[name])
    return out
