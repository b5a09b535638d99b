"""Credentials in command lines: redacted wherever they are stored or shown.

The end-to-end case is a real hang drill: the stage's process starts a helper that carries
``--api-key=...`` and ``--token ...`` on its command line (as a tracker's service process
or a user's launcher would), the watchdog records the stacks (py-spy's ``Process N:``
headers) and the process snapshot, and the secret must then be in no result file, report,
matrix or terminal output. The helper is started by a ``sitecustomize`` on the stage's
PYTHONPATH: the only staged part; the run, watchdog, evidence and views are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe.redact import (REDACTED, recorded_environment, redact_argv, redact_mapping, redact_stacks,
                             redact_text)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "SECRET-k3y-0123"
TOKEN = "SECRET-t0k-4567"

SITECUSTOMIZE = f"""
import subprocess, sys
# only in the stage's own process (python -m gpuprobe.child.stage ...), never in gpuprobe itself
if "gpuprobe.child.stage" in sys.orig_argv:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                      "--api-key={SECRET}", "--token", "{TOKEN}", "https://user:{SECRET}@example.org/x"])
"""


@pytest.mark.parametrize("argv, expected", [
    (["job.py", "--api-key=S"], ["job.py", f"--api-key={REDACTED}"]),
    (["job.py", "--api-key", "S", "--lr", "1"], ["job.py", "--api-key", REDACTED, "--lr", "1"]),
    (["job.py", "--token", "S"], ["job.py", "--token", REDACTED]),
    (["job.py", "--password=S", "password=S", "token=S", "secret=S"],
     ["job.py", f"--password={REDACTED}", f"password={REDACTED}", f"token={REDACTED}", f"secret={REDACTED}"]),
    (["env", "HF_TOKEN=S", "WANDB_API_KEY=S"], ["env", f"HF_TOKEN={REDACTED}", f"WANDB_API_KEY={REDACTED}"]),
    (["git", "clone", "https://u:S@host/r.git"], ["git", "clone", f"https://{REDACTED}@host/r.git"]),
    (["curl", "https://h/x?access_token=S&page=2"], ["curl", f"https://h/x?access_token={REDACTED}&page=2"]),
    # words, not substrings: these are not credentials
    (["train.py", "--max-tokens", "512", "--tokenizer", "gpt2", "--author", "me"],
     ["train.py", "--max-tokens", "512", "--tokenizer", "gpt2", "--author", "me"]),
    (["job.py", "--api-key", "--verbose"], ["job.py", "--api-key", "--verbose"]),
])
def test_argv_rules(argv, expected):
    assert redact_argv(argv) == expected


def test_free_text_stacks_environment_and_options():
    text = "python job.py --api-key S1  --db postgres://a:S2@h/db\n  Authorization: Bearer abcdefghijk\n"
    assert redact_text(text) == (f"python job.py --api-key {REDACTED}  --db postgres://{REDACTED}@h/db\n"
                                 f"  Authorization: Bearer {REDACTED}\n")
    assert redact_text('--config {"api_key": "S", "n": "x"}') == f'--config {{"api_key": "{REDACTED}", "n": "x"}}'
    stacks = "Process 7: python a.py --token S\nParent Process 6: bash -c 'run --password=S'\nThread 7 (idle)\n"
    assert "S\n" not in redact_stacks(stacks) and "=S'" not in redact_stacks(stacks)
    assert redact_stacks(stacks).count(REDACTED) == 2
    env = recorded_environment({"HYDRA_ARGS": "--api-key=S", "WANDB_API_KEY": "S", "HOME": "/root"})
    assert env == {"HYDRA_ARGS": f"--api-key={REDACTED}", "WANDB_API_KEY": REDACTED}
    assert redact_mapping({"buffer": {"api_key": "S", "n": 3}}) == {"buffer": {"api_key": REDACTED, "n": 3}}


def _gpuprobe(args: list[str], env: dict, tty: bool = True) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_") and k not in ("COLUMNS",)}
    full.update({"COLUMNS": "160", "PYTHONPATH": str(ROOT), **env})
    if tty:
        full["TTY_COMPATIBLE"] = "1"   # the views a person sees: tables, the stage detail with the processes
    return subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True, env=full,
                          cwd=ROOT, timeout=120)


def test_secret_in_a_child_command_line_is_in_no_file_report_or_terminal(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    results = tmp_path / "results"
    drill = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "GPUPROBE_FAILPOINTS": "nvml.init=hang"}
    run = _gpuprobe(["run", "--only", "--stage", "nvml", "--device", "cpu", "--no-fork-server", "--timeout", "3",
                     "--results", str(results)], drill)
    assert run.returncode == 3, run.stderr
    [path] = results.glob("*.result.json")
    stage = json.loads(path.read_text())["stages"][0]
    # the helper was captured, redacted: in the process snapshot and in py-spy's headers when it ran
    helper = [p for p in stage["evidence"]["process"]["processes"] if "time.sleep(120)" in p.get("cmdline", "")]
    assert helper and f"--api-key={REDACTED}" in helper[0]["cmdline"], stage["evidence"]["process"]
    if stage["evidence"]["stacks"]["method"] and "py-spy" in stage["evidence"]["stacks"]["method"]:
        assert f"--token {REDACTED}" in stage["evidence"]["stacks"]["text"]
    outputs = {"run": run.stdout + run.stderr, "result file": path.read_text()}
    views = {"show": ["show", "latest"], "show --verbose": ["show", "latest", "--verbose"],
             "report md": ["report", "latest", "--format", "markdown"],
             "report html": ["report", "latest", "--format", "html"]}
    views.update({f"matrix {fmt}": ["matrix", "--format", fmt] for fmt in ("text", "markdown", "json", "html", "prom")})
    for name, args in views.items():
        out = _gpuprobe([*args, "--results", str(results)], {})
        assert out.returncode == 0, f"{name}: {out.stderr}"
        outputs[name] = out.stdout + out.stderr
    assert REDACTED in outputs["show"] and REDACTED in outputs["report md"]   # the evidence is shown, redacted
    leaked = [name for name, text in outputs.items() if SECRET in text or TOKEN in text]
    assert not leaked, f"the secret leaked into: {leaked}"


def test_views_redact_files_written_before_redaction(tmp_path):
    """A result file from an older version, with the secret stored raw: shown redacted."""
    from gpuprobe.store import report
    from gpuprobe.store.results import read_result
    from result_factory import make_result

    path = make_result(tmp_path, "l40s", "n1", {"buffer": "hang"})
    doc = json.loads(path.read_text())
    doc["provenance"]["command"] = ["gpuprobe", "run", f"--api-key={SECRET}"]
    ev = doc["stages"][0]["evidence"]
    ev["process"]["processes"][0]["cmdline"] = f"python job.py --token {TOKEN}"
    ev["stacks"]["text"] = f"Process 4242: python job.py --api-key {SECRET}\n" + ev["stacks"]["text"]
    path.write_text(json.dumps(doc))
    for fmt in ("markdown", "html"):
        text = report.render(read_result(path), fmt, path)
        assert SECRET not in text and TOKEN not in text and "redacted" in text   # escaped in HTML
    shown = _gpuprobe(["show", str(path), "--verbose"], {})
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout and TOKEN not in shown.stdout


def test_trainer_run_json_has_no_credentials(tmp_path):
    """The bundled trainer's run.json (command and resolved config) takes the same rules."""
    from gpuprobe_pwm.runs import run_metadata

    meta = run_metadata(["train.py", f"wandb.api_key={SECRET}", "alg=pwm_5M"],
                        {"wandb": {"api_key": SECRET, "project": "p"}, "alg": {"lr": 1e-3}},
                        tmp_path, tmp_path, tmp_path, "cpu")
    assert SECRET not in json.dumps(meta)
    assert meta["command"][-2:] == [f"wandb.api_key={REDACTED}", "alg=pwm_5M"]
    assert meta["config"] == {"wandb": {"api_key": REDACTED, "project": "p"}, "alg": {"lr": 1e-3}}
