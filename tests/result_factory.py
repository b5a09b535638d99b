"""Result files for tests: real fingerprints from the NVML fakes, written with write_atomic.

``make_result(folder, "l40s", host="l40s-n1", stages={"buffer": "hang"})`` writes one run,
as ``gpuprobe run`` would, with marks, evidence for the bad statuses and the signature the
field report matched.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gpuprobe.node import fingerprint as fpr
from gpuprobe.node.nvml import Nvml
from gpuprobe.store import provenance as prov
from gpuprobe.store.results import SCHEMA_VERSION, SUFFIX, StageResult, Mark, summarise, write_atomic

HOST_STORAGE = {
    "id": "buffer-host-storage",
    "title": "Buffer storage fell back to host memory",
    "explanation": "2.5 x the buffer's bytes exceeded free GPU memory, so storage went to the host; "
                   "sampling from host storage with 12 prefetch threads is CPU-bound <and looks like a hang>.",
    "remedy": "Lower alg.buffer_size or pin storage to the GPU; or exclude this GPU model.",
}
BAD = ("fail", "crash", "hang", "slow", "hang-unkillable")
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def fingerprint(scenario: str, host: str, simulated: bool = False, torch: str = "2.13.0+cu128") -> dict:
    """A fingerprint as a node of that NVML scenario would take it (``simulated`` cleared)."""
    fp = fpr.take(_nvml(scenario)).to_dict()
    fp["hostname"] = host
    fp["torch"] = {"version": torch, "cuda": "12.8"}
    fp["dflex"] = {"available": False, "reason": "not installed"}
    if not simulated:
        fp["simulated"] = None
    return fp


def _nvml(scenario: str) -> Nvml:
    nv = Nvml(scenario=scenario)
    nv.init()
    return nv


def stage(name: str, status: str, at: datetime, duration: float = 1.5, signatures: list | None = None,
          provenance: str = "probed") -> dict:
    marks = [Mark(f"{name}.construct", 0.01), Mark(f"{name}.first_add", 0.4, {"bytes": 1 << 30})]
    evidence = None
    reason = None
    if status in BAD:
        reason = f"no progress for 60 s at {name}.first_add" if status == "hang" else f"{status} in {name}"
        evidence = {
            "stacks": {"method": "py-spy --native", "text": "Thread 1 (active): <MainThread>\n    sample (gpuprobe_pwm/buffer.py:210)"},
            "process": {"window_s": 0.25, "cpu_percent_total": 118.0,
                        "processes": [{"pid": 4242, "ppid": 1, "cmdline": "python -m gpuprobe.child.stage buffer",
                                       "state": "R", "wchan": "0", "cpu_percent": 118.0, "num_threads": 14,
                                       "rss_bytes": 9 << 30}],
                        "threads": [{"tid": 4243, "name": "prefetch-0", "state": "R", "wchan": "0", "cpu_percent": 40.0}],
                        "threads_total": 14},
            "gpu": {"available": True, "gpus": [{"index": 0, "utilization_gpu_pct": 0, "memory_used_bytes": 600 << 20,
                                                  "memory_free_bytes": 40 << 30, "temperature_c": 34}]},
            "log_tail": "",
        }
    return StageResult(stage=name, status=status, device="cuda", gpu=0, reason=reason,
                       started_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), duration_s=duration, marks=marks,
                       evidence=evidence, signatures=list(signatures or []), provenance=provenance).to_dict()


def make_result(folder: Path, scenario: str, host: str, stages: dict[str, str], at: datetime | None = None,
                provenance: str = "probed", complete: bool = True, simulated: bool = False,
                run_id: str | None = None, durations: dict[str, float] | None = None,
                torch: str = "2.13.0+cu128") -> Path:
    at = at or T0
    tag = hashlib.sha256(f"{scenario}{host}{at}{sorted(stages.items())}".encode()).hexdigest()[:6]
    run_id = run_id or f"{at.strftime('%Y%m%dT%H%M%SZ')}-{host}-{tag}"
    docs = []
    for i, (name, status) in enumerate(stages.items()):
        sigs = [HOST_STORAGE] if (name == "buffer" and status in BAD and scenario in ("l40s", "lost")) else []
        docs.append(stage(name, status, at + timedelta(seconds=10 * i), (durations or {}).get(name, 1.5 + i),
                          sigs, provenance))
    doc = {
        "schema": SCHEMA_VERSION, "run_id": run_id, "tool": {"name": "gpuprobe", "version": "0.1.0"},
        "started_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "finished_at": (at + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if complete else None,
        "complete": complete,
        "provenance": {"kind": provenance, "command": ["gpuprobe", "run"], "source": "tests", "note": None},
        "fingerprint": fingerprint(scenario, host, simulated, torch),
        "config": {"device": "cuda", "stages": list(stages)},
        "stages": docs,
        "summary": summarise([StageResult.from_dict(d) for d in docs]),
    }
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomic(folder / f"{run_id}{SUFFIX}", doc)


def field_report(folder: Path) -> list[Path]:
    """The L40S field report (3 nodes, buffer hangs at the first use) and the H200 passing."""
    paths = []
    for n in range(3):
        paths.append(make_result(folder, "l40s", f"l40s-n{n + 1}", {"cuda": "pass", "buffer": "hang"},
                                 at=T0 + timedelta(hours=n), provenance=prov.REPORTED))
    paths.append(make_result(folder, "h200", "h200-n1", {"cuda": "pass", "buffer": "pass", "train": "pass"},
                             at=T0 + timedelta(hours=4), provenance=prov.REPORTED))
    return paths


def write_fixtures(root: Path) -> None:
    """Regenerate tests/fixtures/: python tests/result_factory.py"""
    import json

    field_report(root / "field")
    for scenario, host in (("l40s", "l40s-n9"), ("h200", "h200-n7")):
        (root / f"{scenario}-node.fingerprint.json").write_text(json.dumps(fingerprint(scenario, host), indent=1) + "\n")


if __name__ == "__main__":
    write_fixtures(Path(__file__).resolve().parent / "fixtures")
