#!/usr/bin/env python
"""Claim: one pwm_5M training epoch's updates on this CPU take ~1.7x less time with two torch
threads than with one (idle machine), which is what moved the learning benchmark well inside
its 15-minute budget. Both settings run in one process on the same agent and batch.

    python benchmarks/update_threads.py [--threads 1 2] [--repeat 5]

Cart-pole sizes (obs 5, act 1), batch 256, H=16. An epoch is wm_iterations world-model updates
plus one actor update and the critic's updates on the imagined rollout.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpuprobe.node.fingerprint import cpu_model  # noqa: E402
from gpuprobe_pwm.agent import PWMAgent  # noqa: E402
from gpuprobe_pwm.train import agent_config, compose_config  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--act", type=int, default=1)
    args = ap.parse_args()
    cfg = agent_config(compose_config(["alg=bundled_5M", "env=cartpole_swingup"]).alg)
    agent = PWMAgent(args.obs, args.act, cfg, "cpu")
    gen = torch.Generator().manual_seed(0)
    h, b = cfg.horizon, cfg.wm_batch_size
    obs = torch.randn(h + 1, b, args.obs, generator=gen)
    act = torch.rand(h, b, args.act, generator=gen) * 2 - 1
    rew = torch.randn(h, b, 1, generator=gen)
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    print(f"{'threads':>7} {'wm update s':>12} {'x' + str(cfg.wm_iterations):>6} {'actor+critic s':>15} {'epoch s':>8}")
    epochs = {}
    for n in args.threads:
        torch.set_num_threads(n)
        agent.update_world_model(obs, act, rew)  # warm-up: allocator, OpenMP team
        wm, ac = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            agent.update_world_model(obs, act, rew)
            wm.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, imagination = agent.update_actor(obs[0])
            agent.update_critic(imagination)
            ac.append(time.perf_counter() - t0)
        w, a = statistics.median(wm), statistics.median(ac)
        epochs[n] = cfg.wm_iterations * w + a
        print(f"{n:>7} {w:>12.3f} {cfg.wm_iterations * w:>6.2f} {a:>15.3f} {epochs[n]:>8.2f}")
    if len(epochs) > 1:
        lo, hi = min(epochs), max(epochs)
        print(f"epoch updates, {lo} thread(s) / {hi} thread(s): {epochs[lo] / epochs[hi]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
