"""What a driver supports, and what a toolkit produces: the version tables a verdict needs.

* A driver branch (the first number of ``575.57.08``) supports CUDA up to one version; NVML
  reports it too (``nvmlSystemGetCudaDriverVersion``), and that answer wins when we have it.
* CUDA 11 and later run on an older driver of the same major family ("minor version
  compatibility"): 11.x needs a driver >= 450, 12.x >= 525, 13.x >= 580. A runtime of a newer
  major than the driver's CUDA fails at CUDA initialisation.
* PTX carries its ISA version (``.version 8.8``); a driver compiles PTX only up to the ISA of
  its own CUDA version ("the provided PTX was compiled with an unsupported toolchain").

The tables are NVIDIA's release-note tables as of CUDA 13.1; for later versions the
pattern is extended and the result says so (``known=False``).
"""

from __future__ import annotations

import re

# driver branch -> highest CUDA version it supports (Linux)
DRIVER_BRANCH_CUDA: dict[int, str] = {
    450: "11.0", 455: "11.1", 460: "11.2", 465: "11.3", 470: "11.4", 495: "11.5", 510: "11.6",
    515: "11.7", 520: "11.8", 525: "12.0", 530: "12.1", 535: "12.2", 545: "12.3", 550: "12.4",
    555: "12.5", 560: "12.6", 565: "12.7", 570: "12.8", 575: "12.9", 580: "13.0", 590: "13.1",
}
# CUDA major -> lowest driver branch it runs on (minor version compatibility)
MIN_DRIVER_FOR_MAJOR: dict[int, int] = {11: 450, 12: 525, 13: 580}
# CUDA toolkit version -> the PTX ISA version its compiler writes
CUDA_PTX_ISA: dict[str, str] = {
    "9.0": "6.0", "9.1": "6.1", "9.2": "6.2", "10.0": "6.3", "10.1": "6.4", "10.2": "6.5",
    "11.0": "7.0", "11.1": "7.1", "11.2": "7.2", "11.3": "7.3", "11.4": "7.4", "11.5": "7.5", "11.6": "7.6",
    "11.7": "7.7", "11.8": "7.8", "12.0": "8.0", "12.1": "8.1", "12.2": "8.2", "12.3": "8.3", "12.4": "8.4",
    "12.5": "8.5", "12.6": "8.5", "12.7": "8.6", "12.8": "8.7", "12.9": "8.8", "13.0": "9.0", "13.1": "9.1",
}
# torch's CUDA wheel variants (pip index suffixes), oldest first
TORCH_CUDA_VARIANTS: tuple[str, ...] = ("11.8", "12.1", "12.4", "12.6", "12.8", "12.9", "13.0")


def vtuple(text: str | None) -> tuple[int, ...] | None:
    """ "12.9" -> (12, 9); "575.57.08" -> (575, 57, 8); None for anything else."""
    if not text:
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", str(text))
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def major_minor(text: str | None) -> str | None:
    t = vtuple(text)
    if not t:
        return None
    return f"{t[0]}.{t[1] if len(t) > 1 else 0}"


def driver_cuda(driver: str | None) -> tuple[str | None, bool]:
    """The highest CUDA version a driver supports, and whether it came from the table (not extrapolated)."""
    t = vtuple(driver)
    if not t:
        return None, False
    branch = t[0]
    if branch in DRIVER_BRANCH_CUDA:
        return DRIVER_BRANCH_CUDA[branch], True
    older = [b for b in DRIVER_BRANCH_CUDA if b < branch]
    if not older:
        return None, False
    # a branch between known ones supports what the one below it does; past the table, at least that
    return DRIVER_BRANCH_CUDA[max(older)], False


def runtime_runs_on(runtime: str, driver_cuda_version: str) -> bool:
    """Does a library built against CUDA ``runtime`` initialise under a driver of ``driver_cuda_version``?

    Same or older major: yes (minor version compatibility within a major, backward compatibility
    across). A newer major: no.
    """
    rt, dr = vtuple(runtime), vtuple(driver_cuda_version)
    if not rt or not dr:
        return True
    return rt[0] <= dr[0]


def ptx_isa_for_cuda(cuda: str | None) -> tuple[str | None, bool]:
    """The newest PTX ISA a CUDA version (a driver's, or a toolkit's) handles; and whether it is from the table."""
    mm = major_minor(cuda)
    if not mm:
        return None, False
    if mm in CUDA_PTX_ISA:
        return CUDA_PTX_ISA[mm], True
    major, minor = vtuple(mm)[:2]
    if major >= 13:   # 13.0 -> 9.0, 13.1 -> 9.1: the pattern of the 13.x releases so far
        return f"{major - 4}.{minor}", False
    return None, False


def cuda_for_ptx_isa(isa: str) -> str | None:
    """The first CUDA version whose compiler writes PTX ISA ``isa`` (what a driver needs to JIT it)."""
    for cuda, v in CUDA_PTX_ISA.items():
        if v == isa:
            return cuda
    t = vtuple(isa)
    if t and t[0] >= 9:
        return f"{t[0] + 4}.{t[1] if len(t) > 1 else 0}"
    return None


def newer(a: str | None, b: str | None) -> bool:
    ta, tb = vtuple(a), vtuple(b)
    return bool(ta and tb and ta > tb)


def torch_variant_for(driver_cuda_version: str | None) -> str | None:
    """The newest torch CUDA variant a driver runs: "cu129" for a 12.9 driver."""
    dr = vtuple(driver_cuda_version)
    if not dr:
        return None
    fits = [v for v in TORCH_CUDA_VARIANTS if vtuple(v)[:2] <= dr[:2]]
    return "cu" + fits[-1].replace(".", "") if fits else None
