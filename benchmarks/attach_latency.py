"""gpuprobe attach and gpuprobe watch end to end, as a user runs them (issue 14's "Done when").

* attach: a job prints two lines and waits on a stale lock; the wall time of
  `gpuprobe attach PID` (default 2 samples 0.5 s apart), process start to exit.
* watch: `gpuprobe watch --stall 3 --on-stall kill -- <that job>`, wall time to exit 3.

    python benchmarks/attach_latency.py --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine  # noqa: E402

JOB = ROOT / "tests" / "fixtures" / "jobs" / "stuck_on_lock.py"


def gpuprobe(*args: str) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - t, proc.returncode


def attach_once(results: str) -> float:
    lock = Path(tempfile.mkdtemp()) / "stale.lock"
    with open(lock.with_suffix(".out"), "wb") as out:
        job = subprocess.Popen([sys.executable, str(JOB), str(lock)], stdout=out, stderr=subprocess.STDOUT)
    try:
        while not lock.exists():
            time.sleep(0.05)
        seconds, code = gpuprobe("attach", str(job.pid), "--results", results)
        assert code == 3 and job.poll() is None, (code, job.poll())
        return seconds
    finally:
        job.kill()
        job.wait()


def watch_once(results: str) -> float:
    lock = Path(tempfile.mkdtemp()) / "stale.lock"
    seconds, code = gpuprobe("watch", "--stall", "3", "--on-stall", "kill", "--results", results, "--",
                             sys.executable, str(JOB), str(lock))
    assert code == 3, code
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    results = tempfile.mkdtemp(prefix="attach-bench-")
    out = {"machine": machine(), "attach_s": [], "watch_stall3_kill_s": []}
    for _ in range(args.reps):  # interleaved, so both see the same load
        out["attach_s"].append(round(attach_once(results), 3))
        out["watch_stall3_kill_s"].append(round(watch_once(results), 3))
    for key in ("attach_s", "watch_stall3_kill_s"):
        out[key.replace("_s", "_median_s")] = round(statistics.median(out[key]), 3)
    out["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
