"""Benchmark: the kernel check over a real CUDA build of torch, cold and cached; the listing against cuobjdump.

    python benchmarks/kernels_scan.py --venv VENV [--reps 5] [--gpu L40S --driver 575.57.08]

VENV is a virtual environment with a CUDA build of torch from the registry (e.g.
``python3 -m venv VENV && VENV/bin/pip install torch==2.14.1``: torch plus its nvidia-* wheels).
The check runs in VENV's own interpreter, with this checkout on PYTHONPATH (the scanner needs
nothing but the standard library), so it discovers VENV's stack as ``gpuprobe kernels`` would:

* cold: a fresh scan cache (every library read; the files themselves are in the page cache,
  as on a node that has run anything from this environment);
* cached: the same check again with the cache a cold run left (stats only).

Each is a fresh process; the time is the check itself (discovery, scan, verdicts), and the
process wall time is reported beside it. Then every shared library under VENV's torch/ and
nvidia/ is listed by the reader and by ``cuobjdump --list-elf --list-ptx`` (from this
interpreter's nvidia-cuda-cuobjdump wheel, or --cuobjdump), and the two listings compared entry
by entry. Raw numbers go to benchmarks/out/kernels_scan.json.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuprobe.kernels import discover, fatbin  # noqa: E402

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from gpuprobe.kernels import check
t1 = time.perf_counter()
report = check.check(check.target_from(gpu=sys.argv[1], driver=sys.argv[2] or None), measure_cache_use=False)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "check_s": t2 - t1, "scanned": report.scanned, "cache_hits": report.cache_hits,
                  "binaries": len(report.binaries), "verdict": report.verdict,
                  "in_stack": sum(1 for b in report.binaries if b.candidate.in_stack),
                  "contract": report.to_contract()}))
"""


def run_check(python: str, cache: Path, gpu: str, driver: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUPROBE_KERNELS_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run([python, "-c", PROBE, gpu, driver], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"check failed: {proc.stderr[-800:]}")
    out = json.loads(proc.stdout)
    out["wall_s"] = wall
    return out


def cuobjdump_path(given: str | None) -> str:
    if given:
        return given
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    for loc in (spec.submodule_search_locations if spec else None) or []:
        p = Path(loc) / "cu13" / "bin" / "cuobjdump"
        if p.is_file():
            return str(p)
    raise SystemExit("no cuobjdump: pip install nvidia-cuda-cuobjdump (the test extra has it) or give --cuobjdump")


def cuobjdump_listing(tool: str, path: str) -> dict[str, list[str]]:
    proc = subprocess.run([tool, "--list-elf", "--list-ptx", path], capture_output=True, text=True)
    out: dict[str, list[str]] = {"sass": [], "ptx": []}
    for line in proc.stdout.splitlines():
        kind, _, rest = line.partition(" file")
        if kind in ("ELF", "PTX") and ":" in rest:
            out["sass" if kind == "ELF" else "ptx"].append(rest.split(":", 1)[1].strip().rsplit(".", 2)[-2])
    return out


def ours(path: str) -> dict[str, list[str]]:
    listing = fatbin.read(path)
    # cuobjdump names PTX sm_XY too, and prints a family-portable sm_XYf without its f
    return {k: [f"sm_{i.arch}{i.variant if i.variant == 'a' else ''}" for i in listing.images if i.kind == k]
            for k in ("sass", "ptx")}


def compare(site: Path, tool: str) -> dict:
    libs = discover.walk_libs(site / "torch") + discover.walk_libs(site / "nvidia")
    rows, agree, entries, with_code = [], 0, 0, 0
    for lib in libs:
        try:
            mine = ours(lib)
        except fatbin.NotElf:
            continue
        theirs = cuobjdump_listing(tool, lib)
        n = len(theirs["sass"]) + len(theirs["ptx"])
        same = mine == theirs
        agree += same
        entries += n
        with_code += n > 0
        rows.append({"path": os.path.relpath(lib, site), "entries": n, "sass": len(theirs["sass"]),
                     "ptx": len(theirs["ptx"]), "agree": same,
                     **({} if same else {"ours": mine, "cuobjdump": theirs})})
    return {"libraries": len(rows), "with_device_code": with_code, "entries": entries, "agree": agree, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", required=True, type=Path, help="virtual environment with a CUDA build of torch")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gpu", default="L40S")
    ap.add_argument("--driver", default="575.57.08")
    ap.add_argument("--cuobjdump", default=None)
    args = ap.parse_args()
    python = str(args.venv / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    load = os.getloadavg()[0]
    cold, cached = [], []
    with tempfile.TemporaryDirectory(prefix="gpuprobe-kbench-") as tmp:
        for i in range(args.reps):   # interleaved: each cold run leaves the cache the next cached run reads
            cache = Path(tmp) / f"scan{i}.json"
            cold.append(run_check(python, cache, args.gpu, args.driver))
            cached.append(run_check(python, cache, args.gpu, args.driver))
        cache_bytes = (Path(tmp) / "scan0.json").stat().st_size
    agreement = compare(site, cuobjdump_path(args.cuobjdump))
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    summary = {
        "venv": str(args.venv), "site": str(site), "load_at_start": round(load, 2), "reps": args.reps,
        "target": f"{args.gpu} driver {args.driver}",
        "cold": {"check_s": med(cold, "check_s"), "max_s": max(r["check_s"] for r in cold), "wall_s": med(cold, "wall_s"),
                 "files_read": cold[0]["scanned"]},
        "cached": {"check_s": med(cached, "check_s"), "max_s": max(r["check_s"] for r in cached),
                   "wall_s": med(cached, "wall_s"), "files_read": cached[0]["scanned"], "cache_hits": cached[0]["cache_hits"]},
        "import_s": med(cold, "import_s"), "scan_cache_bytes": cache_bytes,
        "binaries": cold[0]["binaries"], "in_stack": cold[0]["in_stack"], "verdict": cold[0]["verdict"],
        "remedies": cold[0]["contract"]["remedies"],
        "cuobjdump": {k: agreement[k] for k in ("libraries", "with_device_code", "entries", "agree")},
        "disagree": [r for r in agreement["rows"] if not r["agree"]],
    }
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels_scan.json").write_text(json.dumps({**summary, "runs": {"cold": cold, "cached": cached},
                                                       "rows": agreement["rows"]}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
