from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gpuprobe_pwm import tidy

REPO = Path(__file__).resolve().parents[2]


def make_upstream_run(root: Path, with_best: bool) -> Path:
    run = root / "logs" / "dflex_ant" / ("with_best" if with_best else "no_best")
    run.mkdir(parents=True)
    for it, rew, size in ((500, 10.5, 1000), (1000, 250.25, 2000), (1500, -3e1, 3000), (2000, 99.0, 4000)):
        (run / f"PWM_iter{it}_rew{rew}.pt").write_bytes(b"x" * size)
    (run / "final_policy.pt").write_bytes(b"f" * 10)
    (run / "final_policy.buffer").write_bytes(b"b" * 10)
    (run / "init_policy.pt").write_bytes(b"i" * 10)
    (run / "log.txt").write_text("hello")
    if with_best:
        (run / "best_policy.pt").write_bytes(b"p" * 10)
    return run


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def test_plan_keeps_best_or_highest_reward(tmp_path):
    no_best = make_upstream_run(tmp_path, with_best=False)
    plan = tidy.plan_run(no_best)
    assert [p.name for p in plan.keep] == ["final_policy.pt", "PWM_iter1000_rew250.25.pt"]
    assert [p.name for p in plan.move] == ["PWM_iter500_rew10.5.pt", "PWM_iter1500_rew-30.0.pt",
                                           "PWM_iter2000_rew99.0.pt"]
    assert plan.bytes_freed == 8000
    with_best = make_upstream_run(tmp_path, with_best=True)
    plan = tidy.plan_run(with_best)
    assert [p.name for p in plan.keep] == ["best_policy.pt", "final_policy.pt"]
    assert len(plan.move) == 4 and plan.bytes_freed == 10000
    assert tidy.human_bytes(10000) == "9.8 KiB" and tidy.human_bytes(5) == "5 B"


def test_dry_run_changes_nothing_and_apply_moves(tmp_path, capsys):
    make_upstream_run(tmp_path, with_best=False)
    make_upstream_run(tmp_path, with_best=True)
    before = snapshot(tmp_path)
    assert tidy.main([str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "would free 17.6 KiB" in out and "2 run folder(s)" in out
    assert snapshot(tmp_path) == before

    assert tidy.main([str(tmp_path / "logs"), "--apply", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["applied"] and report["bytes_freed"] == 18000
    after = snapshot(tmp_path)
    assert sorted(after.values()) == sorted(before.values())  # moved, nothing deleted
    no_best = tmp_path / "logs" / "dflex_ant" / "no_best"
    assert (no_best / "PWM_iter1000_rew250.25.pt").is_file()
    assert sorted(p.name for p in (no_best / "old_checkpoints").iterdir()) == [
        "PWM_iter1500_rew-30.0.pt", "PWM_iter2000_rew99.0.pt", "PWM_iter500_rew10.5.pt"]
    assert (no_best / "init_policy.pt").is_file() and (no_best / "log.txt").is_file()
    # A second pass finds nothing left to move.
    assert tidy.main([str(tmp_path / "logs"), "--apply"]) == 0
    assert snapshot(tmp_path) == after


def test_script_wrapper_runs(tmp_path):
    make_upstream_run(tmp_path, with_best=True)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "tidy_runs.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "would move 4 file(s)" in out.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "tidy_runs.py"), str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
