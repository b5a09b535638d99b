"""dflex's kernel build: a cold ``import dflex`` (no kernel cache) against cached imports, side by side.

A copy of the installed dflex package without its kernels is put first on PYTHONPATH, so the
installed package and its cache are left alone. One cold import (it builds into the copy), then
``--reps`` cached imports of the same copy; each in a fresh interpreter, timed from inside it (the
``import dflex`` statement alone) and from outside (the whole process, torch import included).

    python benchmarks/dflex_kernel_build.py --reps 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median_of

IMPORT = "import time; t = time.perf_counter(); import dflex; print(f'IMPORT_S {time.perf_counter() - t:.3f}')"


def installed_dflex() -> Path:
    out = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                          "print(u.find_spec('dflex').submodule_search_locations[0])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def timed_import(env: dict) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"import dflex failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    inner = float(proc.stdout.rsplit("IMPORT_S", 1)[1].split()[0])
    said = "Rebuilding kernels" if "Rebuilding kernels" in proc.stdout else "Using cached kernels"
    return inner, wall, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="cached imports after the cold one")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dflex-build-"))
    shutil.copytree(installed_dflex(), root / "dflex", ignore=shutil.ignore_patterns("kernels", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        print(f"machine: {machine()}")
        cold = timed_import(env)
        cached = [timed_import(env) for _ in range(args.reps)]
    finally:
        shutil.rmtree(root)
    print(f"cold   ({cold[2]}): import dflex {cold[0]:.1f} s, process {cold[1]:.1f} s")
    inner, wall = median_of([c[0] for c in cached]), median_of([c[1] for c in cached])
    print(f"cached ({cached[0][2]}), median of {args.reps}: import dflex {inner:.2f} s, process {wall:.2f} s")
    print(f"cold / cached import: {cold[0] / inner:.0f}x")


if __name__ == "__main__":
    main()
