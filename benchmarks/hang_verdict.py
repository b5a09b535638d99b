"""Hang-verdict latency: from a stage's timeout to its verdict in the result file on disk.

A failpoint hangs the alloc stage; this script polls the run's result file and notes
when the stage first appears there with status ``hang``. The latency is that moment
minus the timeout's moment (recorded by the runner as ``timed_out_at_unix``).

    python benchmarks/hang_verdict.py --reps 5
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

from _common import ROOT, machine


def one(action: str, timeout: float, env_extra: dict) -> dict:
    with tempfile.TemporaryDirectory() as results:
        env = {**os.environ, "GPUPROBE_FAILPOINTS": f"alloc.alloc@64MiB={action}", "PYTHONPATH": str(ROOT), **env_extra}
        cmd = [sys.executable, "-m", "gpuprobe", "run", "--device", "cpu", "--only", "--stage", "alloc",
               "--timeout", str(timeout), "--results", results]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        seen_at = None
        while proc.poll() is None or seen_at is None:
            for path in Path(results).glob("*.result.json"):
                try:
                    doc = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # never happens with atomic writes; kept for honesty of the loop
                if doc["stages"] and doc["stages"][0]["status"] in ("hang", "slow"):
                    seen_at = time.time()
                    written_at = path.stat().st_mtime  # when the verdict reached the disk
                    stage = doc["stages"][0]
            if proc.poll() is not None and seen_at is None:
                raise SystemExit("run ended without a hang verdict")
            time.sleep(0.002)
        proc.wait()
        ev = stage["evidence"]
        return {"latency_s": written_at - stage["data"]["timed_out_at_unix"],
                "seen_by_poller_s": seen_at - stage["data"]["timed_out_at_unix"], "evidence_and_kill_s": ev["verdict_latency_s"],
                "stacks_method": ev["stacks"]["method"], **{f"{k}_s": v for k, v in ev["timings_s"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for label, action, extra in (("busy loop, py-spy", "hang", {}), ("blocking sleep, py-spy", "sleep", {}),
                                 ("busy loop, no py-spy (faulthandler)", "hang", {"GPUPROBE_PYSPY": "none"})):
        rows = [one(action, args.timeout, extra) for _ in range(args.reps)]
        lat = [r["latency_s"] for r in rows]
        seen = statistics.median(r["seen_by_poller_s"] for r in rows)
        print(f"{label:<38} on disk after median {statistics.median(lat):.3f} s, max {max(lat):.3f} s; "
              f"seen by this poller after {seen:.3f} s  "
              f"(stacks {statistics.median(r['stacks_s'] for r in rows):.3f} s, "
              f"process snapshot {statistics.median(r['process_s'] for r in rows):.3f} s, "
              f"method {rows[0]['stacks_method']}, n={len(rows)})")


if __name__ == "__main__":
    main()
