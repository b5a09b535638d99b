"""One trainer epoch on dflex_ant and dflex_hopper at pwm_5M, split into collection, world model,
actor and critic, from the trainer's own per-epoch timers (metrics.jsonl: time/collect, time/wm,
time/actor, time/critic).

Each env trains ``--epochs`` epochs at its upstream num_envs with upstream's env arguments; the
epochs that ran all four parts (the Buffer holds complete episodes) are summarised as medians.
``--episode-length`` (default 64) only makes episodes finish early enough that the world model
starts training within the run; it does not change the cost of a step or of an update.

    python benchmarks/dflex_epoch.py --epochs 12
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, machine, median_of

PARTS = ("time/collect", "time/wm", "time/actor", "time/critic", "time/epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="*", default=["dflex_ant", "dflex_hopper"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--episode-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {machine()}; pwm_5M, {args.threads} torch thread(s), episode_length {args.episode_length}")
    print(f"{'env':14} {'num_envs':>8} {'epochs':>6} " + " ".join(f"{p.split('/')[1] + ' s':>10}" for p in PARTS))
    for name in args.envs:
        logdir = Path(tempfile.mkdtemp(prefix="dflex-epoch-"))
        cmd = [sys.executable, "-m", "gpuprobe_pwm.train", f"env={name}", "alg=bundled_5M", f"alg.max_epochs={args.epochs}",
               f"env.config.episode_length={args.episode_length}", "general.eval_runs=2", "general.device=cpu",
               f"general.torch_threads={args.threads}", f"general.logdir={logdir}", "general.preflight=off"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        run_dir = Path(json.loads((logdir / "index.json").read_text())["runs"][-1]["path"])
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        full = [r for r in records if not r.get("final") and all(r.get(p) is not None for p in PARTS)]
        num_envs = json.loads((run_dir / "run.json").read_text())["config"]["env"]["num_envs"]
        if not full:
            print(f"{name:14} {num_envs:8d} no epoch with all four parts in {args.epochs}")
            continue
        print(f"{name:14} {num_envs:8d} {len(full):6d} " + " ".join(f"{median_of([r[p] for r in full]):10.2f}"
                                                                  for p in PARTS), flush=True)


if __name__ == "__main__":
    main()
