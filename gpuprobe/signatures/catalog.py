"""The shipped known-issue rules (see DESIGN.md, "Known-issue signatures").

Each rule is data plus a small predicate over a :class:`~gpuprobe.signatures.Case`. The
predicates look only at what a result file records (marks and their data, stage data,
stack text, the process snapshot, the fingerprint), so a rule fires the same way on a
live run and on a stored or hand-recorded result. Add a rule by appending to ``RULES``
and a test that makes it fire and one that keeps it quiet on a healthy run.
"""

from __future__ import annotations

import re

from gpuprobe.signatures import Case, Signature

HIGH_CPU_PERCENT = 80.0   # a stalled-but-busy process: one core or more, e.g. the field's 118%
STUCK = ("hang", "slow", "hang-unkillable")


# -- helpers over a Case ---------------------------------------------------------------
def _decisions(case: Case) -> list[dict]:
    """Storage decisions in the marks: the Buffer's own, and simulated (--free-memory-gb) ones."""
    return [m.get("data") or {} for m in case.marks
            if m["name"].endswith(".storage_decision") or m["name"].endswith(".simulated_storage_decision")]


def _host_storage_for_cuda(case: Case) -> bool:
    """The Buffer's storage went to host memory although the compute device is (or is simulated as) CUDA."""
    for d in _decisions(case):
        if d.get("device") != "cpu":
            continue
        compute = str(d.get("compute_device") or "")
        by_rule = "PWM's rule" in str(d.get("reason") or "")  # auto policy, decided on free memory
        # a simulated decision (--free-memory-gb) carries compute_device cuda:0; the Buffer's real
        # decision on a CPU compute device is host storage by definition and says nothing
        if compute.startswith("cuda") or by_rule:
            return True
    return False


def _sampling(case: Case) -> bool:
    last = case.last_mark or ""
    return bool(re.search(r"(first_)?sample(\.start)?$", last)) or case.stack_has(
        r"\bsample\b", r"_draw", r"_gather", r"index_select", r"prefetch", r"SliceSampler", r"LazyTensorStorage")


def _busy(case: Case) -> bool:
    cpu = case.cpu_percent
    return cpu is not None and cpu >= HIGH_CPU_PERCENT


def host_storage_cpu_bound(case: Case) -> bool:
    return _host_storage_for_cuda(case) and (_sampling(case) or _busy(case))


def stale_build_lock(case: Case) -> bool:
    if case.stack_has(r"FileBaton\.wait", r"file_baton\.py"):
        return True
    lock = ((case.data.get("dflex") or {}).get("lock") or {})
    if lock.get("stale"):
        return True
    started = case.mark_data("import_dflex") or {}
    return bool(started.get("stale_locks")) and (case.last_mark or "").endswith(("import_dflex", "kernel_build"))


PTX_JIT_STACKS = (r"cuModuleLoad", r"cuLibraryLoad", r"__cudaRegisterFatBinary", r"ptxjitcompiler",
                  r"nvPTXCompiler", r"fatBinaryCtl", r"cuLinkAddData")


def ptx_jit(case: Case) -> bool:
    if case.stack_has(r"FileBaton\.wait"):
        return False  # a lock wait, not the JIT (the stale-lock rule says so)
    if case.stack_has(*PTX_JIT_STACKS):
        return True
    last = case.last_mark or ""
    at_first_kernel = last in ("cuda.kernel", "sim.kernel_build") or last.endswith(".kernel_build")
    return case.device == "cuda" and at_first_kernel


CONTEXT_STACKS = (r"\bcuInit\b", r"cuDevicePrimaryCtxRetain", r"cuCtxCreate", r"cudaMemGetInfo", r"cuMemGetInfo",
                  r"_cuda_init", r"_lazy_init \(torch/cuda")


def context_init(case: Case) -> bool:
    last = case.last_mark or ""
    if case.stage == "cuda" and last in ("cuda.is_available", "cuda.init", "cuda.context", "cuda.mem_get_info"):
        return True
    if last.endswith("mem_get_info.start") or last == "alloc.mem_get_info":
        return True
    return case.stack_has(*CONTEXT_STACKS)


PINNED_STACKS = (r"cudaHostAlloc", r"cuMemHostAlloc", r"cuMemAllocHost", r"CachingHostAllocator",
                 r"HostAllocator", r"cudaHostRegister")


def pinned_alloc(case: Case) -> bool:
    last = case.last_mark or ""
    if re.search(r"\.pinned@[^.]*$", last):
        return True
    if last.endswith("alloc.start") and any(d.get("pinned") for d in _decisions(case)):
        return True
    return case.stack_has(*PINNED_STACKS)


RULES: list[Signature] = [
    Signature(
        id="buffer-host-storage-cpu-bound",
        title="Buffer storage fell back to host memory; host-side sampling is CPU-bound",
        explanation=(
            "PWM's Buffer keeps its storage on the GPU only when 2.5 x its bytes are below the free GPU memory "
            "at the first add(); otherwise the storage is in host memory, and every sample gathers "
            "B x (H+1) rows on the CPU (with PWM's SliceSampler and 12 prefetch threads: CPU-heavy) and "
            "looks like a hang at over 100% CPU with no output. Which side of the rule a node lands on depends "
            "on its free memory at that moment (card size, other processes on the GPU, the buffer's size): at "
            "PWM's Ant defaults (1e6 steps, ~0.19 GB) the rule needs ~0.46 GB free, so a 48 GB card falls back "
            "only when nearly full. The storage_decision mark records the numbers."),
        remedy=(
            "Keep the storage on the device: lower buffer_size so 2.5 x bytes fits (gpuprobe run --stage buffer "
            "--bisect finds the largest that finishes in budget), or force storage='cuda' if 1x fits; "
            "if it must stay on the host, use fewer prefetch threads (prefetch 0-2) and pinned memory, and "
            "check ms/sample with gpuprobe run --stage buffer --storage cpu --prefetch N."),
        predicate=host_storage_cpu_bound, stages=("buffer", "train"), statuses=STUCK,
        references=("DESIGN.md: Known-issue signatures", "FACTS.md: The Buffer"),
    ),
    Signature(
        id="stale-kernel-build-lock",
        title="Stale kernel-build lock: importing dflex waits forever (torch FileBaton.wait)",
        explanation=(
            "dflex builds its kernels with torch.utils.cpp_extension.load_inline into <dflex>/kernels/; the "
            "build holds a 'lock' file. A build that was killed (job time limit, scancel, OOM) leaves it behind, "
            "and every later import sleeps in FileBaton.wait forever: no output, no error."),
        remedy=(
            "Make sure no build is running (no ninja/nvcc in that folder), then delete the lock file named in the "
            "stage data (rm <dflex>/kernels/lock, or the one under ~/.cache/torch_extensions) and import again. "
            "On shared installs build the kernels once on a login node before submitting jobs."),
        predicate=stale_build_lock, stages=(), statuses=STUCK + ("fail",),
        references=("torch/utils/file_baton.py", "FACTS.md: dflex kernel build"),
    ),
    Signature(
        id="ptx-jit-first-load",
        title="Driver JIT-compiling PTX-only kernels on first load for this GPU architecture",
        explanation=(
            "Kernels shipped as PTX only (dflex builds compute_50 PTX) are compiled by the driver the first time "
            "they load on an architecture it has no binary for (e.g. Ada sm_89 after Hopper). That takes minutes "
            "at full CPU, once per node and user; the result is cached in ~/.nv/ComputeCache."),
        remedy=(
            "Let one run finish the JIT (or warm the cache: run the sim stage once per node) and keep "
            "~/.nv/ComputeCache on persistent storage; raise CUDA_CACHE_MAXSIZE (e.g. 4294967296) so the cache "
            "is not evicted; better, build the kernels for the real architecture (TORCH_CUDA_ARCH_LIST=8.9)."),
        predicate=ptx_jit, stages=("cuda", "sim", "train", "alloc"), statuses=STUCK,
        references=("FACTS.md: dflex kernel build", "CUDA_CACHE_MAXSIZE, CUDA_CACHE_PATH (CUDA JIT cache)"),
    ),
    Signature(
        id="cuda-context-init-stall",
        title="First CUDA call (context creation / cudaMemGetInfo) stuck in the driver",
        explanation=(
            "The first CUDA call creates the context; a torch.cuda.mem_get_info() (cudaMemGetInfo) made first "
            "does the same. It can take long (many GPUs visible, persistence mode off, a driver/firmware "
            "problem) or never return (a GPU in a bad state, Xid errors)."),
        remedy=(
            "Check nvidia-smi and the kernel log for Xid errors on this node; enable persistence mode "
            "(nvidia-smi -pm 1 or nvidia-persistenced); restrict CUDA_VISIBLE_DEVICES to the job's GPU; "
            "if it persists, drain the node and report it to the admins."),
        predicate=context_init, stages=("cuda", "alloc", "buffer", "train", "sim"), statuses=STUCK,
        references=("DESIGN.md: Known-issue signatures",),
    ),
    Signature(
        id="pinned-host-alloc-stall",
        title="Pinned host allocation (cudaHostAlloc) stalling",
        explanation=(
            "Pinned (page-locked) host memory is allocated by the driver with cudaHostAlloc; large pinned "
            "allocations can take very long or stall (memory pressure, cgroup limits, IOMMU settings), and "
            "PWM pins its host-side Buffer storage and sample batches."),
        remedy=(
            "Try pin_memory=False (gpuprobe run --stage buffer without --pin-memory to compare); keep pinned "
            "allocations small; check the job's memory limit and the node's free memory; report repeated stalls "
            "on one node to the admins."),
        predicate=pinned_alloc, stages=("alloc", "buffer", "train"), statuses=STUCK,
        references=("DESIGN.md: Known-issue signatures",),
    ),
]
