"""The shipped known-issue rules (the causes behind them: docs/KNOWN_ISSUES.md).

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


def _dflex(case: Case) -> dict:
    return case.data.get("dflex") or {}


def stale_build_lock(case: Case) -> bool:
    """A lock no live process holds, where dflex had to rebuild (or the stacks show the wait)."""
    if case.stack_has(r"FileBaton\.wait", r"file_baton\.py"):
        return True
    dflex = _dflex(case)
    lock = dflex.get("lock") or {}
    if lock.get("stale") and dflex.get("cache_valid") is False:
        return True
    started = case.mark_data("import_dflex") or {}
    return bool(started.get("stale_locks")) and (case.last_mark or "").endswith(("import_dflex", "kernel_build"))


def _dflex_error(case: Case) -> dict:
    return _dflex(case).get("error") or {}


def dflex_numpy2(case: Case) -> bool:
    return "NumPy 2.0" in str(_dflex_error(case).get("message") or "")


def dflex_gym_missing(case: Case) -> bool:
    error = _dflex_error(case)
    return error.get("type") == "ModuleNotFoundError" and "gym" in str(error.get("message") or "") and (
        error.get("module") in (None, "gym", "gym.spaces"))


def _must_rebuild(case: Case) -> bool:
    return _dflex(case).get("cache_valid") is False


def dflex_kernels_not_writable(case: Case) -> bool:
    cache = _dflex(case).get("kernel_cache") or {}
    return _must_rebuild(case) and cache.get("writable") is False


def dflex_no_compiler(case: Case) -> bool:
    dflex = _dflex(case)
    tail = str(dflex.get("build_log_tail") or "")
    return _must_rebuild(case) and ("compiler" in dflex and dflex["compiler"] is None
                                    or bool(re.search(r"c\+\+: (command )?not found|No such file or directory: 'c\+\+'", tail)))


def dflex_waits_for_build(case: Case) -> bool:
    return case.mark_data(".wait_for_build") is not None or case.stack_has(r"_wait_for_build")


PTX_JIT_STACKS = (r"cuModuleLoad", r"cuLibraryLoad", r"__cudaRegisterFatBinary", r"ptxjitcompiler",
                  r"nvPTXCompiler", r"fatBinaryCtl", r"cuLinkAddData")


def ptx_jit(case: Case) -> bool:
    if case.stack_has(r"FileBaton\.wait"):
        return False  # a lock wait, not the JIT (the stale-lock rule says so)
    if case.stack_has(*PTX_JIT_STACKS):
        return True
    last = case.last_mark or ""
    # dflex's kernels first run on the GPU when its first env is built, reset and stepped
    at_first_kernel = last == "cuda.kernel" or bool(re.fullmatch(r"sim\.dflex_\w+\.(construct|reset|step)", last))
    return case.device == "cuda" and at_first_kernel


# frames of the driver's PTX compiler: the JIT itself (the library, and the entry point cudart calls)
JIT_FRAMES = (r"libnvidia-ptxjitcompiler", r"__cuda_CallJitEntryPoint")


def jit_stall_confirmed(case: Case) -> bool:
    """Stuck in the driver's JIT, busy, no new marks, and the static check says the stack has PTX-only binaries."""
    if case.status != "hang":      # "slow" still makes progress: not a stall
        return False
    if not (case.stack_has(*JIT_FRAMES) and _busy(case)):
        return False
    return bool((case.kernels or {}).get("jit"))


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
        references=("docs/KNOWN_ISSUES.md: The Buffer's storage rule",),
    ),
    Signature(
        id="stale-kernel-build-lock",
        title="Stale kernel-build lock: importing dflex waits forever (torch FileBaton.wait)",
        explanation=(
            "dflex builds its kernels with torch.utils.cpp_extension.load_inline into <dflex>/kernels/; the "
            "build holds a 'lock' file. A build that was killed (job time limit, scancel, OOM) leaves it behind, "
            "and every later import sleeps in FileBaton.wait forever: no output, no error."),
        remedy=(
            "Make sure no build is running (no ninja/nvcc in that folder, on this node or another that shares it), "
            "then delete the lock file named in the stage data (rm <dflex>/kernels/lock, or the one under "
            "~/.cache/torch_extensions) and import again. On shared installs build the kernels once per node "
            "type before submitting jobs (python -c 'import dflex')."),
        predicate=stale_build_lock, stages=(), statuses=STUCK + ("fail",),
        references=("torch/utils/file_baton.py", "docs/PROBES.md: dflex's kernel cache"),
    ),
    Signature(
        id="dflex-numpy-2",
        title="dflex on NumPy 2: np.Inf was removed",
        explanation=(
            "DiffRL's dflex uses NumPy 1 names (np.Inf in DFlexEnv.__init__), so every env constructor raises "
            "AttributeError under NumPy 2. Its package metadata does not pin numpy, so an upgrade goes unnoticed."),
        remedy="pip install 'numpy<2' in the training environment (gym 0.26 needs NumPy 1 as well).",
        predicate=dflex_numpy2, stages=("sim", "train"), statuses=("fail",),
        references=("dflex/envs/dflex_env.py: np.Inf",),
    ),
    Signature(
        id="dflex-gym-missing",
        title="dflex cannot import gym",
        explanation=(
            "import dflex imports dflex.envs, whose base class does 'from gym import spaces' (the old gym, not "
            "gymnasium). dflex's metadata does not declare it, so a clean install lacks it."),
        remedy="pip install gym==0.26.2 (with numpy<2) beside dflex.",
        predicate=dflex_gym_missing, stages=("sim", "train"), statuses=("fail",),
        references=("dflex/envs/dflex_env.py: from gym import spaces",),
    ),
    Signature(
        id="dflex-kernels-not-writable",
        title="dflex must build its kernels into a folder this user cannot write",
        explanation=(
            "dflex builds into <dflex package>/kernels/ and nowhere else. When the cache there is missing or not "
            "valid for this node (another dflex, or built on a node with/without CUDA) and site-packages is "
            "read-only (a shared cluster install), every import fails."),
        remedy=(
            "Have the owner of the install build the kernels once on a node of this kind (python -c 'import dflex'), "
            "or install dflex into an environment you can write (a venv of your own)."),
        predicate=dflex_kernels_not_writable, stages=("sim", "train"), statuses=("fail",),
        references=("dflex/adjoint.py: build_path", "docs/PROBES.md: dflex's kernel cache"),
    ),
    Signature(
        id="dflex-no-compiler",
        title="dflex must build its kernels and no C++ compiler is on PATH",
        explanation=(
            "Without a valid kernel cache, import dflex compiles C++ with torch's cpp_extension (ninja and $CXX or "
            "c++). Compute nodes often have no compiler unless a module is loaded."),
        remedy=(
            "module load gcc (or install g++) in the job script, or build the kernels once where a compiler is, on a "
            "node of the same kind, so that later imports use the cache."),
        predicate=dflex_no_compiler, stages=("sim", "train"), statuses=("fail",),
        references=("torch/utils/cpp_extension.py",),
    ),
    Signature(
        id="dflex-concurrent-kernel-build",
        title="Waiting for another process's dflex kernel build",
        explanation=(
            "Jobs that import a cold dflex from one install at once all decide to rebuild; one builds under the "
            "lock and the others wait for it (measured: 4 processes, one compiler, all done when the build is). "
            "If the builder is killed, the waiters would wait forever on its lock; the probe and the trainer "
            "watch the holder and fail instead."),
        remedy=(
            "Build the kernels once per node type before launching job arrays (python -c 'import dflex' on one node "
            "of each kind); keep one dflex install per node type, because nodes with and without CUDA rebuild over "
            "each other's cache."),
        predicate=dflex_waits_for_build, stages=("sim", "train"), statuses=STUCK + ("fail",),
        references=("benchmarks/dflex_concurrent_import.py",),
    ),
    Signature(
        id="ptx-jit-stall-static",
        title="Stalled in the driver's PTX JIT; the static check names the PTX-only binaries it is compiling",
        explanation=(
            "The stage's native stacks are in the driver's JIT compiler (libnvidia-ptxjitcompiler, "
            "__cuda_CallJitEntryPoint) at high CPU with no new progress mark, and the kernel check of this node "
            "(gpuprobe kernels, in the stage's evidence.kernels) finds binaries with no SASS for this GPU, only PTX: "
            "the driver is compiling them at first load. That takes minutes for a big library, at full CPU and "
            "with no output, and is paid again by every process whose JIT cache is cold, off, too small or on a "
            "shared home."),
        remedy=(
            "Rebuild the binaries listed in evidence.kernels.jit with SASS for this GPU (gpuprobe kernels prints "
            "how, e.g. dflex's cuda_flags for sm_89); until then let one run finish the JIT on each node (warm the "
            "cache once per node), keep CUDA_CACHE_PATH on node-local persistent storage and raise "
            "CUDA_CACHE_MAXSIZE (e.g. 4294967296) so it is kept."),
        predicate=jit_stall_confirmed, stages=(), statuses=("hang",),
        references=("gpuprobe kernels (docs/KERNELS.md)", "CUDA_CACHE_PATH, CUDA_CACHE_MAXSIZE (CUDA JIT cache)"),
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
        predicate=ptx_jit, stages=("cuda", "sim", "train", "alloc", "job"), statuses=STUCK,
        references=("docs/KNOWN_ISSUES.md: dflex's kernel build", "CUDA_CACHE_MAXSIZE, CUDA_CACHE_PATH (CUDA JIT cache)"),
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
        predicate=context_init, stages=("cuda", "alloc", "buffer", "train", "sim", "job"), statuses=STUCK,
        references=("docs/KNOWN_ISSUES.md: The first CUDA call",),
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
        predicate=pinned_alloc, stages=("alloc", "buffer", "train", "job"), statuses=STUCK,
        references=("docs/KNOWN_ISSUES.md: Pinned host memory",),
    ),
]


# -- the user's own jobs (gpuprobe attach / watch: stage "job") --------------------------
# These read what observe.py records: data.streams (stdout buffering), data.cpu and
# data.allotment (threads against allowed CPUs), data.verdict, and the parsed stack text.
ANY = ("hang", "slow", "hang-unkillable", "pass", "skip")


def _verdict(case: Case) -> dict:
    return case.data.get("verdict") or {}


def _where(case: Case) -> str:
    return _verdict(case).get("where") or "(no stacks)"


def buffered_stdout(case: Case) -> bool:
    streams = case.data.get("streams") or {}
    return bool(streams.get("block_buffered")) and _verdict(case).get("kind") != "progressing"


def buffered_stdout_detail(case: Case) -> str:
    so = (case.data.get("streams") or {}).get("stdout") or {}
    target = so.get("target") if so.get("kind") == "file" else f"a {so.get('kind')}"
    return (f"the log ({target}) is behind the process by up to {so.get('behind_bytes_max')} bytes; "
            f"it is really in {_where(case)}")


LOCK_FUNCTIONS = (r"FileBaton\.wait", r"file_baton\.py", r"\b\w*(?:wait|acquire|poll)\w*_?(?:lock|baton)\w*\b",
                  r"\b\w*lock\w*_?wait\w*\b", r"\bflock\b", r"\blockf\b", r"filelock", r"\bFileLock\b",
                  r"_acquire \(.*filelock")


def _python_functions(case: Case) -> str:
    """The Python frames of the stack text, one per line (native frames left out)."""
    return "\n".join(line.strip() for line in case.stacks.splitlines() if re.search(r"\.pyw?:\d+\)\s*$", line))


def lock_wait(case: Case) -> bool:
    if _verdict(case).get("kind") == "progressing":
        return False
    text = _python_functions(case) + "\n" + "\n".join(
        line.strip() for line in case.stacks.splitlines() if re.search(r"\b(flock|lockf|fcntl)\b", line))
    return any(re.search(p, text, re.I) for p in LOCK_FUNCTIONS)


def lock_wait_detail(case: Case) -> str:
    cmd = " ".join(case.data.get("command") or [])
    locks = sorted({w for w in re.findall(r"(?:^|\s)(\S*(?:lock|baton)\S*)", cmd, re.I) if not w.endswith(".py")})
    return f"waiting in {_where(case)}" + (f"; lock files on its command line: {', '.join(locks)}" if locks else "")


PREFETCH_WORKER = r"_worker \(.*concurrent/futures/thread\.py"
FUTURE_WAIT = (r"result \(.*concurrent/futures/_base\.py", r"as_completed \(.*concurrent/futures",
               r"wait \(.*concurrent/futures/_base\.py")


def _prefetch_counts(case: Case) -> tuple[int, int, bool]:
    """(workers, workers idle on the queue, a thread waits on a future) from the stack text."""
    blocks = re.split(r"\n(?=Thread )", case.stacks)
    workers = idle = 0
    waiting = False
    for block in blocks:
        if re.search(PREFETCH_WORKER, block):
            workers += 1
            # a worker whose next frame out of _worker is the work queue's get() has nothing to do
            frames = [line.strip() for line in block.splitlines()[1:] if line.strip()]
            py = [f for f in frames if re.search(r"\.pyw?:\d+\)$", f)]
            if py and re.match(r"(get|wait) \(.*(queue|threading)\.py", py[0]) and \
                    any(f.startswith("get (") for f in py[:3]):
                idle += 1
        elif any(re.search(p, block) for p in FUTURE_WAIT):
            waiting = True
    return workers, idle, waiting


def prefetch_stuck(case: Case) -> bool:
    workers, idle, waiting = _prefetch_counts(case)
    return workers >= 2 and waiting and _verdict(case).get("kind") != "progressing"


def prefetch_detail(case: Case) -> str:
    workers, idle, _ = _prefetch_counts(case)
    state = ("starved: every worker waits for work while the consumer waits for a result" if idle == workers
             else f"stuck: {workers - idle} worker(s) busy or blocked, {idle} idle")
    return f"{workers} prefetch workers, {state}; the consumer waits in {_where(case)}"


OVERSUBSCRIBED_RATIO = 2.0      # busy threads per allowed CPU
NEAR_FULL = 0.8                 # CPU% >= 0.8 x allowed x 100 with OpenMP spin frames


def _cpu(case: Case) -> dict:
    return case.data.get("cpu") or {}


def oversubscribed(case: Case) -> bool:
    cpu = _cpu(case)
    allowed = float(cpu.get("allowed_cpus") or 0)
    if allowed <= 0:
        return False
    busy = int(cpu.get("busy_threads") or 0)
    if busy >= OVERSUBSCRIBED_RATIO * allowed and busy >= allowed + 2:
        return True
    percent = cpu.get("cpu_percent")
    spinning_pool = int(cpu.get("spin_threads_seen") or 0) + int(cpu.get("openmp_pool_threads_seen") or 0)
    return (isinstance(percent, (int, float)) and percent >= NEAR_FULL * allowed * 100
            and spinning_pool > allowed)


def oversubscribed_detail(case: Case) -> str:
    cpu = _cpu(case)
    allowed = float(cpu.get("allowed_cpus") or 1)
    return (f"{cpu.get('summary')}; set torch.set_num_threads({max(1, int(allowed))}) / "
            f"OMP_NUM_THREADS={max(1, int(allowed))}")


RULES += [
    Signature(
        id="stdout-block-buffered",
        title="The log is behind the process: stdout is block-buffered to a file or pipe",
        explanation=(
            "Python block-buffers stdout that is not a terminal (a SLURM output file, a pipe to tee), with a "
            "buffer the size of the file's block (4 KiB on local disks, up to MiBs on Lustre/NFS). The last "
            "lines the job printed may still sit in that buffer: 'no output after X' does not mean it is still "
            "at X. The stacks say where it really is."),
        remedy=(
            "Run Python unbuffered: export PYTHONUNBUFFERED=1 in the job script (or python -u), or "
            "print(..., flush=True); gpuprobe watch -- CMD sets PYTHONUNBUFFERED=1 and passes output through."),
        predicate=buffered_stdout, detail=buffered_stdout_detail, stages=("job",), statuses=ANY,
    ),
    Signature(
        id="lock-file-wait",
        title="Waiting on a lock or file baton",
        explanation=(
            "The job sleeps in a loop until a lock file disappears or a lock is released (torch's FileBaton in "
            "cpp_extension builds, filelock in dataset caches and model hubs, fcntl/flock). A lock left by a "
            "killed process is never released: the job waits forever with no CPU and no output."),
        remedy=(
            "Find the lock (its path is in the stack's locals or the job's command line/config), make sure no "
            "live process holds it (fuser/lsof), delete it and restart; build extensions and caches once "
            "before submitting jobs."),
        predicate=lock_wait, detail=lock_wait_detail, stages=("job",), statuses=STUCK,
    ),
    Signature(
        id="prefetch-pool-stuck",
        title="Prefetch thread pool stuck or starved: the consumer waits on a future that never completes",
        explanation=(
            "Replay buffers and data loaders prefetch batches in a thread pool (torchrl's ReplayBuffer with "
            "prefetch=12 uses a ThreadPoolExecutor). When every worker is blocked (on a lock, on the GIL behind "
            "a busy main thread, on host memory) or idle with nothing queued, the training loop waits in "
            "Future.result() forever."),
        remedy=(
            "Lower prefetch (0-2) to see whether the pool is the cause; make sure workers do not wait on a lock "
            "the consumer holds; with host storage, fewer threads than allowed CPUs (see cpu-oversubscription)."),
        predicate=prefetch_stuck, detail=prefetch_detail, stages=("job", "buffer", "train"), statuses=STUCK,
    ),
    Signature(
        id="cpu-oversubscription",
        title="CPU oversubscription: more busy threads than the CPUs the job may use",
        explanation=(
            "torch sizes its OpenMP pool from the affinity mask (or OMP_NUM_THREADS), not from the cgroup quota "
            "or SLURM's share, and prefetch and data threads come on top. Busy threads beyond the allowed CPUs "
            "spin and wait in OpenMP barriers instead of computing: the job crawls at about allowed x 100% CPU "
            "(the field's '118%'). Measured here: a gather+matmul loop pinned to one CPU ran about 2x slower with "
            "32 threads than with 1."),
        remedy=(
            "Match threads to the allotment: torch.set_num_threads(N) and OMP_NUM_THREADS=N / MKL_NUM_THREADS=N "
            "with N = the allowed CPUs (SLURM_CPUS_PER_TASK); fewer prefetch threads (prefetch 0-2); or ask for "
            "more CPUs with sbatch --cpus-per-task."),
        predicate=oversubscribed, detail=oversubscribed_detail, stages=("job",), statuses=ANY,
    ),
]
