"""Benchmark: the validating loader (gpuprobe.store.record.load_record) against a bare read and
json.loads of the same files.

    python benchmarks/record_load.py [--files 3000] [--repeat 3]

Why: the index runs the loader over every new or changed file (100,000 on a cold index), so
its checks must stay a small constant factor of the parse itself. The files are
matrix_scale.py's synthetic results (1-6 stages, marks, evidence for the bad ones), read from
the page cache (one warm-up pass first). CPU time of this process (time.process_time, system
time included), not wall time: the machine is shared, and other jobs' load would otherwise
decide the ratio. Prints one JSON line: microseconds per file, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.matrix_scale import generate  # noqa: E402
from gpuprobe.store.record import load_record  # noqa: E402


def bare(files: list[Path]) -> float:
    start = time.process_time()
    for f in files:
        json.loads(f.read_bytes().decode("utf-8"))
    return time.process_time() - start


def loader(files: list[Path]) -> float:
    start = time.process_time()
    for f in files:
        load_record(f)
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gpuprobe-bench-record-"))
    generate(folder, args.files)
    files = sorted(folder.rglob("*.result.json"))
    bare(files)   # warm the page cache
    b, v = [], []
    for _ in range(args.repeat):
        b.append(bare(files))
        v.append(loader(files))
    per = 1e6 / len(files)
    bare_us, load_us = statistics.median(b) * per, statistics.median(v) * per
    print(json.dumps({"files": len(files), "mean_bytes": round(sum(f.stat().st_size for f in files) / len(files)),
                      "bare_json_us_per_file": round(bare_us, 1), "load_record_us_per_file": round(load_us, 1),
                      "ratio": round(load_us / bare_us, 2), "python": sys.version.split()[0],
                      "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
