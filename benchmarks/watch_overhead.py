"""gpuprobe watch: its CPU overhead on a running job, and how soon it detects a stall.

Claims (issue 14): overhead <= 1% of one core; detection <= stall window + 2 s.

Overhead: the watcher runs in this process (the library, as `gpuprobe watch` runs it); its
cost is this process's CPU plus its children's (py-spy looks) minus the job's own CPU, which
the job prints at exit (os.times). Divided by the wall time, as % of one core.
Detection: a job prints two lines then waits on a stale lock; the watcher's own record
(`data.watch.detection_s`: from the last output to the evidence in hand) and the wall time
from the watcher's start to the verdict callback, minus the job's start-up, are reported.

    python benchmarks/watch_overhead.py --seconds 60 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine  # noqa: E402

from gpuprobe.jobs.watch import WatchConfig, Watcher  # noqa: E402

JOBS = ROOT / "tests" / "fixtures" / "jobs"


def cpu_self_and_children() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def overhead(seconds: float, mode: str, stall: float, results: Path) -> dict:
    out = Path(tempfile.mkstemp(prefix="watch-bench-", suffix=".out")[1])
    saved = os.dup(1)
    fd = os.open(out, os.O_WRONLY | os.O_TRUNC)
    os.dup2(fd, 1)  # the job's passed-through output goes to a file, not the terminal
    try:
        before, t0 = cpu_self_and_children(), time.monotonic()
        outcome = Watcher(WatchConfig(cmd=[sys.executable, str(JOBS / "quiet_worker.py"), str(seconds), mode],
                                      results_dir=results, stall=stall)).run()
        wall, used = time.monotonic() - t0, cpu_self_and_children() - before
    finally:
        os.dup2(saved, 1)
        os.close(fd)
    last = out.read_text().strip().splitlines()[-1]
    out.unlink()
    job_cpu = float(last.split()[1])
    watcher_cpu = used - job_cpu
    return {"mode": mode, "stall_s": stall, "wall_s": round(wall, 2), "job_cpu_s": job_cpu,
            "watcher_cpu_s": round(watcher_cpu, 3), "overhead_pct_of_one_core": round(100 * watcher_cpu / wall, 3),
            "exit": outcome.exit_code}


def detection(stall: float, results: Path) -> dict:
    lock = Path(tempfile.mkdtemp()) / "stale.lock"
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    seen: dict = {}
    try:
        t0 = time.monotonic()
        Watcher(WatchConfig(cmd=[sys.executable, str(JOBS / "stuck_on_lock.py"), str(lock)], results_dir=results,
                            stall=stall, on_stall="kill"),
                say=lambda line: None, on_stall=lambda doc, path: seen.update(doc=doc, t=time.monotonic())).run()
    finally:
        os.dup2(saved, 1)
        os.close(null)
    stage = seen["doc"]["stages"][0]
    return {"stall_s": stall, "detection_s": stage["data"]["watch"]["detection_s"],
            "verdict": stage["data"]["verdict"]["kind"], "start_to_verdict_s": round(seen["t"] - t0, 2),
            "over_window_s": round(stage["data"]["watch"]["detection_s"] - stall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "watch_overhead.json"))
    args = ap.parse_args()
    results = Path(tempfile.mkdtemp(prefix="watch-bench-results-"))
    report = {"machine": machine(), "overhead": [], "detection": []}
    for _ in range(args.reps):
        for mode, stall in (("chatty", 900.0), ("quiet", 900.0), ("quiet", 30.0), ("quiet", 3.0)):
            row = overhead(args.seconds, mode, stall, results)
            report["overhead"].append(row)
            print(json.dumps(row), file=sys.stderr)
        for stall in (3.0, 10.0):
            row = detection(stall, results)
            report["detection"].append(row)
            print(json.dumps(row), file=sys.stderr)
    report["load_average_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
