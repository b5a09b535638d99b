#!/usr/bin/env python
"""Claim: carrying a full replay buffer in latest_checkpoint.pt (general.save_buffer=true)
keeps a SIGTERM save well inside SLURM's default KillWait of 30 s, at PWM's largest default size.

Fills gpuprobe_pwm.buffer.Buffer at dflex Ant's sizes (1e6 rows, obs 37, act 8) and times what the
trainer does on SIGTERM: state_dict() of the buffer plus an atomic torch.save (temporary file,
fsync, rename), against the same save without the buffer (a pwm_5M agent's state).

    python benchmarks/checkpoint_buffer.py [--capacity 1000000] [--dir /path/on/the/run/filesystem]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpuprobe.node.fingerprint import cpu_model  # noqa: E402
from gpuprobe_pwm.agent import PWMAgent  # noqa: E402
from gpuprobe_pwm.buffer import Buffer  # noqa: E402
from gpuprobe_pwm.checkpoint import atomic_torch_save  # noqa: E402
from gpuprobe_pwm.train import agent_config, compose_config  # noqa: E402


def timed_save(state: dict, path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    atomic_torch_save(state, path)
    return time.perf_counter() - t0, path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capacity", type=int, default=1_000_000)
    ap.add_argument("--obs", type=int, default=37)
    ap.add_argument("--act", type=int, default=8)
    ap.add_argument("--episode-length", type=int, default=1000)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()
    agent = PWMAgent(args.obs, args.act, agent_config(compose_config(["alg=bundled_5M"]).alg), "cpu")
    buf = Buffer(args.capacity, args.obs, args.act, storage="cpu", seed=0)
    gen = torch.Generator().manual_seed(0)
    t, n = args.episode_length, 128
    while len(buf) + n * (t + 1) <= args.capacity:
        buf.add(torch.randn(t + 1, n, args.obs, generator=gen), torch.rand(t, n, args.act, generator=gen),
                torch.randn(t, n, generator=gen))
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}; buffer {len(buf):,} rows "
          f"of obs {args.obs} / act {args.act}")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "latest_checkpoint.pt"
        without, size_without = timed_save(agent.state_dict(), path)
        t0 = time.perf_counter()
        state = {**agent.state_dict(), "buffer": buf.state_dict()}
        snapshot = time.perf_counter() - t0
        with_buf, size_with = timed_save(state, path)
    print(f"without the buffer: {without:.2f} s, {size_without / 1e6:.1f} MB")
    print(f"with the buffer:    {snapshot + with_buf:.2f} s ({snapshot:.2f} s state_dict + {with_buf:.2f} s "
          f"atomic save), {size_with / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
