"""Wall time of `gpuprobe info` and of `gpuprobe run --device cpu` over the foundation
stages (nvml, cuda, alloc), against one `python -c "import torch"`, in the same run.

The goal: the whole run costs at most 1.5 torch imports, so the stages must not each
pay the import again (the fork server imports torch once and forks per stage).

    python benchmarks/startup_wall.py --reps 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from _common import machine, median_of, time_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--stage", default="alloc", help="run up to this stage (default: the foundation stages)")
    args = parser.parse_args()
    py = sys.executable
    results = tempfile.mkdtemp(prefix="gpuprobe-bench-")
    run = [py, "-m", "gpuprobe", "run", "--device", "cpu", "--stage", args.stage, "--results", results]
    cases = {
        "python -c 'import torch'": [py, "-c", "import torch"],
        "python -c pass": [py, "-c", "pass"],
        "gpuprobe info": [py, "-m", "gpuprobe", "info"],
        f"gpuprobe run --device cpu --stage {args.stage}": run,
        "  same, --no-fork-server": run + ["--no-fork-server"],
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.reps):  # interleaved, so load changes hit every case alike
        for name, cmd in cases.items():
            samples[name].append(time_command(cmd))
    torch_import = median_of(samples["python -c 'import torch'"])
    print(f"machine: {machine()}; {args.reps} interleaved repetitions, medians")
    for name, values in samples.items():
        print(f"{name:<48} {median_of(values):7.3f} s   {median_of(values) / torch_import:5.2f} x torch import")


if __name__ == "__main__":
    main()
