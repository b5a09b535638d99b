"""How long the sim stage takes to fail on a stale dflex build lock (no valid kernel cache), and to
pass with the same lock beside a valid cache.

A copy of the installed dflex without kernels gets a real cold ``import dflex``, killed (SIGKILL to
its process group) once the compiler runs under ``kernels/lock``. Then ``gpuprobe run --device cpu
--only --stage sim`` runs on it ``--reps`` times (one dflex env, few steps); then the installed
package's cache is copied beside the lock and it runs again. Reported: the whole command's wall
time and the sim stage's own duration.

    python benchmarks/dflex_stale_lock.py --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from _common import ROOT, machine, median_of

STAGE = ["--device", "cpu", "--only", "--stage", "sim", "-o", "sim.dflex_envs=[\"dflex_hopper\"]", "-o",
         "sim.num_envs=2", "-o", "sim.steps=3", "-o", "sim.bundled_steps=5", "-o", "sim.bundled_num_envs=4",
         "--timeout", "60"]


def installed_dflex() -> Path:
    out = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                          "print(u.find_spec('dflex').submodule_search_locations[0])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def kill_cold_build(pkg: Path, env: dict) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import dflex"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        time.sleep(0.2)
        if (pkg / "kernels" / "lock").exists() and any(
                p.name() == "cc1plus" for p in psutil.Process(proc.pid).children(recursive=True)):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not (pkg / "kernels" / "lock").exists():
        raise SystemExit("the killed build left no lock")


def run_stage(env: dict, results: Path) -> tuple[float, float, str, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", "run", *STAGE, "--results", str(results), "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    res = next(s for s in json.loads(proc.stdout)["stages"] if s["stage"] == "sim")
    return wall, float(res.get("duration_s") or 0.0), res["status"], res["reason"] or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dflex-lock-"))
    pkg = root / "site" / "dflex"
    installed = installed_dflex()
    shutil.copytree(installed, pkg, ignore=shutil.ignore_patterns("kernels", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "site"), str(ROOT)])}
    print(f"machine: {machine()}")
    try:
        kill_cold_build(pkg, env)
        for label in ("stale lock, no cache", "stale lock beside a valid cache"):
            if label.startswith("stale lock beside"):
                for name in ("kernels.so", "adjoint.gen", "build.ninja"):
                    shutil.copy2(installed / "kernels" / name, pkg / "kernels" / name)
            runs = [run_stage(env, root / f"results-{i}") for i in range(args.reps)]
            print(f"{label}: {runs[0][2]} ({runs[0][3][:160]}...)")
            print(f"  command wall median {median_of([r[0] for r in runs]):.1f} s, "
                  f"sim stage median {median_of([r[1] for r in runs]):.1f} s, over {args.reps} runs")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
