"""Verdicts: will a binary's device code run on a given GPU and driver, and what to do if not.

Per binary, the first that applies:

* ``runtime-newer-than-driver``: built against a CUDA runtime of a newer major version than
  the driver supports; CUDA initialisation fails.
* ``native``: it has SASS for this GPU (sm_XY runs on X.Y and on later minors of major X;
  an arch-specific sm_XYa only on X.Y).
* ``ptx-newer-than-driver``: no SASS, and every PTX it could JIT has an ISA newer than the
  driver's compiler understands.
* ``jit``: no SASS, but PTX for compute_XY <= this GPU: the driver compiles it at first load
  (minutes for a big library), then keeps the result in the JIT cache.
* ``no-image``: neither: "no kernel image is available for execution on the device".

The stack's verdict is the worst of the binaries the stack loads, in that order of severity:
runtime-newer-than-driver, no-image, ptx-newer-than-driver, jit, native.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuprobe.kernels import cudaversions as cv
from gpuprobe.kernels.discover import CUDA_WHEEL, DFLEX, EXTENSION, TORCH, Candidate
from gpuprobe.kernels.jitcache import DEFAULT_MAXSIZE, MAX_MAXSIZE, JitCache, human_size
from gpuprobe.kernels.scan import Group, Summary

NATIVE, JIT, NO_IMAGE, RUNTIME_NEWER, PTX_NEWER = "native", "jit", "no-image", "runtime-newer-than-driver", "ptx-newer-than-driver"
SEVERITY = (RUNTIME_NEWER, NO_IMAGE, PTX_NEWER, JIT, NATIVE)   # worst first
CANNOT_RUN = (RUNTIME_NEWER, NO_IMAGE, PTX_NEWER)


@dataclass
class Target:
    """The GPU and driver a verdict is for."""

    name: str | None
    cc: tuple[int, int]
    driver: str | None = None
    driver_cuda: str | None = None
    source: str = "named"          # "NVML" | "named" | "fingerprint <file>"

    def to_contract(self) -> dict:
        return {"name": self.name, "cc": f"{self.cc[0]}.{self.cc[1]}", "driver": self.driver,
                "driver_cuda": self.driver_cuda}


@dataclass
class BinaryVerdict:
    candidate: Candidate
    summary: Summary
    verdict: str
    reason: str
    jit_groups: list[Group] = field(default_factory=list)   # the PTX the driver would compile

    @property
    def path(self) -> str:
        return self.candidate.path

    @property
    def jit_bytes(self) -> int:
        return sum(g.bytes for g in self.jit_groups)

    def to_contract(self) -> dict:
        return {"path": self.path, "sass": self.summary.names("sass"), "ptx": self.summary.names("ptx"),
                "verdict": self.verdict, "reason": self.reason}


def sass_runs(g: Group, cc: tuple[int, int]) -> bool:
    if g.variant == "a":
        return g.cc == cc
    return g.cc[0] == cc[0] and g.cc[1] <= cc[1]


def ptx_jits(g: Group, cc: tuple[int, int]) -> bool:
    if g.variant == "a":
        return g.cc == cc
    if g.variant == "f":
        return g.cc[0] == cc[0] and g.cc[1] <= cc[1]
    return g.cc <= cc


def judge(candidate: Candidate, summary: Summary, target: Target, cache: JitCache | None = None) -> BinaryVerdict:
    cc = target.cc
    sm = f"sm_{cc[0]}{cc[1]}"
    runtime = candidate.runtime
    if runtime and target.driver_cuda and not cv.runtime_runs_on(runtime, target.driver_cuda):
        major = cv.vtuple(runtime)[0]
        need = cv.MIN_DRIVER_FOR_MAJOR.get(major)
        reason = (f"built against CUDA {runtime}; driver {target.driver or '?'} supports CUDA up to {target.driver_cuda}"
                  + (f" (CUDA {major}.x needs a driver >= {need})" if need else "") + ": CUDA initialisation fails")
        return BinaryVerdict(candidate, summary, RUNTIME_NEWER, reason)
    note = ""
    if runtime and target.driver_cuda and cv.newer(cv.major_minor(runtime), target.driver_cuda):
        note = f"; built against CUDA {runtime}, runs on the CUDA {target.driver_cuda} driver by minor version compatibility"
    if not summary.has_device_code:
        what = f"CUDA runtime {runtime}" if runtime else "no CUDA runtime found"
        return BinaryVerdict(candidate, summary, NATIVE, f"no device code ({what}, supported by this driver){note}")
    native = [g for g in summary.groups if g.kind == "sass" and sass_runs(g, cc)]
    if native:
        best = max(native, key=lambda g: (g.arch, g.variant == "a"))
        return BinaryVerdict(candidate, summary, NATIVE, f"SASS {best.name} runs on {sm}{note}")
    jittable = [g for g in summary.groups if g.kind == "ptx" and ptx_jits(g, cc)]
    have = _have(summary)
    if not jittable:
        return BinaryVerdict(candidate, summary, NO_IMAGE, f"no SASS for {sm} and no PTX at or below compute_{cc[0]}{cc[1]} ({have})")
    driver_isa, _known = cv.ptx_isa_for_cuda(target.driver_cuda)
    if driver_isa:
        loadable = [g for g in jittable if not cv.newer(g.version, driver_isa)]
        if not loadable:
            newest = max(jittable, key=lambda g: cv.vtuple(g.version))
            made_by = cv.cuda_for_ptx_isa(newest.version)
            return BinaryVerdict(candidate, summary, PTX_NEWER,
                                 f"only PTX for {sm} ({', '.join(sorted({g.name for g in jittable}))}, PTX ISA {newest.version}"
                                 + (f", from CUDA {made_by}" if made_by else "")
                                 + f"); driver {target.driver or '?'} (CUDA {target.driver_cuda}) JIT-compiles PTX ISA up to "
                                 f"{driver_isa}: the PTX fails to load")
        jittable = loadable
    # the driver picks the newest PTX at or below the GPU: that is the JIT's work
    top = max(g.arch for g in jittable)
    work = [g for g in jittable if g.arch == top]
    isa = max((g.version for g in work), key=cv.vtuple)
    size = sum(g.bytes for g in work)
    n = sum(g.count for g in work)
    compressed = sum(g.compressed for g in work)
    reason = (f"no SASS for {sm} ({have}): the driver JIT-compiles {work[0].name} PTX (ISA {isa}) at first load: "
              f"{n} PTX image{'s' if n != 1 else ''}, {human_size(size)}" + (f" ({compressed} compressed)" if compressed else ""))
    if cache is not None:
        reason += "; " + cache.describe()
    return BinaryVerdict(candidate, summary, JIT, reason + note, jit_groups=work)


def _have(summary: Summary) -> str:
    sass, ptx = summary.names("sass"), summary.names("ptx")
    parts = []
    if sass:
        parts.append("SASS " + ", ".join(sass))
    if ptx:
        parts.append("PTX " + ", ".join(ptx))
    return "has " + "; ".join(parts) if parts else "no device code"


def worst(verdicts: list[str]) -> str:
    for v in SEVERITY:
        if v in verdicts:
            return v
    return NATIVE


def stack_verdict(binaries: list[BinaryVerdict]) -> str:
    return worst([b.verdict for b in binaries if b.candidate.in_stack])


# -- remedies -------------------------------------------------------------------------
def remedies(binaries: list[BinaryVerdict], target: Target, torch_version: str | None, torch_cuda: str | None,
             cache: JitCache | None) -> list[str]:
    """What to do, most useful first, one line each, for the binaries that count."""
    out: list[str] = []
    counted = [b for b in binaries if b.candidate.in_stack]
    sm = f"sm_{target.cc[0]}{target.cc[1]}"
    arch_list = f"{target.cc[0]}.{target.cc[1]}"

    def add(text: str) -> None:
        if text not in out:
            out.append(text)

    runtime_bad = [b for b in counted if b.verdict == RUNTIME_NEWER]
    if runtime_bad:
        variant = cv.torch_variant_for(target.driver_cuda)
        if torch_cuda and any(b.candidate.role in (TORCH, CUDA_WHEEL) for b in runtime_bad):
            if variant:
                add(f"install the torch build that matches this driver: torch {torch_version or ''} is built for CUDA "
                    f"{torch_cuda}, driver {target.driver} supports CUDA up to {target.driver_cuda}: use the {variant} "
                    f"build (pip install torch --index-url https://download.pytorch.org/whl/{variant}), then "
                    f"check again with gpuprobe kernels")
            else:
                add(f"torch is built for CUDA {torch_cuda}; no torch CUDA build runs on driver {target.driver}: upgrade the driver")
        majors = sorted({cv.vtuple(b.candidate.runtime)[0] for b in runtime_bad if b.candidate.runtime})
        for major in majors:
            need = cv.MIN_DRIVER_FOR_MAJOR.get(major)
            if need:
                add(f"or ask the admins for a driver >= {need} on this node (CUDA {major}.x needs it)")
        others = [b for b in runtime_bad if b.candidate.role not in (TORCH, CUDA_WHEEL)]
        for b in others:
            add(f"rebuild {b.path} against CUDA {target.driver_cuda} or older (it was built for CUDA {b.candidate.runtime})")
    for b in counted:
        if b.verdict not in (NO_IMAGE, PTX_NEWER):
            continue
        if b.candidate.role == DFLEX:
            add(dflex_rebuild(b.path, target))
        elif b.candidate.role == TORCH:
            add(f"this torch build has no kernels for {sm} ({_have(b.summary)}): install a torch build whose "
                f"torch.cuda.get_arch_list() includes {sm}")
        elif b.candidate.role == EXTENSION:
            add(f"rebuild the torch extension {b.path} with TORCH_CUDA_ARCH_LIST={arch_list} (delete its build folder)")
        elif b.verdict == PTX_NEWER:
            add(f"{b.path}: its PTX needs a newer driver; rebuild it with -gencode arch=compute_{target.cc[0]}{target.cc[1]},"
                f"code={sm} (SASS needs no JIT) or with the CUDA {target.driver_cuda} toolkit, or upgrade the driver")
        else:
            add(f"{b.path}: rebuild it with -gencode arch=compute_{target.cc[0]}{target.cc[1]},code={sm}, or install a "
                f"build of {b.candidate.owner} that ships {sm}")
    jit = [b for b in counted if b.verdict == JIT]
    if jit:
        total = sum(b.jit_bytes for b in jit)
        for b in jit:
            if b.candidate.role == DFLEX:
                add(dflex_rebuild(b.path, target))
        add(f"warm the JIT cache once per node before the jobs ({len(jit)} binar{'ies' if len(jit) != 1 else 'y'} "
            f"JIT-compile {human_size(total)} of PTX on first load; e.g. gpuprobe run --only --stage sim on each node)")
        if cache is not None:
            if cache.disabled:
                add("unset CUDA_CACHE_DISABLE: with the cache off every process compiles again")
            if not cache.writable:
                add(f"the JIT cache {cache.path} is not writable: export CUDA_CACHE_PATH to a writable node-local folder")
            if cache.shared:
                add(f"move the JIT cache off the shared {cache.fstype} home: export CUDA_CACHE_PATH=/tmp/$USER/nv-cache "
                    "(or another node-local disk)")
            # below the default (someone lowered it), or too small for what this stack compiles
            if cache.maxsize < max(4 * total, DEFAULT_MAXSIZE) and cache.maxsize < MAX_MAXSIZE:
                add(f"raise CUDA_CACHE_MAXSIZE (now {human_size(cache.maxsize)}), e.g. export CUDA_CACHE_MAXSIZE=4294967296, "
                    "so the compiled kernels are not evicted")
            if cache.free_bytes is not None and cache.free_bytes < 4 * total:
                add(f"free room on the JIT cache's disk ({human_size(cache.free_bytes)} free)")
    return out


def dflex_rebuild(path: str, target: Target) -> str:
    cc = f"{target.cc[0]}{target.cc[1]}"
    return (f"rebuild dflex's kernels for sm_{cc}: dflex passes its own -gencode (compute_50 PTX) so "
            f"TORCH_CUDA_ARCH_LIST is ignored; in dflex/adjoint.py set cuda_flags = "
            f"[\"-gencode=arch=compute_{cc},code=sm_{cc}\", \"-gencode=arch=compute_{cc},code=compute_{cc}\"], delete "
            f"{path} and the adjoint.gen beside it, and import dflex once on a node of this GPU to rebuild")
