"""Store a kernel check as a result: one stage, ``kernels``, with provenance ``static``.

Static results go into the same results folders as probed ones, so ``gpuprobe matrix`` shows
them in a column of their own next to the probed stages. The stage's status says what a run
would meet: ``pass`` for native and JIT-only stacks (the JIT cost is in the reason), ``fail``
for a stack that cannot run (``no-image``, ``ptx-newer-than-driver``, ``runtime-newer-than-driver``).
A check for a named GPU (``--gpu``, ``--cc``) is recorded on a fingerprint of this host with
that GPU put in, and its provenance note says so.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from gpuprobe import __version__
from gpuprobe.kernels.verdict import CANNOT_RUN, JIT
from gpuprobe.store import provenance

STAGE = "kernels"
PROVENANCE = provenance.STATIC


def _fingerprint(report, fp: dict | None) -> dict:
    from gpuprobe.node import fingerprint

    base = dict(fp) if fp else fingerprint.take().to_dict()
    t = report.target
    gpu0 = (base.get("gpus") or [{}])[0] or {}
    cc = f"{t.cc[0]}.{t.cc[1]}"
    named = t.source == "named" or gpu0.get("compute_capability") != cc
    if named:
        from gpuprobe.kernels import gpus

        model = gpus.find(t.name or "")
        base["gpus"] = [{"index": 0, "name": f"NVIDIA {t.name}", "compute_capability": cc,
                         "memory_total_bytes": (model.memory_gb << 30) if model else None}]
    if t.driver and t.driver != base.get("driver_version"):
        base["driver_version"], base["cuda_driver_version"] = t.driver, t.driver_cuda
    return base


def stage_result(report) -> dict:
    from gpuprobe.store.results import StageResult, utc_now

    if report.verdict in CANNOT_RUN:
        status = "fail"
        bad = report.cannot_run
        reason = f"{report.verdict}: {bad[0].path}: {bad[0].reason}" if bad else report.verdict
    else:
        status = "pass"
        jit = report.jit
        reason = (f"jit: {len(jit)} binar{'ies' if len(jit) != 1 else 'y'} JIT-compile on first load "
                  f"({jit[0].path}: {jit[0].reason})") if report.verdict == JIT and jit else report.verdict
    data = {"contract": report.to_contract(), "jit_cache": report.cache.to_dict(),
            "torch": {"version": report.env.torch_version, "cuda": report.env.torch_cuda},
            "scanned": report.scanned, "cache_hits": report.cache_hits}
    return StageResult(stage=STAGE, status=status, reason=reason, started_at=utc_now(), duration_s=0.0,
                       data=data, provenance=PROVENANCE, device="static").to_dict()


def save(report, fp: dict | None, results: Path | None) -> Path:
    from gpuprobe import paths
    from gpuprobe.redact import redact_argv
    from gpuprobe.store.results import SCHEMA_VERSION, SUFFIX, new_run_id, summarise, utc_now, write_atomic, StageResult

    target = paths.ensure_writable(paths.resolve_results_dir(results))
    fpd = _fingerprint(report, fp)
    run_id = new_run_id(fpd.get("hostname") or socket.gethostname())
    stage = stage_result(report)
    named = report.target.source == "named"
    doc = {
        "schema": SCHEMA_VERSION, "run_id": run_id, "tool": {"name": "gpuprobe", "version": __version__},
        "started_at": stage["started_at"], "finished_at": utc_now(), "complete": True,
        "provenance": {"kind": PROVENANCE, "command": redact_argv(["gpuprobe", *sys.argv[1:]]),
                       "note": ("static check of this environment's binaries for a named GPU, not measured on one"
                                if named else "static check of this environment's binaries; nothing was run on the GPU")},
        "fingerprint": fpd,
        "config": {"device": "static", "stages": [STAGE], "cwd": os.getcwd()},
        "stages": [stage],
        "summary": summarise([StageResult.from_dict(stage)]),
    }
    return write_atomic(Path(target) / f"{run_id}{SUFFIX}", doc)
