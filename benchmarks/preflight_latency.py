"""Benchmark: `gpuprobe preflight` on the cached-evidence path vs `python -c pass`, same run.

    python benchmarks/preflight_latency.py [--repeat 15] [--results DIR]

Goal: preflight's start-up and answer <= 3 x `python -c pass`. Three commands alternate, so
machine noise hits them alike: `python -c pass`, the `gpuprobe` console script and
`python -m gpuprobe preflight` (the interpreter of the `gpuprobe` script, found on PATH).
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
    python = _script_python(gpuprobe)
    pf_cmd = [gpuprobe, "preflight", "--results", str(results)]
    module_cmd = [python, "-m", "gpuprobe", "preflight", "--results", str(results)]
    for _ in range(2):  # warm the index, the page cache and the bytecode
        _time(pf_cmd, env, 4)
        _time(module_cmd, env, 4)
        _time([python, "-c", "pass"], env, 0)
    pf, mod, base = [], [], []
    for _ in range(repeat):
        base.append(_time([python, "-c", "pass"], env, 0))
        pf.append(_time(pf_cmd, env, 4))
        mod.append(_time(module_cmd, env, 4))
    imports = _slowest_imports(module_cmd, env)
    if prefix:
        shutil.rmtree(prefix, ignore_errors=True)
    pf_med, mod_med, base_med = statistics.median(pf), statistics.median(mod), statistics.median(base)
    return {"preflight_median_s": round(pf_med, 4), "python_m_gpuprobe_median_s": round(mod_med, 4),
            "python_pass_median_s": round(base_med, 4), "ratio": round(pf_med / base_med, 2),
            "ratio_python_m": round(mod_med / base_med, 2), "preflight_all_s": [round(x, 3) for x in pf],
            "python_pass_all_s": [round(x, 3) for x in base], "slowest_imports_ms": imports}


def _script_python(script: str) -> str:
    """The interpreter a console script runs with (its #! line), so both sides start the same Python."""
    try:
        with open(script, encoding="utf-8") as fh:
            first = fh.readline()
        if first.startswith("#!") and os.path.exists(first[2:].strip().split()[0]):
            return first[2:].strip().split()[0]
    except OSError:
        pass
    return shutil.which("python") or "python"


def _slowest_imports(cmd: list[str], env: dict, top: int = 12) -> dict[str, float]:
    """What preflight still imports, cumulative ms from ``python -X importtime`` (top-level modules)."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, env=env)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("   "):
            rows.append((parts[2].strip(), int(parts[1]) / 1000))
    return dict(sorted(rows, key=lambda r: -r[1])[:top])


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
