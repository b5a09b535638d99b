"""Benchmark: `gpuprobe preflight` on the cached-evidence path vs `python -c pass`, same run.

    python benchmarks/preflight_latency.py [--repeat 15] [--results DIR]

Both commands run through the same launcher (the `gpuprobe` console script and `python`,
found on PATH, pyenv shims included), alternating, so machine noise hits both alike.
The evidence folder is the test fixtures' field report copied to a temporary folder
(unless --results), its index is warmed first, and the node is an L40S through the NVML
fake (GPUPROBE_FAKE_NVML=l40s): the answer is "known-incompatible", exit 4.
Bytecode: this environment sets PYTHONDONTWRITEBYTECODE=1, so each run would recompile
gpuprobe's modules; like an installed package, the benchmark keeps bytecode (in a
temporary PYTHONPYCACHEPREFIX) and reports the no-bytecode figure too.
Prints one JSON line: medians in seconds and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "field"


def _time(cmd: list[str], env: dict, expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect}: {proc.stderr[-400:]}")
    return elapsed


def measure(results: Path, repeat: int, bytecode: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env["GPUPROBE_FAKE_NVML"] = "l40s"
    prefix = None
    if bytecode:
        prefix = tempfile.mkdtemp(prefix="gpuprobe-pyc-")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = prefix
    gpuprobe = shutil.which("gpuprobe") or "gpuprobe"
    python = shutil.which("python") or "python"
    pf_cmd = [gpuprobe, "preflight", "--results", str(results)]
    for _ in range(2):  # warm the index, the page cache and the bytecode
        _time(pf_cmd, env, 4)
        _time([python, "-c", "pass"], env, 0)
    pf, base = [], []
    for _ in range(repeat):
        base.append(_time([python, "-c", "pass"], env, 0))
        pf.append(_time(pf_cmd, env, 4))
    if prefix:
        shutil.rmtree(prefix, ignore_errors=True)
    pf_med, base_med = statistics.median(pf), statistics.median(base)
    return {"preflight_median_s": round(pf_med, 4), "python_pass_median_s": round(base_med, 4),
            "ratio": round(pf_med / base_med, 2), "preflight_all_s": [round(x, 3) for x in pf],
            "python_pass_all_s": [round(x, 3) for x in base]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args()
    tmp = None
    if args.results is None:
        tmp = Path(tempfile.mkdtemp(prefix="gpuprobe-bench-pf-"))
        shutil.copytree(FIXTURES, tmp / "reports")
        args.results = tmp / "reports"
    out = {"command": f"gpuprobe preflight --results {args.results} (GPUPROBE_FAKE_NVML=l40s)",
           "with_bytecode": measure(args.results, args.repeat, True),
           "without_bytecode": measure(args.results, args.repeat, False), "cpus": os.cpu_count()}
    print(json.dumps(out))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
