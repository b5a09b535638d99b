"""Benchmark: `gpuprobe matrix` over 100,000 synthetic result files, cold and warm.

    python benchmarks/matrix_scale.py [--files 100000] [--repeat 3] [--keep DIR]

Writes small but realistic result files (a fingerprint from the NVML fakes, 1-6 stages
with marks, evidence on the bad ones) into a temporary folder, then times the CLI
(`gpuprobe matrix --format json`, a fresh interpreter each time): cold (no index yet)
and warm (index up to date; every file is still stat-ed). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpuprobe.node import fingerprint as fpr
from gpuprobe.node.nvml import Nvml
from gpuprobe.run.stages import STAGE_NAMES
from gpuprobe.store.record import dump_record

STATUSES = {"l40s": ["pass"] * 6 + ["hang"] * 3 + ["slow"], "h200": ["pass"] * 19 + ["fail"]}


def _fp(scenario: str) -> dict:
    nv = Nvml(scenario=scenario)
    nv.init()
    d = fpr.take(nv).to_dict()
    d["simulated"] = None
    return d


def generate(folder: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    fps = {s: _fp(s) for s in STATUSES}
    drivers = {"l40s": ["575.57.08", "570.133.20"], "h200": ["570.133.20", "575.57.08"]}
    for i in range(n):
        scenario = "l40s" if i % 3 else "h200"
        fp = dict(fps[scenario], hostname=f"{scenario}-n{i % 40:02d}", driver_version=rng.choice(drivers[scenario]))
        day, sec = 1 + i % 28, i % 86400
        at = f"2026-10-{day:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.000000Z"
        stages = []
        for name in STAGE_NAMES[: rng.randint(1, 6)]:
            status = rng.choice(STATUSES[scenario]) if name == "buffer" else "pass"
            st = {"stage": name, "status": status, "gpu": 0, "device": "cuda", "reason": None, "started_at": at,
                  "duration_s": round(rng.uniform(0.2, 30), 3),
                  "marks": [{"name": f"{name}.start", "t": 0.0, "data": {}}, {"name": f"{name}.done", "t": 0.5, "data": {"n": 1}}],
                  "data": {}, "error": None, "evidence": None, "signatures": [], "provenance": "probed"}
            if status != "pass":
                st["reason"] = "no progress for 60 s"
                st["evidence"] = {"process": {"cpu_percent_total": 118.0}, "stacks": {"text": "sample (buffer.py:1)"}}
                st["signatures"] = [{"id": "buffer-host-storage", "title": "Buffer storage fell back to host memory",
                                     "explanation": "...", "remedy": "..."}]
            stages.append(st)
        doc = {"schema": 1, "run_id": f"r{i:06d}", "tool": {"name": "gpuprobe", "version": "0.1.0"},
               "started_at": at, "finished_at": at, "complete": True,
               "provenance": {"kind": "probed", "command": ["gpuprobe", "run"]}, "fingerprint": fp,
               "config": {"device": "cuda"}, "stages": stages, "summary": {"status": "pass", "exit_code": 0}}
        sub = folder / f"{i // 5000:03d}"   # like per-day or per-node subfolders
        sub.mkdir(exist_ok=True)
        (sub / f"r{i:06d}.result.json").write_text(dump_record(doc))   # checked as every writer's are


def time_cli(args: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpuprobe",
                           *args], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"gpuprobe {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (or reuse) this folder")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="gpuprobe-bench-matrix-"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not any(folder.iterdir()):
        generate(folder, args.files)
    gen_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in folder.rglob("*.result.json"))
    # the index lives outside the results folder (on local disk): a fresh one of its own here
    cache = folder.parent / f"{folder.name}-index-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "GPUPROBE_INDEX_DIR": str(cache)}
    base = ["matrix", "--results", str(folder), "--format", "json"]
    cold = time_cli(base, env)
    warm = [time_cli(base, env) for _ in range(args.repeat)]
    warm_model = [time_cli(base[:3] + ["--by", "model", "--format", "json"], env) for _ in range(args.repeat)]
    print(json.dumps({"files": args.files, "bytes": size, "generate_s": round(gen_s, 1), "cold_s": round(cold, 3),
                      "warm_median_s": round(statistics.median(warm), 3), "warm_all_s": [round(w, 3) for w in warm],
                      "warm_by_model_median_s": round(statistics.median(warm_model), 3),
                      "index_bytes": sum(f.stat().st_size for f in cache.rglob("*.sqlite")), "folder": str(folder),
                      "python": sys.version.split()[0], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
