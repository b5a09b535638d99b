"""The trainer on the real dflex, as a user runs it (python -m gpuprobe_pwm.train ...).

Made cheap for CI with overrides only: fewer envs, 32-step episodes (so that episodes finish and
the world model, actor and critic all train within a few epochs), two evaluation episodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gpuprobe_pwm import runs

REPO = Path(__file__).resolve().parents[2]
CHEAP = ["env.config.num_envs=8", "env.config.episode_length=32", "general.eval_runs=2", "general.torch_threads=1",
         "general.device=cpu"]
# Resident memory may move by allocator noise after the first epochs; a graph kept alive through the
# simulator grows with every step (hundreds of steps here), far past this.
RSS_GROWTH_LIMIT_MB = 64.0


def train(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path | None]:
    logdir = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "gpuprobe_pwm.train", *overrides, *CHEAP, f"general.logdir={logdir}"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    index = logdir / "index.json"
    run_dir = Path(json.loads(index.read_text())["runs"][-1]["path"]) if index.is_file() else None
    return proc, run_dir


def test_dflex_ant_pwm_5m_trains_three_epochs_and_leaves_the_checkpoints(tmp_path, dflex_package):
    proc, run_dir = train(tmp_path, "env=dflex_ant", "alg=pwm_5M", "alg.max_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix in (".pt", ".buffer")) == [
        "best_policy.pt", "final_policy.buffer", "final_policy.pt", "init_policy.pt", "latest_checkpoint.pt"]
    records = [r for r in runs.read_metrics(run_dir / "metrics.jsonl") if not r.get("final")]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    trained = [r for r in records if "wm/loss" in r]
    assert trained and all("actor/loss" in r and "critic/loss" in r for r in trained)


def test_dflex_hopper_memory_stays_flat_over_twenty_epochs(tmp_path, dflex_package):
    proc, run_dir = train(tmp_path, "env=dflex_hopper", "alg=pwm_tiny", "alg.max_epochs=20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [r for r in runs.read_metrics(run_dir / "metrics.jsonl") if not r.get("final")]
    # pwm_tiny (upstream's loop, H=4): 4 env steps per epoch, so the first 32-step episode ends by
    # epoch 8 at the latest (Hopper often terminates sooner); every epoch after it trains.
    assert len(records) == 20 and sum("wm/loss" in r for r in records) >= 12
    rss = [r["mem/rss_mb"] for r in records]
    # from epoch 5 on, the Buffer and the models are allocated; what grows after that is a leak
    assert max(rss[4:]) - rss[4] < RSS_GROWTH_LIMIT_MB, rss
