"""What N processes importing a cold dflex from one package folder at once do.

A copy of the installed dflex package (without its kernels) is put in a temporary folder; N
``python -c "import dflex"`` start together with that folder first on PYTHONPATH, as N jobs on one
shared install would. Recorded: each one's wall time, exit code, whether it printed "Rebuilding
kernels" or "Using cached kernels", how many compilers ran at once, how long ``kernels/lock``
existed, and whether a later import then finds a valid cache.

    python benchmarks/dflex_concurrent_import.py --procs 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from _common import machine

IMPORT = "import time; t = time.perf_counter(); import dflex; print(f'IMPORT_S {time.perf_counter() - t:.2f}')"


def installed_dflex() -> Path:
    out = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                          "print(u.find_spec('dflex').submodule_search_locations[0])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def compilers_in(folder: Path) -> int:
    n = 0
    for proc in psutil.process_iter(["name", "cwd"]):
        try:
            if proc.info["name"] in ("cc1plus",) and str(folder) in " ".join(proc.cmdline()):
                n += 1
        except psutil.Error:
            continue
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the temporary package copy")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dflex-concurrent-"))
    pkg = root / "dflex"
    shutil.copytree(installed_dflex(), pkg, ignore=shutil.ignore_patterns("kernels", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    lock = pkg / "kernels" / "lock"
    print(f"machine: {machine()}; {args.procs} processes importing a cold dflex from {pkg}")
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", IMPORT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(args.procs)]
    ended: dict[int, float] = {}
    lock_first = lock_last = None
    max_compilers = 0
    while len(ended) < len(procs):
        now = time.perf_counter() - start
        if lock.exists():
            lock_first = now if lock_first is None else lock_first
            lock_last = now
        max_compilers = max(max_compilers, compilers_in(pkg))
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = now
        time.sleep(0.2)
    rows = []
    for i, p in enumerate(procs):
        out = p.stdout.read()
        rows.append({"proc": i, "exit": p.returncode, "wall_s": round(ended[i], 1),
                     "rebuilt": "Rebuilding kernels" in out, "cached": "Using cached kernels" in out,
                     "tail": out.strip().splitlines()[-1][-160:] if out.strip() else ""})
    later = subprocess.run([sys.executable, "-c", IMPORT], env=env, capture_output=True, text=True)
    result = {"procs": rows, "max_concurrent_compilers": max_compilers,
              "lock_seen_s": [lock_first, lock_last], "lock_left_behind": lock.exists(),
              "later_import_cached": "Using cached kernels" in later.stdout, "later_exit": later.returncode}
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
