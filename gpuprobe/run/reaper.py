"""Kill a stage and everything it started: TERM to the group, a grace period, KILL.

A stage runs in its own session, so its process group holds the grandchildren too
(ninja, nvcc, prefetch workers). Descendants that made a session of their own are
killed one by one from the list taken before. A process still there after SIGKILL is
in uninterruptible sleep (D state, usually inside the driver): that node needs an admin.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

from gpuprobe.redact import redact_command

TERM_GRACE_S = 0.5
KILL_WAIT_S = 1.0


def is_alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead; only its parent has not reaped it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(pgid: int | None, procs: list[psutil.Process], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def _wait_gone(procs: list[psutil.Process], timeout: float, poll=None) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if is_alive(p)]
    while alive and time.monotonic() < deadline:
        if poll is not None:
            poll()  # let the real parent reap its child
        time.sleep(0.01)
        alive = [p for p in alive if is_alive(p)]
    return alive


def kill_tree(pid: int, pgid: int | None, extra: list[psutil.Process] | None = None, poll=None) -> dict:
    """Kill ``pid``'s group and descendants. Returns what was done and who survived."""
    procs: dict[int, psutil.Process] = {p.pid: p for p in (extra or [])}
    try:
        root = psutil.Process(pid)
        procs.setdefault(root.pid, root)
        for child in root.children(recursive=True):
            procs.setdefault(child.pid, child)
    except psutil.Error:
        pass
    if pgid is not None:  # the leader may be gone while its group lives on
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and os.getpgid(p.pid) == pgid:
                    procs.setdefault(p.pid, p)
            except (OSError, psutil.Error):
                continue
    targets = list(procs.values())
    report: dict = {"signals": []}
    _signal_all(pgid, targets, signal.SIGTERM)
    _signal_all(None, targets, signal.SIGCONT)  # a stopped process acts on TERM only once continued
    report["signals"].append("SIGTERM")
    alive = _wait_gone(targets, TERM_GRACE_S, poll)
    if alive:
        _signal_all(pgid, alive, signal.SIGKILL)
        report["signals"].append("SIGKILL")
        alive = _wait_gone(alive, KILL_WAIT_S, poll)
    report["survivors"] = [_describe(p) for p in alive]
    return report


def _describe(p: psutil.Process) -> dict:
    def read(path: str) -> str:
        try:
            with open(path) as fh:
                return fh.read().strip()
        except OSError:
            return ""

    stat = read(f"/proc/{p.pid}/stat")
    state = stat.rsplit(")", 1)[1].split()[0] if ")" in stat else "?"
    try:
        cmd = redact_command(p.cmdline())[:300]   # a survivor's arguments may hold credentials
    except psutil.Error:
        cmd = ""
    return {"pid": p.pid, "state": state, "wchan": read(f"/proc/{p.pid}/wchan"), "cmdline": cmd}


def kill_marked(mark: str, exclude: set[int] | frozenset[int] = frozenset(), rounds: int = 3) -> dict:
    """Kill every process that carries the run's mark (:mod:`gpuprobe.run.marks`), but ``exclude``.

    Several rounds: a daemon may fork again while the first round kills its parent.
    Returns the processes found (pid and command line) and who survived SIGKILL.
    """
    from gpuprobe.run import marks

    found: dict[int, dict] = {}
    survivors: list[dict] = []
    for _ in range(rounds):
        procs = []
        for pid in marks.find(mark, exclude):
            try:
                proc = psutil.Process(pid)
            except psutil.Error:
                continue
            procs.append(proc)
            found.setdefault(pid, _describe(proc))
        if not procs:
            break
        _signal_all(None, procs, signal.SIGTERM)
        _signal_all(None, procs, signal.SIGCONT)
        alive = _wait_gone(procs, TERM_GRACE_S)
        if alive:
            _signal_all(None, alive, signal.SIGKILL)
            alive = _wait_gone(alive, KILL_WAIT_S)
        survivors = [_describe(p) for p in alive]
    return {"found": list(found.values()), "survivors": survivors}
