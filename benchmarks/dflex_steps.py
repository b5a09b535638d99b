"""Steps per second of each dflex env through the trainer's adapter, per num_envs, on one torch thread.

Each env is built as the trainer builds it (its config's upstream arguments, the collection path:
no_grad, plain tensors), reset, stepped ``--warmup`` times, then ``--steps`` timed steps with
uniform random actions in [-1, 1].

    python benchmarks/dflex_steps.py --num-envs 16 64 --steps 30   # and each env's upstream num_envs
"""

from __future__ import annotations

import argparse
import time

from _common import machine


def main() -> None:
    import torch

    from gpuprobe_pwm.envs import DFLEX_ENVS, make_env
    from gpuprobe_pwm.envs.dflex_adapter import config_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="*", default=list(DFLEX_ENVS))
    parser.add_argument("--num-envs", nargs="*", type=int, default=[16, 64])
    parser.add_argument("--no-upstream-num-envs", action="store_true",
                        help="leave out each env's own num_envs (its config's, upstream's)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; one torch thread; {args.steps} timed steps after {args.warmup}")
    print(f"{'env':22} {'num_envs':>8} {'construct s':>11} {'ms/step':>8} {'steps/s':>8} {'env-steps/s':>11}")
    for name in args.envs:
        counts = list(args.num_envs)
        if not args.no_upstream_num_envs and DFLEX_ENVS[name].num_envs not in counts:
            counts.append(DFLEX_ENVS[name].num_envs)
        for n in counts:
            t = time.perf_counter()
            env = make_env(name, n, "cpu", seed=0, stochastic_init=True, options=config_options(name))
            construct = time.perf_counter() - t
            env.reset()
            for _ in range(args.warmup):
                env.step(torch.rand(n, env.num_acts) * 2 - 1)
            t = time.perf_counter()
            for _ in range(args.steps):
                env.step(torch.rand(n, env.num_acts) * 2 - 1)
            per_step = (time.perf_counter() - t) / args.steps
            print(f"{name:22} {n:8d} {construct:11.2f} {per_step * 1e3:8.1f} {1 / per_step:8.1f} {n / per_step:11.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
