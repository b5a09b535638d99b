"""Wall time of ``gpuprobe run --device cpu`` over every stage, per stage, against ``import torch``.

    python benchmarks/stages_wall.py [--runs 3] [-- extra gpuprobe run args]

Each round times, in the same run and in alternating order, one ``python -c "import torch"``
(the cost every stage child would pay without the fork server) and one full
``gpuprobe run --device cpu`` (default options: train at the 5M model size), and reads
each stage's duration from the run's result file. Prints medians and writes the raw
numbers to benchmarks/out/stages_wall-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, median_of, time_command  # noqa: E402


def one_round(extra: list[str]) -> dict:
    torch_s = time_command([sys.executable, "-c", "import torch"])
    with tempfile.TemporaryDirectory(prefix="stages-wall-") as results:
        cmd = [sys.executable, "-m", "gpuprobe", "run", "--device", "cpu", "--results", results, *extra]
        run_s = time_command(cmd, ok_codes=(0, 1, 3))
        doc = json.loads(next(Path(results).glob("*.result.json")).read_text())
    stages = {s["stage"]: {"status": s["status"], "duration_s": s["duration_s"]} for s in doc["stages"]}
    return {"import_torch_s": torch_s, "gpuprobe_run_s": run_s, "stages": stages,
            "exit_code": doc["summary"]["exit_code"], "preload": doc["config"].get("preload")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="extra `gpuprobe run` arguments (after --)")
    args = parser.parse_args()
    rounds = [one_round(args.extra) for _ in range(args.runs)]
    names = list(rounds[0]["stages"])
    summary = {
        "machine": machine(),
        "command": " ".join(["gpuprobe run --device cpu", *args.extra]),
        "runs": args.runs,
        "median_import_torch_s": round(median_of([r["import_torch_s"] for r in rounds]), 3),
        "median_gpuprobe_run_s": round(median_of([r["gpuprobe_run_s"] for r in rounds]), 3),
        "median_stage_s": {n: round(median_of([r["stages"][n]["duration_s"] or 0.0 for r in rounds]), 3)
                           for n in names},
        "statuses": {n: sorted({r["stages"][n]["status"] for r in rounds}) for n in names},
        "rounds": rounds,
    }
    out = ROOT / "benchmarks" / "out" / f"stages_wall-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=1))
    print(f"raw: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
