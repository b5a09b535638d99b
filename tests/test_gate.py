"""The trainer's gate: refuse a known-bad node before building anything, unless told to warn."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe_pwm import gate

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = FIXTURES.parents[1]


@pytest.fixture
def field_env(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "reports"
    shutil.copytree(FIXTURES / "field", folder)
    monkeypatch.setenv("GPUPROBE_RESULTS", str(folder))
    monkeypatch.setenv("GPUPROBE_PREFLIGHT_FINGERPRINT", str(FIXTURES / "l40s-node.fingerprint.json"))
    return folder


def test_enforce_refuses_with_stage_counts_hosts_and_advice(field_env, caplog):
    with caplog.at_level(logging.INFO, logger="gpuprobe_pwm.gate"), pytest.raises(SystemExit) as exc:
        gate.preflight_gate({"preflight": "enforce"})
    assert exc.value.code == 4
    text = caplog.text
    assert "stage buffer: hang in 3 of 3 runs (this stack)" in text
    assert "l40s-n1, l40s-n2, l40s-n3" in text and "20261101T140000Z-l40s-n3" in text
    assert "gpuprobe run --stage buffer" in text and "general.preflight=warn" in text


def test_warn_logs_and_continues(field_env, caplog):
    with caplog.at_level(logging.INFO, logger="gpuprobe_pwm.gate"):
        gate.preflight_gate({"preflight": "warn"})
    assert "training anyway" in caplog.text


def test_off_and_good_nodes_pass(field_env, monkeypatch):
    gate.preflight_gate({"preflight": "off"})
    monkeypatch.setenv("GPUPROBE_PREFLIGHT_FINGERPRINT", str(FIXTURES / "h200-node.fingerprint.json"))
    gate.preflight_gate({"preflight": "enforce"})
    with pytest.raises(gate.GateError):
        gate.preflight_gate({"preflight": "maybe"})


def _train(overrides: list[str], env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    full_env.update(env)
    cmd = [sys.executable, "-m", "gpuprobe_pwm.train", "env=cartpole_swingup", "alg=pwm_tiny", "general.seed=42",
           "general.device=cpu", "env.config.num_envs=4", "env.config.episode_length=16", "alg.max_epochs=1",
           "general.eval_runs=2", f"general.logdir={tmp_path / 'runs'}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=tmp_path, timeout=240)


def test_pwm_train_refuses_a_known_bad_node_and_warn_launches(tmp_path):
    folder = tmp_path / "reports"
    shutil.copytree(FIXTURES / "field", folder)
    env = {"GPUPROBE_RESULTS": str(folder), "GPUPROBE_FAKE_NVML": "l40s"}
    refused = _train([], env, tmp_path)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "stage buffer: hang" in refused.stdout + refused.stderr
    assert not (tmp_path / "runs").exists()  # nothing was built
    warned = _train(["general.preflight=warn"], env, tmp_path)
    assert warned.returncode == 0, warned.stdout[-2000:] + warned.stderr[-2000:]
    assert "training anyway" in warned.stdout + warned.stderr
    assert (tmp_path / "runs").is_dir()
