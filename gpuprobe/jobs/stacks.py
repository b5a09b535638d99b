"""py-spy's text dumps read as data: processes, threads and frames, and what a verdict compares.

A frame line is ``    function (file.py:line)`` for Python and ``    function (libfoo.so)`` or
``    0x7f.. (libc.so.6)`` for native code. Two samples are "the same stacks" when every
thread has the same Python functions in the same order: line numbers move inside a spinning
loop, native frames move inside the interpreter, neither is progress.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

_PROCESS = re.compile(r"^Process (\d+): (.*)$")
_THREAD = re.compile(r'^Thread (0x[0-9a-fA-F]+|\d+) \(([^)]*)\)(?:: "(.*)")?')
_FRAME = re.compile(r"^\s+(.+?) \((.+)\)\s*$")
_PY_LOCATION = re.compile(r"^(.+\.pyw?):(\d+)$")

# OpenMP / BLAS worker pools: the frames a thread of torch's intra-op pool sits in
POOL_FRAMES = (r"gomp_thread_start", r"gomp_team_barrier_wait", r"gomp_barrier_wait", r"gomp_simple_barrier",
               r"do_spin", r"do_wait", r"__kmp_", r"kmp_flag", r"GOMP_parallel", r"blas_thread_server",
               r"mkl_\w*thread", r"omp_\w*wait")
SPIN_FRAMES = (r"do_spin", r"gomp_team_barrier_wait", r"gomp_barrier_wait", r"gomp_simple_barrier_wait",
               r"__kmp_wait", r"kmp_flag", r"__kmp_hyper_barrier", r"sched_yield")


@dataclass
class Frame:
    function: str
    where: str                 # "file.py:12" or "libc.so.6"

    @property
    def python(self) -> bool:
        return bool(_PY_LOCATION.match(self.where))

    def __str__(self) -> str:
        return f"{self.function} ({self.where})"


@dataclass
class Thread:
    pid: int
    tid: str
    state: str                 # py-spy's idle / active / gil
    name: str
    frames: list[Frame] = field(default_factory=list)   # innermost first, as py-spy prints

    @property
    def python_frames(self) -> list[Frame]:
        return [f for f in self.frames if f.python]

    @property
    def innermost_python(self) -> Frame | None:
        py = self.python_frames
        return py[0] if py else None

    def has(self, patterns: tuple[str, ...]) -> bool:
        return any(re.search(p, f.function) for f in self.frames for p in patterns)


def parse(text: str) -> list[Thread]:
    threads: list[Thread] = []
    pid = 0
    current: Thread | None = None
    for line in text.splitlines():
        m = _PROCESS.match(line)
        if m:
            pid, current = int(m.group(1)), None
            continue
        m = _THREAD.match(line)
        if m:
            current = Thread(pid, m.group(1), m.group(2), m.group(3) or "")
            threads.append(current)
            continue
        m = _FRAME.match(line)
        if m and current is not None:
            current.frames.append(Frame(m.group(1), m.group(2)))
    return threads


def digest(threads: list[Thread]) -> tuple:
    """What must differ between two samples for the job to have moved (see module doc)."""
    return tuple(sorted((t.pid, t.tid, tuple(f.function for f in t.python_frames)) for t in threads))


def main_thread(threads: list[Thread]) -> Thread | None:
    """The thread a user thinks of as "the job": MainThread of the first process with Python frames."""
    for t in threads:
        if t.name == "MainThread" and t.python_frames:
            return t
    return next((t for t in threads if t.python_frames), threads[0] if threads else None)


def is_stdlib(frame: Frame) -> bool:
    """threading.py, concurrent/futures/_base.py, <frozen importlib._bootstrap>: not the job's own code."""
    path = frame.where.rsplit(":", 1)[0]
    if path.startswith("<frozen"):
        return True
    top = path.split("/", 1)[0].removesuffix(".py")
    return top in sys.stdlib_module_names and "/site-packages/" not in path


def location(thread: Thread | None) -> str | None:
    """ "wait_for_lock (job.py:7), native clock_nanosleep (libc.so.6)" for a verdict; when the
    innermost Python frame is the standard library's, the job's own frame comes first."""
    if thread is None:
        return None
    py = thread.innermost_python
    native = thread.frames[0] if thread.frames and not thread.frames[0].python else None
    own = next((f for f in thread.python_frames if not is_stdlib(f)), None)
    parts = [str(py)] if py else []
    if py is not None and own is not None and own is not py and is_stdlib(py):
        parts = [str(own), f"waiting in {py}"]
    if native is not None:
        parts.append(f"native {native}")
    return ", ".join(parts) or None


def pool_threads(threads: list[Thread]) -> int:
    """Threads sitting in an OpenMP/BLAS worker pool (torch's intra-op workers)."""
    return sum(1 for t in threads if t.has(POOL_FRAMES))


def spin_threads(threads: list[Thread]) -> int:
    return sum(1 for t in threads if t.has(SPIN_FRAMES))
