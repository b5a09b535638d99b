"""Write the L40S field report (and the H200 counterpart) as gpuprobe result files.

    python scripts/record_field_report.py [--out reports/]

Nothing here was probed by gpuprobe: the files record what users reported, with
``provenance.kind = "reported"`` and every stage's provenance ``reported``. Only reported
facts are filled in; everything else (durations, marks, stacks, dates, software versions
other than driver/CUDA) is null or empty, never made up.

One file per L40S node: the matrix counts runs, and "hangs on every node tried" is three
runs on three nodes (hang 3/3), not one. The nodes' real hostnames were not reported, so
they are recorded as placeholders ``l40s-node01..03`` and the note says so. The H200 side
was reported as "the same code runs": one run, hostname unknown (``h200-node01``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuprobe import __version__, signatures  # noqa: E402
from gpuprobe.store import provenance  # noqa: E402
from gpuprobe.store.results import SCHEMA_VERSION, StageResult, summarise, write_atomic  # noqa: E402

NOTE = ("field report, not probed by gpuprobe: PWM training on {gpu} nodes ({detail}). Reported by users; "
        "hostnames are placeholders (not reported); no durations, marks, stacks or dates were reported.")
L40S_GPU = {"index": 0, "name": "NVIDIA L40S", "compute_capability": "8.9", "memory_total_bytes": 46068 * 2**20}
# The architecture is a fact of the model (every H200 is Hopper, compute capability 9.0, per
# NVIDIA's specification), not something read from the reported nodes; memory is left out
# because NVML's figure differs from the marketing one and none was reported.
H200_GPU = {"index": 0, "name": "NVIDIA H200", "compute_capability": "9.0", "memory_total_bytes": None,
            "source": "compute capability from NVIDIA's specification of the model, not read from the node"}


def fingerprint(hostname: str, gpu: dict, driver: str | None, cuda: str | None) -> dict:
    return {"hostname": hostname, "os": None, "kernel": None, "python": None, "cpu_model": None, "cpu_count": None,
            "ram_bytes": None, "nvml": {"available": None, "reason": "reported, not probed"},
            "driver_version": driver, "cuda_driver_version": cuda, "gpus": [gpu], "torch": None,
            "dflex": {"available": None, "reason": "not reported"}, "simulated": None}


def reported(stage: str, status: str, reason: str, **extra: object) -> StageResult:
    return StageResult(stage=stage, status=status, device="cuda", gpu=0, reason=reason, provenance=provenance.REPORTED,
                       **extra)


def l40s_stages() -> list[StageResult]:
    before = [reported(s, "pass", "reported: training got past this point (the world model was built)")
              for s in ("nvml", "cuda", "alloc", "sim")]
    buffer = reported(
        "buffer", "hang",
        "reported: training stalls right after the world model is built, inside the replay Buffer's first use; "
        "118% CPU, no output (on every node tried)",
        data={"reported": {"where": "Buffer first use, after the world model was built", "cpu_percent": 118,
                           "output": "none"}},
        evidence={"process": {"cpu_percent_total": 118.0, "reported": True,
                              "note": "from top/htop as reported, not measured by gpuprobe"},
                  "stacks": {"method": None, "text": "", "note": "no stacks were taken"}})
    train = reported("train", "skip", "not reached: training stalled at the Buffer (reported)")
    return before + [buffer, train]


def h200_stages() -> list[StageResult]:
    return [reported("buffer", "pass", "reported: the same code runs on H200 (past the Buffer's first use)"),
            reported("train", "pass", "reported: the same code trains on H200")]


def document(run_id: str, fp: dict, stages: list[StageResult], note: str) -> dict:
    for s in stages:
        s.signatures = signatures.match(s, fp)
    return {
        "schema": SCHEMA_VERSION, "run_id": run_id, "tool": {"name": "gpuprobe", "version": __version__},
        "started_at": None, "finished_at": None, "complete": True,
        "provenance": {"kind": provenance.REPORTED, "command": None, "source": "field report (users, SLURM cluster)",
                       "note": note, "recorded_by": "scripts/record_field_report.py"},
        "fingerprint": fp,
        "config": {"device": "cuda", "device_reason": "reported", "gpus": [0], "stages": [s.stage for s in stages],
                   "options": {}, "environment": {}},
        "stages": [s.to_dict() for s in stages],
        "summary": summarise(stages),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    l40s_note = NOTE.format(gpu="NVIDIA L40S", detail="driver 575.57.08, CUDA 12.9; the Buffer stage hangs")
    for i in (1, 2, 3):
        host = f"l40s-node{i:02d}"
        doc = document(f"field-report-{host}", fingerprint(host, L40S_GPU, "575.57.08", "12.9"),
                       l40s_stages(), l40s_note)
        print(write_atomic(args.out / f"field-report-{host}.result.json", doc))
    h200_note = NOTE.format(gpu="NVIDIA H200", detail="driver and CUDA not reported; compute capability 9.0 from the model's specification; the same code runs")
    doc = document("field-report-h200-node01", fingerprint("h200-node01", H200_GPU, None, None),
                   h200_stages(), h200_note)
    print(write_atomic(args.out / "field-report-h200.result.json", doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
