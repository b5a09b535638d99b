"""The run's mark: every process a run starts carries ``GPUPROBE_RUN_MARK=<run id>`` in its
environment, and so does everything those start (environments are inherited).

A process group or the tree under a pid does not hold everything: a daemon (double fork +
setsid) leaves both, and when ``gpuprobe run`` itself is SIGKILLed nobody is left to walk
the tree. The mark still finds them: :func:`find` reads ``/proc/<pid>/environ`` (the
environment a process was started with, readable for our own user's processes), and
:func:`gpuprobe.run.reaper.kill_marked` kills what it finds.
"""

from __future__ import annotations

import os

ENV = "GPUPROBE_RUN_MARK"


def find(mark: str, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Pids of the live processes that carry ``mark`` (never this process, nor ``exclude``)."""
    needle = f"{ENV}={mark}".encode()
    me = os.getpid()
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:   # not Linux: the process-group kill still applies
        return out
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me or pid in exclude:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:   # gone, or another user's
            continue
        if needle in environ.split(b"\0"):   # a zombie's environ reads empty: it is already dead
            out.append(pid)
    return sorted(out)
