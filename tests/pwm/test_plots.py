from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe_pwm import plots, runs

REPO = Path(__file__).resolve().parents[2]
NAME = "pwm_5M_cartpole_swingup_seed42"


def fake_run(logdir: Path) -> Path:
    run_dir = runs.make_run_dir(logdir, NAME)
    runs.register_run(logdir, run_dir, NAME)
    log = runs.MetricsLog(run_dir / runs.METRICS)
    for i in range(1, 21):
        record = {"iteration": i, "train/return": None if i < 3 else float(i), "wm/loss": 1.0 / i,
                  "wm/consistency": 0.5 / i, "wm/reward": 0.1 / i, "actor/loss": -float(i), "critic/loss": 2.0 / i}
        if i % 5 == 0:
            record["eval/return"] = float(i) * 1.1
        log.write(record)
    log.write({"final": True, "eval/return": 30.0})
    log.close()
    with open(run_dir / runs.METRICS, "a") as fh:
        fh.write('{"iteration": 21, "train/ret')  # a torn last line from a killed run
    return run_dir


def test_plots_from_run_dir(tmp_path):
    run_dir = fake_run(tmp_path / "runs")
    paths = plots.make_plots(run_dir, reference=154.2)
    assert [p.name for p in paths] == ["returns.png", "losses.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_script_finds_latest_run_by_name(tmp_path):
    run_dir = fake_run(tmp_path / "runs")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "generate_visualizations.py"),
                          "--log-dir", str(tmp_path / "runs"), "--run", NAME, "--out", str(tmp_path / "png")],
                         capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["losses.png", "returns.png"]
    assert plots.resolve_run_dir(tmp_path / "runs", NAME) == run_dir


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        plots.resolve_run_dir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / runs.METRICS).write_text(json.dumps({"final": True}) + "\n")
    with pytest.raises(ValueError):
        plots.make_plots(empty)
    assert plots.main(["--log-dir", str(tmp_path / "nope")]) == 2
