"""Keep credentials out of result files.

Result files are shared (NFS folders, committed reports), so the environment we record
is filtered twice: only variables that describe the stack are kept, and any of those
whose name looks like a credential has its value replaced.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Mapping

REDACTED = "<redacted>"

# Names that look like credentials, matched case-insensitively.
SECRET_PATTERNS = (
    "*_API_KEY", "*APIKEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*",
    "*PRIVATE_KEY*", "AWS_*", "WANDB_API_KEY", "HF_TOKEN", "*_AUTH", "*AUTH_*", "*SESSION_KEY*",
)

# Variables worth recording: they change how CUDA, torch, the scheduler or we behave.
RECORDED_PREFIXES = (
    "CUDA_", "NVIDIA_", "NCCL_", "TORCH_", "PYTORCH_", "OMP_", "MKL_", "SLURM_", "GPUPROBE_",
    "LD_LIBRARY_PATH", "CONDA_DEFAULT_ENV", "VIRTUAL_ENV", "WANDB_", "HYDRA_", "AWS_", "HF_",
)

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@", re.I)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in SECRET_PATTERNS)


def redact_value(value: str) -> str:
    """Strip ``user:password@`` from URLs inside a value (proxy settings, DSNs)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", value)


def recorded_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The stack-relevant part of ``environ``, with credential-like values redacted."""
    out: dict[str, str] = {}
    for name in sorted(environ):
        if not name.upper().startswith(RECORDED_PREFIXES):
            continue
        out[name] = REDACTED if is_secret_name(name) else redact_value(environ[name])
    return out


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the values of credential-like options replaced.

    ``--api-key=X``, ``--wandb-token X``, ``PASSWORD=X`` and ``user:pw@`` in URLs: a job's
    command line is recorded in shared result files.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, sep, value = arg.partition("=")
        bare = name.lstrip("-").replace("-", "_").replace(".", "_")
        # "api_key" is a credential as "X_API_KEY" is: the patterns expect a prefix
        if bare and (is_secret_name(bare) or is_secret_name(f"X_{bare}")):
            if sep:
                out.append(f"{name}={REDACTED}")
                continue
            if arg.startswith("-"):
                out.append(arg)
                hide_next = True
                continue
        out.append(redact_value(arg))
    return out
