"""Observe a running job from outside: the forensics of a probe hang, for the user's own process.

Shared by ``gpuprobe attach`` (a PID or a SLURM job) and ``gpuprobe watch`` (at a stall).
Stacks come from :mod:`gpuprobe.run.evidence` (py-spy --native, then py-spy, each followed
by SIGCONT to the whole tree so nothing is left stopped); the job is never signalled
otherwise and never killed here. The result is an ordinary result file with one stage,
``job``, of provenance ``observed``, so matrix and preflight count it like a probe's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil

from gpuprobe import __version__, signatures
from gpuprobe.jobs import allotment as allot
from gpuprobe.jobs import samples as smp
from gpuprobe.jobs import stacks as st
from gpuprobe.jobs import streams
from gpuprobe.node import fingerprint as fpr
from gpuprobe.node.nvml import Nvml, available
from gpuprobe.redact import recorded_environment, redact_argv, redact_snapshot, redact_stacks, redact_text
from gpuprobe.run import evidence
from gpuprobe.store import provenance
from gpuprobe.store.results import (HANG, PASS, SKIP, SCHEMA_VERSION, SUFFIX, StageResult, new_run_id, summarise,
                                    utc_now, write_atomic)

STAGE = "job"
PROVENANCE = provenance.OBSERVED
STATUS_OF = {smp.STUCK: HANG, smp.SPINNING: HANG, smp.PROGRESSING: PASS, smp.IDLE: SKIP, smp.BUSY: SKIP}


class NoSuchProcess(LookupError):
    """The PID to observe does not exist (or is not ours to read)."""


def roots_of(pids: list[int]) -> list[int]:
    """The PIDs whose parent is not among ``pids``: a job's tree tops (py-spy follows the rest)."""
    wanted = set(pids)
    roots = []
    for pid in pids:
        try:
            if psutil.Process(pid).ppid() not in wanted:
                roots.append(pid)
        except psutil.Error:
            pass
    return roots


def python_tops(roots: list[int]) -> list[int]:
    """The topmost Python processes under ``roots``: py-spy --subprocesses must start at a Python
    process (a SLURM batch script's bash, a shell wrapper: it refuses them)."""
    tops: list[int] = []
    for root in roots:
        frontier = [root]
        while frontier:
            pid = frontier.pop(0)
            if streams.is_python(pid):
                tops.append(pid)
                continue
            try:
                frontier += [c.pid for c in psutil.Process(pid).children()]
            except psutil.Error:
                pass
    return tops


def tree_of(roots: list[int]) -> list[int]:
    return sorted({p.pid for r in roots for p in evidence.process_tree(r)})


def output_position(stream_info: dict) -> int | None:
    """How far the job's stdout has got: the file's size or the fd's position."""
    so = stream_info.get("stdout") or {}
    if so.get("kind") != "file":
        return None
    try:
        return os.stat(f"/proc/{stream_info['pid']}/fd/1").st_size
    except OSError:
        return so.get("pos")


def take_sample(roots: list[int], nonblocking: bool = False, stream_info: dict | None = None,
                native: bool = True) -> smp.Sample:
    """One look: stacks of every tree, CPU, runnable threads.

    ``nonblocking``: watch's periodic look, plain py-spy without stopping the job (never
    freeze a torch process with many threads). Otherwise today's fallbacks: py-spy --native,
    then py-spy (``native=False`` starts there: a native dump that timed out once will again).
    """
    tree = tree_of(roots)
    texts, method, attempts = [], None, []
    for root in python_tops(roots) or roots:
        if nonblocking or not native:
            got = evidence.pyspy_dump(root, native=False, timeout=evidence.PLAIN_TIMEOUT_S, tree=tree,
                                      nonblocking=nonblocking)
            got = {"method": got["method"] if got["ok"] else None, "text": got.get("text", "") if got["ok"] else "",
                   "attempts": [{k: v for k, v in got.items() if k != "text"}]}
        else:
            got = evidence.collect_stacks(root, None, tree)
        texts.append(got["text"])
        method = method or got["method"]
        attempts += got["attempts"]
    text = redact_stacks("\n".join(t for t in texts if t))
    running = sum(allot.thread_states(pid)["running"] for pid in tree)
    sample = smp.Sample(time.monotonic(), smp.tree_cpu_seconds(roots), text, method,
                        output_position(stream_info) if stream_info else None, st.parse(text), running)
    sample.attempts = attempts  # type: ignore[attr-defined]
    return sample


def native_timed_out(sample: smp.Sample) -> bool:
    return any(a.get("method") == "py-spy --native" and "timed out" in a.get("error", "")
               for a in getattr(sample, "attempts", []))


def gpu_for(pids: list[int]) -> dict:
    """NVML snapshot of every GPU, with the memory and utilisation of these PIDs on each."""
    wanted = set(pids)
    try:
        with Nvml() as nv:
            if not nv.ok:
                return {"available": False, "reason": nv.state.reason}
            count = nv.device_count()
            if not isinstance(count, int):
                return {"available": False, "reason": count.reason}
            gpus = []
            for i in range(count):
                snap = nv.snapshot(i)
                procs = snap.get("processes") if isinstance(snap.get("processes"), list) else []
                snap["job_processes"] = [p for p in procs if p.get("pid") in wanted]
                util = nv.call("nvmlDeviceGetProcessUtilization", nv.handle(i), 0)
                snap["job_utilization"] = ([{"pid": u.pid, "sm_pct": u.smUtil, "mem_pct": u.memUtil}
                                            for u in util if u.pid in wanted] if available(util) else util.to_json())
                gpus.append(snap)
            return {"available": True, "simulated": nv.simulated, "gpus": gpus,
                    "job_memory_bytes": sum(p.get("used_gpu_memory_bytes") or 0 for g in gpus
                                            for p in g["job_processes"])}
    except Exception as exc:  # evidence is best effort: NVML must never cost the rest
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}


def cpu_evidence(roots: list[int], samples: list[smp.Sample], snapshot: dict, alloc: dict) -> dict:
    """The numbers behind an oversubscription verdict (see the cpu-oversubscription rule)."""
    threads = samples[-1].threads if samples else []
    total_threads = sum(allot.thread_states(p)["total"] for p in tree_of(roots))
    busy_snapshot = sum(1 for t in snapshot.get("threads") or [] if t.get("cpu_percent", 0) >= 5.0)
    running = max((s.running_threads for s in samples), default=0)
    allowed = float(alloc.get("allowed_cpus") or 1)
    pool = st.pool_threads(threads)
    cpu = snapshot.get("cpu_percent_total")
    busy = max(running, busy_snapshot)
    return {
        "allowed_cpus": allowed, "threads_total": total_threads, "threads_running_max": running,
        "threads_busy_in_window": busy_snapshot, "busy_threads": busy, "openmp_pool_threads_seen": pool,
        "spin_threads_seen": st.spin_threads(threads), "cpu_percent": cpu,
        "threads_per_cpu": round(busy / allowed, 2) if allowed else None,
        "torch_default_threads": allot.torch_default_threads(alloc),
        "summary": (f"{busy} busy threads ({running} runnable at once, {busy_snapshot} using CPU in the window, "
                    f"{total_threads} in all, {pool} in an OpenMP/BLAS pool) for {allowed:g} allowed CPU(s) "
                    f"(affinity {alloc.get('affinity')}, cgroup quota "
                    f"{'none' if alloc.get('cgroup_cpus') is None else alloc['cgroup_cpus']}, "
                    f"SLURM_CPUS_PER_TASK {alloc.get('slurm_cpus_per_task') or 'unset'}, "
                    f"thread env {alloc.get('thread_env') or 'none'}); CPU {cpu}%"),
    }


def observe(pids: list[int], samples: int = 2, interval: float = 0.5, prior: list[smp.Sample] | None = None,
            job: dict | None = None) -> tuple[StageResult, dict]:
    """Look at the job ``samples`` times ``interval`` apart and return its ``job`` stage result.

    ``prior``: samples already taken (watch's periodic looks); they join the verdict.
    """
    roots = roots_of(pids) or pids
    if not any(psutil.pid_exists(p) for p in roots):
        raise NoSuchProcess(f"no process {', '.join(map(str, pids))} (gone, or never was)")
    started_wall, t0 = utc_now(), time.monotonic()
    main = (python_tops(roots) or roots)[0]   # the process whose output and threads are "the job's"
    stream_info = streams.analyse(main)
    taken: list[smp.Sample] = list(prior or [])
    native, snapshot = True, None
    for i in range(max(1, samples)):
        if i:
            smp.wait_until(taken[-1].t + interval)
        taken.append(take_sample(roots, stream_info=stream_info, native=native))
        native = native and not native_timed_out(taken[-1])
        if snapshot is None:  # CPU per thread over a short window, inside the first interval
            snapshot = redact_snapshot(evidence.process_snapshot(main))
    thread_cpu = {str(t["tid"]): t.get("cpu_percent", 0.0) for t in snapshot.get("threads") or []}
    verdict = smp.classify(taken, thread_cpu, snapshot.get("cpu_percent_total"))
    alloc = allot.of_process(main)
    tree = tree_of(roots)
    gpu = gpu_for(tree)
    cmdline = redact_argv(_cmdline(main))
    last = taken[-1]
    res = StageResult(stage=STAGE, status=STATUS_OF[verdict.kind], device=None, started_at=started_wall,
                      duration_s=round(time.monotonic() - t0, 3), provenance=PROVENANCE)
    res.reason = verdict.reason
    res.data = {
        "verdict": verdict.to_dict(), "pids": tree, "roots": roots, "command": cmdline, "job": job or {},
        "streams": stream_info, "allotment": alloc, "cpu": cpu_evidence(roots, taken, snapshot, alloc),
        "samples": [s.to_dict(taken[0].t) for s in taken],
    }
    res.evidence = {
        "stacks": {"method": last.method, "text": last.text, "attempts": getattr(last, "attempts", [])},
        "process": snapshot, "gpu": gpu, "log_tail": redact_text(streams.tail(stream_info.get("output_file")) or ""),
        "collector_python": sys.version.split()[0],
    }
    fp = fpr.take()
    res.signatures = signatures.match(res, fp)
    return res, fp.to_dict()


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def document(result: StageResult, fingerprint: dict, command: list[str] | None = None,
             note: str | None = None) -> dict:
    """A whole result file around one observed stage."""
    run_id = new_run_id(fingerprint.get("hostname"))
    kind = provenance.SIMULATED if fingerprint.get("simulated") else PROVENANCE
    return {
        "schema": SCHEMA_VERSION, "run_id": run_id, "tool": {"name": "gpuprobe", "version": __version__},
        "started_at": result.started_at, "finished_at": utc_now(), "complete": True,
        "provenance": {"kind": kind, "command": redact_argv(list(command if command is not None else sys.argv)),
                       "source": "job", "note": note},
        "fingerprint": fingerprint,
        "config": {"device": None, "stages": [STAGE], "environment": recorded_environment(os.environ),
                   "job_environment": recorded_environment(allot.environ_of((result.data.get("roots") or [None])[0]))},
        "stages": [result.to_dict()],
        "summary": summarise([result]),
    }


def save(doc: dict, folder: Path) -> Path:
    return write_atomic(Path(folder) / f"{doc['run_id']}{SUFFIX}", doc)
