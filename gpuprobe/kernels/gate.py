"""Is there anything for a kernel check to look at? Answered from a fingerprint and a few stats.

Preflight runs before every job and its start-up is the budget, so it imports the scanner
only when this says yes: the node has a GPU with a known compute capability, and the stack
has CUDA binaries to judge (a CUDA build of torch, dflex's built kernels, or a torch
extensions folder).
"""

from __future__ import annotations

import os
from pathlib import Path


def gpu_known(fp: dict) -> bool:
    gpu0 = (fp.get("gpus") or [{}])[0] or {}
    return isinstance(gpu0, dict) and isinstance(gpu0.get("compute_capability"), str)


def stack_has_cuda_binaries(fp: dict) -> bool:
    if (fp.get("torch") or {}).get("cuda"):
        return True
    dflex = fp.get("dflex") or {}
    if dflex.get("available") and dflex.get("path"):
        kernels = Path(dflex["path"]).parent / "kernels"
        try:
            if any(f.endswith(".so") for f in os.listdir(kernels)):
                return True
        except OSError:
            pass
    dirs = [os.environ.get("TORCH_EXTENSIONS_DIR"), os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions")]
    return any(d and os.path.isdir(d) for d in dirs)


def worth_checking(fp: dict) -> bool:
    return gpu_known(fp) and stack_has_cuda_binaries(fp)


def static_report(fp: dict, source: str = "NVML"):
    """The kernel check for this fingerprint's GPU, or None when there is nothing to check.

    Never raises for a node it cannot judge: preflight must answer.
    """
    if not worth_checking(fp):
        return None
    from gpuprobe.kernels import check

    try:
        target = check.target_from(fingerprint=fp, fingerprint_source=source)
        return check.check(target, measure_cache_use=False)
    except (check.CheckError, OSError):
        return None


def evidence(fp: dict) -> dict | None:
    """A compact static verdict for a result's evidence (joined with runtime stacks by the signatures)."""
    report = static_report(fp)
    if report is None:
        return None
    return {"verdict": report.verdict, "gpu": report.target.to_contract(),
            "jit": [{"path": b.path, "reason": b.reason, "ptx_bytes": b.jit_bytes} for b in report.jit],
            "cannot_run": [{"path": b.path, "verdict": b.verdict, "reason": b.reason} for b in report.cannot_run],
            "remedies": report.remedies, "jit_cache": report.cache.to_dict()}
