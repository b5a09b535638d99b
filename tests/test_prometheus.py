"""Prometheus text by node_exporter's textfile conventions, checked by promtool itself.

``promtool check metrics`` (Debian's ``prometheus`` package; .ci/run installs it) lints the
exposition: types, names, units. The conventions it cannot see are asserted here: every
metric a gauge, ``_seconds`` with no suffix after the unit, no placeholder label values, a
status as a state set of its own (``skip`` is never a pass), and preflight's file written
atomically with one gauge per stage verdict and the overall answer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe.store import matrix as mx
from gpuprobe.store.prom import matrix_metrics, preflight_metrics

ROOT = Path(__file__).resolve().parent.parent
FIELD = ROOT / "tests" / "fixtures" / "field"
L40S_FP = ROOT / "tests" / "fixtures" / "l40s-node.fingerprint.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{[^}]*\})? (\S+)$')


@pytest.fixture
def field(tmp_path: Path) -> Path:
    shutil.copytree(FIELD, tmp_path / "field")
    return tmp_path / "field"


def promtool(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


def samples(text: str) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def conventions(text: str) -> None:
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert types and all(t == "gauge" for _, t in types), types
    assert not any(re.search(r"_seconds_.", name) for name, _ in types)   # base unit last: _seconds, not _seconds_median
    assert '="-"' not in text and '=""' not in text                       # no placeholder label values
    assert set(samples(text)) == {name for name, _ in types}


def run_preflight(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    full.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-m", "gpuprobe", "preflight", *args], capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=120)


@needs_promtool
def test_matrix_prom_passes_promtool_and_the_conventions(field):
    text = matrix_metrics(mx.build([field]))
    res = promtool(text)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr
    conventions(text)
    # the latest status is its own metric: one series per status, the current one 1; skip is not a pass
    latest = [(lab, v) for lab, v in samples(text)["gpuprobe_stage_latest_status"]
              if 'model="L40S"' in lab and 'stage="buffer"' in lab]
    assert {re.search(r'status="([^"]+)"', lab).group(1): v for lab, v in latest}["hang"] == 1
    assert sum(v for _, v in latest) == 1


@needs_promtool
def test_preflight_prom_file_passes_promtool(field, tmp_path):
    out = tmp_path / "textfile" / "gpuprobe_preflight.prom"
    out.parent.mkdir()
    res = run_preflight(["--results", str(field), "--fingerprint", str(L40S_FP), "--format", "prom", "-o", str(out)])
    assert res.returncode == 4, res.stderr                  # the answer's exit code, as without --format prom
    assert [p.name for p in out.parent.iterdir()] == [out.name]   # written atomically: no temporary file left
    text = out.read_text()
    check = promtool(text)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr
    conventions(text)
    got = samples(text)
    assert ('{verdict="known-incompatible"}', 1.0) in got["gpuprobe_preflight_verdict"]
    assert sum(v for _, v in got["gpuprobe_preflight_verdict"]) == 1
    assert got["gpuprobe_preflight_exit_code"] == [("", 4.0)]
    ok = dict(got["gpuprobe_preflight_stage_ok"])            # one gauge per stage verdict
    assert set(ok) == {f'{{stage="{s}"}}' for s in ("nvml", "cuda", "alloc", "sim", "buffer", "train")}
    assert ok['{stage="cuda"}'] == 1 and ok['{stage="buffer"}'] == 0
    status = dict(got["gpuprobe_preflight_stage_status"])
    assert status['{stage="buffer",status="hang"}'] == 1 and status['{stage="buffer",status="pass"}'] == 0
    assert '{stage="nvml",status="hang"}' not in status      # no evidence: no status series, never a made-up one


def test_preflight_prom_to_stdout_and_the_ok_answer(field):
    res = run_preflight(["--results", str(field), "--stage", "cuda,buffer", "--format", "prom"],
                        env={"GPUPROBE_FAKE_NVML": "h200"})
    assert res.returncode == 0, res.stderr
    got = samples(res.stdout)
    assert ('{verdict="ok"}', 1.0) in got["gpuprobe_preflight_verdict"]
    assert dict(got["gpuprobe_preflight_stage_ok"]) == {'{stage="cuda"}': 1.0, '{stage="buffer"}': 1.0}


def test_unknown_values_are_left_out():
    verdict = {"verdict": "no-evidence", "exit_code": 0, "stages": [
        {"stage": "cuda", "status": None, "scope": None, "runs": 0}],
        "node": {"simulated": None, "stack": {"gpu_model": "no GPU", "arch": "-", "driver": "-", "cuda": "-",
                                              "torch": "-", "dflex": "-"}}}
    text = preflight_metrics(verdict, now=0)
    assert 'gpuprobe_preflight_node_info{model="no GPU"} 1' in text
    assert "gpuprobe_preflight_stage_status" not in text
