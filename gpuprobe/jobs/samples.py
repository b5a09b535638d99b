"""Repeated looks at a job, and the verdict they allow: stuck, spinning or progressing.

  stuck        the same stacks in every sample and (almost) no CPU: waiting on something
  spinning     the same stacks and busy CPU: a loop that never gets anywhere
  progressing  the stacks changed, or the job wrote output, between samples
With one sample only "idle" or "busy" can be said: nothing can show progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psutil

from gpuprobe.jobs import stacks as st

STUCK, SPINNING, PROGRESSING, IDLE, BUSY = "stuck", "spinning", "progressing", "idle", "busy"
BUSY_PERCENT = 50.0      # of one core, for the whole tree: a spin loop shows ~100
RUNNABLE_PERCENT = 10.0  # with the job runnable in most samples: busy, though starved of CPU


def tree_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` and all their descendants."""
    total = 0.0
    seen = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                total += sum(p.cpu_times()[:2])
            except psutil.Error:
                pass
    return total


@dataclass
class Sample:
    t: float                       # monotonic
    cpu_s: float                   # tree CPU seconds at this moment
    text: str                      # the stack dump ("" when none could be taken)
    method: str | None
    output_bytes: int | None = None   # size/position of the job's output, when known
    threads: list[st.Thread] = field(default_factory=list)
    running_threads: int = 0       # threads in state R at this moment

    @property
    def digest(self) -> tuple | None:
        return st.digest(self.threads) if self.threads else None

    def to_dict(self, t0: float) -> dict:
        main = st.main_thread(self.threads)
        return {"t": round(self.t - t0, 3), "cpu_s": round(self.cpu_s, 3), "method": self.method,
                "output_bytes": self.output_bytes, "running_threads": self.running_threads,
                "where": st.location(main)}


@dataclass
class Verdict:
    kind: str                      # stuck | spinning | progressing | idle | busy
    where: str | None              # innermost Python frame (and native frame) that says where
    cpu_percent: float | None      # tree CPU% between the first and last sample
    span_s: float
    samples: int
    reason: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def busiest(threads: list[st.Thread], thread_cpu: dict[str, float]) -> st.Thread | None:
    """The thread with the most CPU in the snapshot that has Python frames, else the main thread."""
    ranked = sorted((t for t in threads if t.python_frames), key=lambda t: -thread_cpu.get(str(t.tid), 0.0))
    if ranked and thread_cpu.get(str(ranked[0].tid), 0.0) > 0:
        return ranked[0]
    return st.main_thread(threads)


def classify(samples: list[Sample], thread_cpu: dict[str, float] | None = None,
             snapshot_cpu: float | None = None) -> Verdict:
    """The verdict over ``samples`` (oldest first). ``thread_cpu``: CPU% per thread id, to say
    which thread spins; ``snapshot_cpu``: tree CPU% measured apart, used with a single sample."""
    last = samples[-1]
    span = last.t - samples[0].t
    cpu = (last.cpu_s - samples[0].cpu_s) / span * 100 if span > 0 else snapshot_cpu
    # a blocking dump pauses the job while it reads it, so the span undercounts a spinner's CPU:
    # the snapshot's window (no dump running) counts as well
    busy = any(c is not None and c >= BUSY_PERCENT for c in (cpu, snapshot_cpu))
    if busy and (cpu is None or cpu < BUSY_PERCENT):
        cpu = snapshot_cpu
    # on a shared node a spinner gets only its share of a core, but it is runnable (state R)
    # whenever we look, where a waiter sleeps (S)
    runnable = sum(1 for s in samples if s.running_threads > 0)
    if not busy and len(samples) >= 2 and runnable * 2 >= len(samples) + 1 and (cpu or 0) >= RUNNABLE_PERCENT:
        busy = True
    spinner = busiest(last.threads, thread_cpu or {}) if busy else st.main_thread(last.threads)
    where = st.location(spinner)
    at = f" in {where}" if where else " (no stacks)"
    cpu_text = f"{cpu:.0f}% CPU" if cpu is not None else "CPU not measured"
    if len(samples) < 2:
        kind = BUSY if busy else IDLE
        return Verdict(kind, where, cpu, 0.0, 1,
                       f"one sample: {kind} at {cpu_text}{at}; --samples 3 tells stuck, spinning and progressing apart")
    digests = [s.digest for s in samples]
    outputs = [s.output_bytes for s in samples if s.output_bytes is not None]
    wrote = len(outputs) >= 2 and outputs[-1] != outputs[0]
    moved = any(d is not None for d in digests) and len({d for d in digests if d is not None}) > 1
    if wrote or moved:
        why = "the stacks changed" if moved else "it wrote output"
        return Verdict(PROGRESSING, where, cpu, span, len(samples),
                       f"progressing: {why} over {span:.1f} s ({len(samples)} samples, {cpu_text}){at}")
    same = "the same stacks" if any(d is not None for d in digests) else "no stacks, no output"
    kind = SPINNING if busy else STUCK
    return Verdict(kind, where, cpu, span, len(samples),
                   f"{kind}: {same} for {span:.1f} s ({len(samples)} samples) at {cpu_text}{at}")


def wait_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
