"""Benchmark: `gpuprobe matrix` over 100,000 result files, 1% of them hostile: cold, warm,
and after one new file, with exact counts.

    nice -n 10 python benchmarks/matrix_index_scale.py [--files 100000] [--hostile 0.01]
        [--repeat 3] [--keep DIR]

Claim (issue 10): warm <= 1 s, one new file <= 1 s, counts exact, and no hostile file stops
it. The files are matrix_scale.py's synthetic runs; every 100th (with --hostile 0.01) is
replaced by one of the hostile kinds (not JSON, truncated, a huge integer, a dict where text
belongs, a lone surrogate, NaN, 200,000-deep nesting, Latin-1 bytes, not ours, a FIFO, a
folder, a link loop, a dangling link, a link to a device). The index goes to a fresh
GPUPROBE_INDEX_DIR under the folder's parent, so "cold" is really cold.

Each run is `gpuprobe matrix --results DIR --format json` in a fresh interpreter; every
answer is checked: the stage runs it counts equal the stage runs the good files hold, files
= all entries, skipped = the hostile ones. After the warm runs, one new file is written
(and another for each repeat) and the next matrix is timed. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine  # noqa: E402
from matrix_scale import generate  # noqa: E402

HOSTILE = ("notjson", "truncated", "hugeint", "dictstatus", "surrogate", "nan", "deep", "latin1", "notours",
           "fifo", "dir", "loop", "dangling", "device")


def make_hostile(path: Path, kind: str, good: dict) -> None:
    """Replace the result file at ``path`` with a hostile entry of ``kind``."""
    path.unlink(missing_ok=True)
    doc = json.loads(json.dumps(good))
    if kind == "notjson":
        path.write_text("{not json")
    elif kind == "truncated":
        path.write_text(json.dumps(good)[:300])
    elif kind in ("hugeint", "dictstatus", "nan"):
        doc["stages"][0].update({"hugeint": {"gpu": 99999999999999999999}, "dictstatus": {"status": {"x": 1}},
                                 "nan": {"duration_s": float("nan")}}[kind])
        path.write_text(json.dumps(doc))
    elif kind == "surrogate":
        doc["fingerprint"]["hostname"] = "\ud800"
        path.write_text(json.dumps(doc))
    elif kind == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "latin1":
        path.write_bytes(json.dumps(doc, ensure_ascii=False).replace("gpuprobe", "gpupr\u00f6be").encode("latin-1"))
    elif kind == "notours":
        path.write_text("[1, 2, 3]")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "loop":
        os.symlink(path.name, path)
    elif kind == "dangling":
        os.symlink("/nonexistent/x", path)
    elif kind == "device":
        os.symlink("/dev/zero", path)


def prepare(folder: Path, n: int, hostile: float) -> dict:
    """Generate (or reuse) the folder; what a correct answer counts."""
    manifest = folder / ".bench-expected.json"   # a dot file: the index never lists it
    if manifest.exists():
        return json.loads(manifest.read_text())
    t0 = time.perf_counter()
    generate(folder, n)
    gen_s = time.perf_counter() - t0
    files = sorted(folder.rglob("*.result.json"))
    every = max(1, round(1 / hostile)) if hostile > 0 else 0
    bad = set(range(every - 1, len(files), every)) if every else set()
    stage_runs = 0
    good = None
    for i, f in enumerate(files):
        doc = json.loads(f.read_text())
        if i in bad:
            make_hostile(f, HOSTILE[(i // every) % len(HOSTILE)], good or doc)
        else:
            good = doc
            stage_runs += len(doc["stages"])
    out = {"files": len(files), "hostile": len(bad), "stage_runs": stage_runs, "generate_s": round(gen_s, 1)}
    manifest.write_text(json.dumps(out))
    return out


CPU: list[float] = []   # user + system CPU seconds of each matrix run, in order


def run_matrix(folder: Path, env: dict) -> tuple[float, dict]:
    """Wall seconds and the answer; the run's CPU seconds go to CPU (on a loaded machine the
    CPU time is the steadier figure: wall time includes waiting for a core)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", "matrix", "--results", str(folder), "--format", "json"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"gpuprobe matrix failed ({proc.returncode}): {proc.stderr[-500:]}")
    return elapsed, json.loads(proc.stdout)


def index_only(folder: Path, env: dict, full: bool = False) -> tuple[float, float]:
    """The index's share: wall and CPU seconds of refreshing it (``full``: stat-ing every
    file, as matrix does every FULL_CHECK_S), in a fresh interpreter, without the matrix's
    aggregation."""
    code = ("import json, sys, time; t = time.perf_counter(); c = time.process_time()\n"
            "from gpuprobe.store.index import ResultIndex\n"
            f"idx = ResultIndex(sys.argv[1]); st = idx.refresh(full={full}); idx.close()\n"
            "print(json.dumps([time.perf_counter() - t, time.process_time() - c, st.files]))")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"open_index failed: {proc.stderr[-500:]}")
    wall, cpu, _files = json.loads(proc.stdout)
    return wall, cpu


def check(data: dict, expect: dict) -> None:
    runs = sum(c["runs"] for r in data["rows"] for c in r["cells"].values() if c)
    got = (runs, data["sources"][0]["files"], len(data["skipped"]))
    want = (expect["stage_runs"], expect["files"], expect["hostile"])
    if got != want:
        raise SystemExit(f"counts not exact: (stage runs, files, skipped) = {got}, expected {want}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--hostile", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="generate into (or reuse) this folder")
    args = ap.parse_args()
    where = machine()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="gpuprobe-bench-index-")) / "results"
    folder.mkdir(parents=True, exist_ok=True)
    expect = prepare(folder, args.files, args.hostile)
    cache = folder.parent / f"{folder.name}-index-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env.update({"PYTHONPATH": str(ROOT), "GPUPROBE_INDEX_DIR": str(cache)})

    cold, data = run_matrix(folder, env)
    check(data, expect)
    index_file = Path(data["sources"][0]["index"])
    warm = []
    for _ in range(args.repeat):
        t, data = run_matrix(folder, env)
        check(data, expect)
        warm.append(t)
    idx_warm = [index_only(folder, env) for _ in range(args.repeat)]
    idx_full = [index_only(folder, env, full=True) for _ in range(args.repeat)]
    new, again, idx_new = [], [], []
    added: list[Path] = []   # removed at the end, so that --keep's folder matches its manifest again
    template = json.loads(next(p for p in sorted(folder.rglob("*.result.json")) if p.is_file()
                               and not p.is_symlink() and p.stat().st_size < 1 << 20).read_text())
    for k in range(args.repeat):
        doc = dict(template, run_id=f"new{k}-{time.time_ns()}")
        added.append(folder / "000" / f"{doc['run_id']}.result.json")
        added[-1].write_text(json.dumps(doc))
        expect = dict(expect, files=expect["files"] + 1, stage_runs=expect["stage_runs"] + len(doc["stages"]))
        if k == args.repeat - 1:  # the index's share of one new file, then the whole matrix after another
            idx_new.append(index_only(folder, env))
            doc = dict(template, run_id=f"new{k}b-{time.time_ns()}")
            added.append(folder / "000" / f"{doc['run_id']}.result.json")
            added[-1].write_text(json.dumps(doc))
            expect = dict(expect, files=expect["files"] + 1, stage_runs=expect["stage_runs"] + len(doc["stages"]))
        t, data = run_matrix(folder, env)
        check(data, expect)
        new.append(t)
        t, data = run_matrix(folder, env)  # the run after that: warm again
        check(data, expect)
        again.append(t)
    for path in added:
        path.unlink()
    conn = sqlite3.connect(index_file)
    t0 = time.perf_counter()
    quick_check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    qc_s = time.perf_counter() - t0
    conn.close()
    r = args.repeat
    cpu = {"cold": CPU[0], "warm": CPU[1:1 + r], "new": CPU[1 + r::2], "after": CPU[2 + r::2]}
    med = statistics.median
    print(json.dumps({
        "files": expect["files"], "hostile": expect["hostile"], "stage_runs": expect["stage_runs"],
        "generate_s": expect.get("generate_s"), "cold_s": round(cold, 2),
        "warm_median_s": round(statistics.median(warm), 3), "warm_all_s": [round(x, 3) for x in warm],
        "one_new_file_median_s": round(statistics.median(new), 3), "one_new_file_all_s": [round(x, 3) for x in new],
        "after_that_all_s": [round(x, 3) for x in again], "counts_exact": True,
        "cpu_s": {"cold": round(cpu["cold"], 2), "warm_median": round(med(cpu["warm"]), 3),
                  "one_new_file_median": round(med(cpu["new"]), 3), "after_that_median": round(med(cpu["after"]), 3)},
        "index_only_warm_s": {"wall_median": round(med(w for w, _ in idx_warm), 3),
                              "cpu_median": round(med(c for _, c in idx_warm), 3)},
        "index_only_warm_full_check_s": {"wall_median": round(med(w for w, _ in idx_full), 3),
                                         "cpu_median": round(med(c for _, c in idx_full), 3)},
        "index_only_one_new_file_s": {"wall": round(idx_new[0][0], 3), "cpu": round(idx_new[0][1], 3)},
        "index_bytes": index_file.stat().st_size, "quick_check_s": round(qc_s, 3), "quick_check": quick_check,
        "machine": where, "load_avg_end": round(os.getloadavg()[0], 2), "folder": str(folder)}))


if __name__ == "__main__":
    main()
