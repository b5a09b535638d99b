"""Preflight verdicts, exit codes, the fingerprint inputs and the lean entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gpuprobe.store import preflight as pf
from gpuprobe.node.fingerprint import Fingerprint
from result_factory import T0, fingerprint, make_result

FIXTURES = Path(__file__).resolve().parent / "fixtures"
L40S_FP = FIXTURES / "l40s-node.fingerprint.json"
H200_FP = FIXTURES / "h200-node.fingerprint.json"


@pytest.fixture
def field(tmp_path) -> Path:
    folder = tmp_path / "reports"
    shutil.copytree(FIXTURES / "field", folder)
    return folder


def fp(scenario: str, host: str = "node", **kw) -> Fingerprint:
    return Fingerprint.from_dict(fingerprint(scenario, host, **kw))


def test_l40s_is_known_incompatible_with_the_evidence(field):
    v = pf.evaluate([field], fp("l40s"))
    assert (v.verdict, v.exit_code) == ("known-incompatible", 4)
    buf = next(s for s in v.stages if s.stage == "buffer")
    assert buf.scope == "stack" and buf.status == "hang" and buf.counts == {"hang": 3}
    assert {r["host"] for r in buf.latest} == {"l40s-n1", "l40s-n2", "l40s-n3"}
    assert "buffer" in v.reason and "118% CPU" in v.reason and "20261101T140000Z-l40s-n3" in v.reason
    assert any("gpuprobe run --stage buffer" in a for a in v.advice)
    assert any("buffer-host-storage" in a for a in v.advice)


def test_h200_is_ok_for_the_stages_with_evidence(field):
    v = pf.evaluate([field], fp("h200"), ["cuda", "buffer", "train"])
    assert (v.verdict, v.exit_code) == ("ok", 0)


def test_no_evidence_exits_0_or_75_with_strict(field):
    v = pf.evaluate([field], fp("h200"))  # nvml, alloc, sim have no runs on H200
    assert (v.verdict, v.exit_code) == ("no-evidence", 0) and "nvml" in v.reason
    assert pf.evaluate([field], fp("h200"), strict=True).exit_code == 75
    assert pf.evaluate([field], fp("nolib"), ["buffer"], strict=True).verdict == "no-evidence"


def test_lost_gpu_is_transient(field):
    v = pf.evaluate([field], fp("lost"))
    assert (v.verdict, v.exit_code) == ("transient", 75) and "retry elsewhere" in v.reason


def test_same_model_other_stack_is_the_fallback(field):
    other = fp("l40s")
    other.driver_version = "580.65.06"
    v = pf.evaluate([field], other, ["buffer"])
    assert v.exit_code == 4 and v.stages[0].scope == "model"


def test_latest_evidence_wins(field):
    make_result(field, "l40s", "l40s-n1", {"buffer": "pass"}, at=T0 + timedelta(days=2))
    assert pf.evaluate([field], fp("l40s"), ["buffer"]).verdict == "ok"
    make_result(field, "l40s", "l40s-n2", {"buffer": "slow"}, at=T0 + timedelta(days=3))
    assert pf.evaluate([field], fp("l40s"), ["buffer"]).exit_code == 4


def test_skips_are_not_evidence_and_simulated_counts_only_for_simulated_nodes(tmp_path):
    make_result(tmp_path, "h200", "h1", {"buffer": "skip"})
    assert pf.evaluate([tmp_path], fp("h200"), ["buffer"]).verdict == "no-evidence"
    make_result(tmp_path, "h200", "drill", {"buffer": "hang"}, simulated=True, at=T0 + timedelta(hours=1))
    assert pf.evaluate([tmp_path], fp("h200"), ["buffer"]).verdict == "no-evidence"
    assert pf.evaluate([tmp_path], fp("h200", simulated=True), ["buffer"]).exit_code == 4


def test_fingerprint_from_a_result_file_or_the_environment(field, monkeypatch):
    result_file = next(field.glob("*l40s-n1*.result.json"))
    node, source = pf.node_fingerprint(result_file)
    assert node.hostname == "l40s-n1" and source == str(result_file)
    monkeypatch.setenv(pf.FINGERPRINT_ENV, str(H200_FP))
    assert pf.node_fingerprint()[0].gpu_model == "H200"
    monkeypatch.setenv(pf.FINGERPRINT_ENV, str(field / "missing.json"))
    with pytest.raises(pf.PreflightError, match="GPUPROBE_PREFLIGHT_FINGERPRINT"):
        pf.node_fingerprint()


def _cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed entry point (``python -m gpuprobe`` is the same), in a fresh interpreter."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True, env=full_env,
                          timeout=120)


def test_cli_exit_codes_and_json(field):
    res = _cli(["preflight", "--results", str(field), "--fingerprint", str(L40S_FP), "--json"])
    assert res.returncode == 4, res.stderr
    data = json.loads(res.stdout)
    assert data["verdict"] == "known-incompatible" and data["node"]["hostname"] == "l40s-n9"
    res = _cli(["preflight", "--results", str(field), "--stage", "cuda,buffer"], env={"GPUPROBE_FAKE_NVML": "h200"})
    assert res.returncode == 0 and "preflight: ok" in res.stdout
    res = _cli(["preflight", "--results", str(field), "--stage", "cuda", "--stage", "buffer"],
               env={"GPUPROBE_FAKE_NVML": "h200"})
    assert res.returncode == 0 and [s["stage"] for s in json.loads(_cli(
        ["preflight", "--results", str(field), "--stage", "cuda", "--stage", "buffer", "--json"],
        env={"GPUPROBE_FAKE_NVML": "h200"}).stdout)["stages"]] == ["cuda", "buffer"]
    res = _cli(["preflight", "--results", str(field), "--strict"], env={"GPUPROBE_FAKE_NVML": "h200"})
    assert res.returncode == 75
    res = _cli(["preflight", "--results", str(field)], env={"GPUPROBE_FAKE_NVML": "lost"})
    assert res.returncode == 75 and "retry elsewhere" in res.stdout


def test_cli_usage_errors_are_one_line(field):
    for args in (["--stage", "warp"], ["--stages", "cuda"], ["--fingerprint", str(field / "nope.json")], ["--live-timeout", "0"]):
        res = _cli(["preflight", "--results", str(field), *args])
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


HEAVY = ("rich", "torch", "psutil", "importlib.metadata", "gpuprobe.run.runner", "gpuprobe.cli.run",
         "gpuprobe.cli.matrix", "jinja2")


def test_preflight_imports_only_what_it_uses(field):
    """Through the one entry point, preflight loads none of the heavy modules (its start-up budget)."""
    code = ("import sys, atexit; "
            f"atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])); "
            "from gpuprobe.cli.main import main; "
            f"main(['preflight', '--results', {str(field)!r}, '--fingerprint', {str(L40S_FP)!r}])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 4, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout + res.stderr


def test_other_commands_still_go_through_the_full_cli():
    res = _cli(["--version"])
    assert res.returncode == 0 and "gpuprobe" in res.stdout


def test_live_probe_is_the_newest_evidence(tmp_path):
    """A real quick probe on the CPU (the alloc stage) beside the evidence."""
    make_result(tmp_path, "nolib", "cpu-node", {"alloc": "hang"})
    node = pf.node_fingerprint()[0] if not os.environ.get("GPUPROBE_FAKE_NVML") else fp("nolib")
    v = pf.evaluate([tmp_path], node, ["alloc"], live=["alloc"], live_timeout=60)
    alloc = v.stages[0]
    assert alloc.scope == "live" and v.live_run and Path(v.live_run).exists()
    assert v.verdict == ("ok" if alloc.status == "pass" else "known-incompatible")
