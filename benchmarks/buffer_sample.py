"""Claim: gpuprobe_pwm.buffer.Buffer.sample is >= 10x faster than PWM's torchrl Buffer on host storage.

Measures, in one process and on the same data sizes (dflex Ant, pwm_5M: capacity 1e6 rows,
obs 37, act 8, B=256 slices of H+1=17 steps):

  ours            gpuprobe_pwm.buffer.Buffer, host storage, prefetch 0 (and prefetch 12)
  torchrl         LazyTensorStorage(capacity) + SliceSampler(num_slices=256, traj_key="episode")
                  + ReplayBuffer(batch_size=256*17), sampled and reshaped as PWM's Buffer does
  torchrl pf12    the same with prefetch=12, PWM's setting
  raw gather      index_select of 256*17 random rows from one contiguous [capacity, 46] tensor:
                  the lower bound for any host-storage sampler

torchrl is not a dependency of this project. To include it, make a side venv that reuses
the system torch (2.13.0) instead of pulling a new one:

    python -m venv --system-site-packages benchmarks/.venv-torchrl
    benchmarks/.venv-torchrl/bin/pip install torchrl==0.14.1 tensordict
    benchmarks/.venv-torchrl/bin/python benchmarks/buffer_sample.py

(torchrl 0.14.1 accepts torch>=2.1 and resolves tensordict 0.14.3; pip keeps torch 2.13.0.)
Without torchrl the script says so and measures the rest. Results go to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere, without installing the package

from gpuprobe.node.fingerprint import cpu_model  # noqa: E402
from gpuprobe_pwm.buffer import Buffer  # noqa: E402


def time_calls(fn: Callable[[], object], warmup: int, iters: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = [t * 1e3 for t in times]
    return {
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "p90_ms": sorted(ms)[int(0.9 * (len(ms) - 1))],
        "iters": iters,
    }


def episodes(n: int, steps: int, obs_dim: int, act_dim: int, gen: torch.Generator):
    obs = torch.randn(steps + 1, n, obs_dim, generator=gen)
    act = torch.rand(steps, n, act_dim, generator=gen) * 2 - 1
    rew = torch.randn(steps, n, generator=gen)
    return obs, act, rew


def episodes_per_add(args: argparse.Namespace) -> int:
    """Ant's 128 envs per add, fewer when a small capacity cannot hold that many."""
    fits = args.capacity // (args.episode_length + 1)
    if fits < 1:
        raise SystemExit("--capacity must hold at least one episode of --episode-length steps")
    return min(args.envs, fits)


def fill_ours(buf: Buffer, args: argparse.Namespace) -> None:
    gen = torch.Generator().manual_seed(0)
    n = episodes_per_add(args)
    while len(buf) + n * (args.episode_length + 1) <= buf.capacity:
        buf.add(*episodes(n, args.episode_length, args.obs, args.act, gen))


def torchrl_buffer(args: argparse.Namespace, prefetch: int | None):
    """PWM's Buffer as upstream builds it (src/pwm/utils/buffer.py), filled like add_batch."""
    from tensordict import TensorDict
    from torchrl.data.replay_buffers import LazyTensorStorage, ReplayBuffer
    from torchrl.data.replay_buffers.samplers import SliceSampler

    rb = ReplayBuffer(
        storage=LazyTensorStorage(args.capacity, device=torch.device("cpu")),
        sampler=SliceSampler(num_slices=args.batch, end_key=None, traj_key="episode", truncated_key=None),
        pin_memory=torch.cuda.is_available(),  # PWM passes True; it needs CUDA to mean anything
        prefetch=prefetch,
        batch_size=args.batch * (args.horizon + 1),
    )
    gen = torch.Generator().manual_seed(0)
    rows, n, t = 0, episodes_per_add(args), args.episode_length
    episode = 0
    while rows + n * (t + 1) <= args.capacity:
        obs, act, rew = episodes(n, t, args.obs, args.act, gen)
        # PWM's episode layout: T+1 rows, row 0 carries NaN action and reward.
        nan = torch.full((n, 1), float("nan"))
        td = TensorDict(
            {
                "obs": obs.transpose(0, 1),
                "action": torch.cat((nan.expand(n, 1).unsqueeze(-1).expand(n, 1, args.act), act.transpose(0, 1)), 1),
                "reward": torch.cat((nan, rew.transpose(0, 1)), 1),
                "episode": (torch.arange(n, dtype=torch.int32) + episode).view(n, 1).expand(n, t + 1).clone(),
            },
            batch_size=[n, t + 1],
        )
        rb.extend(td.flatten())
        rows += n * (t + 1)
        episode += n
    return rb


def torchrl_sample(rb, horizon: int) -> Callable[[], object]:
    def sample():
        td = rb.sample().view(-1, horizon + 1).permute(1, 0)  # PWM's Buffer.sample
        return td["obs"], td["action"][1:], td["reward"][1:].unsqueeze(-1)

    return sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--capacity", type=int, default=1_000_000)
    p.add_argument("--obs", type=int, default=37)
    p.add_argument("--act", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--envs", type=int, default=128, help="episodes per add (Ant: 128 envs)")
    p.add_argument("--episode-length", type=int, default=1000)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--no-prefetch", action="store_true", help="skip the prefetch=12 variants")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the whole run (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict[str, dict] = {}
    print(f"capacity {args.capacity:.0e} rows, obs {args.obs}, act {args.act}, "
          f"B={args.batch}, H={args.horizon}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {cpu_model()}", flush=True)

    ours = Buffer(args.capacity, args.obs, args.act, args.horizon, args.batch, storage="cpu", seed=0)
    fill_ours(ours, args)
    results["ours"] = time_calls(ours.sample, args.warmup, args.iters)
    if not args.no_prefetch:
        ours.prefetch = 12
        results["ours prefetch 12"] = time_calls(ours.sample, args.warmup, args.iters)
        ours.close()

    rows = args.batch * (args.horizon + 1)
    flat = torch.randn(args.capacity, args.obs + args.act + 1)
    results["raw gather"] = time_calls(
        lambda: flat.index_select(0, torch.randint(args.capacity, (rows,))), args.warmup, args.iters
    )
    chunk = 32768 // flat.shape[1]  # below ATen's parallel grain: runs on the calling thread

    def raw_chunked() -> torch.Tensor:
        idx, out = torch.randint(args.capacity, (rows,)), torch.empty(rows, flat.shape[1])
        for b in range(0, rows, chunk):
            torch.index_select(flat, 0, idx[b : b + chunk], out=out[b : b + chunk])
        return out

    results["raw gather, chunked"] = time_calls(raw_chunked, args.warmup, args.iters)
    del flat

    try:
        import torchrl
    except ImportError:
        torchrl = None
        print("torchrl is not installed: see this script's docstring for the side venv; "
              "measuring ours and the raw gather only", flush=True)
    if torchrl is not None:
        rb = torchrl_buffer(args, prefetch=None)
        results["torchrl"] = time_calls(torchrl_sample(rb, args.horizon), args.warmup, args.iters)
        del rb
        if not args.no_prefetch:
            rb = torchrl_buffer(args, prefetch=12)
            results["torchrl prefetch 12"] = time_calls(torchrl_sample(rb, args.horizon), args.warmup, args.iters)
            del rb

    print(f"\n{'sampler':<24}{'median ms':>11}{'mean ms':>10}{'p90 ms':>9}")
    for name, r in results.items():
        print(f"{name:<24}{r['median_ms']:>11.3f}{r['mean_ms']:>10.3f}{r['p90_ms']:>9.3f}")
    ratios = {}
    for ref in ("torchrl", "torchrl prefetch 12"):
        if ref in results:
            ratios[f"{ref} / ours (median)"] = results[ref]["median_ms"] / results["ours"]["median_ms"]
            ratios[f"{ref} / ours (mean)"] = results[ref]["mean_ms"] / results["ours"]["mean_ms"]
    ratios["ours / raw gather, chunked"] = (
        results["ours"]["median_ms"] / results["raw gather, chunked"]["median_ms"]
    )
    print()
    for name, r in ratios.items():
        print(f"{name:<32}{r:>8.1f}x")

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"buffer_sample-{stamp}.json"
    record = {
        "benchmark": "buffer_sample",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "torchrl": getattr(torchrl, "__version__", None)},
        "results": results,
        "ratios": ratios,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
