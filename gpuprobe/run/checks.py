"""Checks before launch, in the parent: a run that cannot mean anything never starts.

Everything here runs before the results folder is created or a child is started, so a
typo or an impossible request is one line and exit 2 (gpuprobe.exitcodes.USAGE), and
nothing is written: a stored ``fail`` made of a typo would condemn a healthy node.
The stage options have their own check (gpuprobe.run.options.resolve); timeouts are
checked by their option type (gpuprobe.cli.common.Seconds: finite and more than 0).

Nothing here imports torch (the layering contract): whether torch can use CUDA is read
from the fingerprint, which reads torch's ``version.py`` without importing it.
"""

from __future__ import annotations

import os

from gpuprobe.child import failpoints
from gpuprobe.exitcodes import UsageProblem
from gpuprobe.node.fingerprint import Fingerprint
from gpuprobe.run.stages import StageSpec


class CheckError(UsageProblem, ValueError):
    """A run that must not start: one line naming what was asked and where it came from."""


def failpoint_spec() -> list[failpoints.Failpoint]:
    """``$GPUPROBE_FAILPOINTS``, parsed here so a bad spec never reaches a child."""
    try:
        return failpoints.parse(os.environ.get(failpoints.ENV, ""))
    except ValueError as exc:
        raise CheckError(str(exc)) from None


def _visible(fp: Fingerprint) -> list[int]:
    return [g["index"] for g in fp.gpus if isinstance(g.get("index"), int)]


def _nvml_says(fp: Fingerprint) -> str:
    visible = _visible(fp)
    if visible:
        return f"NVML sees GPU {', '.join(map(str, visible))}"
    why = fp.nvml.get("reason") or "NVML reports no GPU"
    return f"NVML sees no GPU: {why}"


def gpus(value: str | None, fp: Fingerprint) -> list[int] | None:
    """``--gpus``: indices that exist on this node (``all``: every one NVML sees)."""
    if value is None:
        return None
    if value.strip() == "all":
        return _visible(fp) or None
    try:
        wanted = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        wanted = []
    if not wanted or any(g < 0 for g in wanted):
        raise CheckError(f"--gpus {value}: not a list of GPU indices like 0,1 or 'all'")
    missing = [g for g in wanted if g not in _visible(fp)]
    if missing:
        raise CheckError(f"--gpus {value}: no GPU {missing[0]} on this node ({_nvml_says(fp)})")
    return wanted


def device(requested: str, fp: Fingerprint, stages: list[StageSpec]) -> None:
    """A device that was asked for and cannot be used is an error, not a run of skips that passes.

    ``--device cuda`` needs a GPU that NVML sees and, for the stages that use torch, a torch
    with a CUDA build. ``--device auto`` on a node with a real GPU and a CPU-only torch would
    probe nothing of the GPU and pass: refused too, with the two ways out. (With an NVML fake
    the GPU is not real: auto then runs as before, the GPU stages skipping with the reason.)
    """
    torch_stages = [s.name for s in stages if "torch" in s.preload]
    torch = fp.torch
    version = (torch or {}).get("version")
    cpu_only = torch is not None and not torch.get("cuda")
    if requested == "cuda":
        if not _visible(fp):
            raise CheckError(f"--device cuda: no usable CUDA here ({_nvml_says(fp)}); use --device cpu or auto")
        if torch_stages and torch is None:
            raise CheckError(f"--device cuda: torch is not installed, and stage {torch_stages[0]} needs it "
                             "(pip install 'gpuprobe[probes]', with a CUDA build of torch)")
        if torch_stages and cpu_only:
            raise CheckError(f"--device cuda: torch {version} is a CPU-only build, so stage {torch_stages[0]} "
                             "cannot use the GPU: install torch's CUDA build for this driver (README, Set-up)")
    elif requested == "auto" and _visible(fp) and not fp.simulated and torch_stages and cpu_only:
        raise CheckError(f"this node has {len(_visible(fp))} GPU(s) but torch {version} is a CPU-only build, so "
                         f"stage {torch_stages[0]} cannot use them: install torch's CUDA build for this driver "
                         "(README, Set-up), or --device cpu to probe the CPU alone")
