#!/usr/bin/env python
"""Learning benchmark: pwm_5M on the bundled cart-pole swing-up, on the CPU.

Claim checked: the deterministic evaluation return rises from near zero to >= 80% of the scripted
swing-up controller's return (gpuprobe_pwm.envs.cartpole.reference_return), within the wall budget.
Training stops early at that point (general.target_return). Deviations from the pwm_5M defaults
are the CLI options below; BENCHMARKS.md lists the ones used for the recorded result.

    nohup python benchmarks/learning_cartpole.py --seed 42 > benchmarks/out/learning_cartpole.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpuprobe_pwm import runs
from gpuprobe_pwm.envs.cartpole import reference_return
from gpuprobe_pwm.plots import make_plots
from gpuprobe_pwm.train import compose_config, resolve_config, run

log = logging.getLogger("learning_cartpole")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epochs", type=int, default=15000, help="pwm_5M default; LR decays over this many")
    ap.add_argument("--num-envs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256, help="world-model and actor batch (pwm_5M: 256)")
    ap.add_argument("--wm-iterations", type=int, default=8)
    ap.add_argument("--wm-warmup", type=int, default=0, help="extra wm updates when the first episodes land")
    ap.add_argument("--eval-interval", type=int, default=10)
    ap.add_argument("--eval-episodes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (general.torch_threads); default: the trainer's, one per core")
    ap.add_argument("--minutes", type=float, default=15.0, help="wall budget (general.time_limit_minutes)")
    ap.add_argument("--goal", type=float, default=0.8, help="fraction of the reference return")
    ap.add_argument("--logdir", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("overrides", nargs="*", help="more Hydra overrides, listed in the summary")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    reference = reference_return()
    target = args.goal * reference
    overrides = [
        "alg=bundled_5M", "env=cartpole_swingup", f"general.seed={args.seed}", "general.device=cpu",
        f"alg.max_epochs={args.epochs}", f"env.config.num_envs={args.num_envs}",
        f"alg.wm_batch_size={args.batch}", f"alg.bundled.actor_batch_size={args.batch}",
        f"alg.wm_iterations={args.wm_iterations}", f"alg.bundled.wm_warmup_iterations={args.wm_warmup}",
        f"general.eval_interval={args.eval_interval}", f"general.eval_runs={args.eval_episodes}",
        f"general.target_return={target}", f"general.logdir={args.logdir.resolve()}",
        "alg.save_interval=100", "general.torch_threads=" + ("null" if args.threads is None else str(args.threads)),
        f"general.time_limit_minutes={args.minutes}", *args.overrides,
    ]
    rc = resolve_config(compose_config(overrides), Path.cwd(), [str(Path(__file__).resolve()), *sys.argv[1:]])
    t0 = time.monotonic()
    load_before = os.getloadavg()
    code = run(rc)
    wall = time.monotonic() - t0
    run_dir = runs.find_run(rc.logdir, f"bundled_5M_cartpole_swingup_seed{args.seed}")
    records = runs.read_metrics(run_dir / runs.METRICS)
    evals = [(r["iteration"], r["time/elapsed"], r["eval/return"]) for r in records
             if "eval/return" in r and not r.get("final")]
    first_eval = evals[0][2] if evals else None
    reached = next(((it, t, ret) for it, t, ret in evals if ret >= target), None)
    best = max(evals, key=lambda e: e[2]) if evals else None
    summary = {
        "exit_code": code, "seed": args.seed, "reference_return": reference, "target_return": target,
        "first_eval_return": first_eval, "best_eval": best, "reached": reached,
        "evals": evals,  # [epoch, seconds of training, mean eval return], for benchmarks/learning_seeds.py
        "final": next((r for r in records if r.get("final")), None),
        "wall_s": wall, "overrides": overrides, "run_dir": str(run_dir),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "command": " ".join([sys.executable, *sys.argv]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    for png in make_plots(run_dir, run_dir, reference=reference):
        (args.results / f"learning_cartpole_{png.name}").write_bytes(png.read_bytes())
    (args.results / "learning_cartpole.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("summary: %s", json.dumps(summary, default=str))
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
