"""Failpoints: make the real probe code misbehave at a named mark.

``GPUPROBE_FAILPOINTS="buffer.first_sample=hang;cuda.context=raise"``

Each entry is ``<mark pattern>=<action>[:<arg>][,<action>...]``; the pattern is a mark
name or a shell-style pattern (``alloc.alloc@*``). Actions:

  hang         busy Python loop, forever (holds the GIL, 100% CPU)
  sleep[:S]    blocking C call with the GIL released (forever, or S seconds then go on)
  delay:S      sleep S seconds every time the mark is hit, then go on (a loop made slow)
  deadlock     two threads, each holding the lock the other waits for
  raise        raise FailpointError (the stage fails with a traceback)
  crash        SIGSEGV
  exit[:N]     os._exit(N) (default 3) without a result
  spawn        start a long-lived grandchild process, then go on (cleanup drills)
  daemon       start a daemon (double fork + setsid: out of the stage's process group and
               session, re-parented away), then go on; only the run's mark finds it

This is how the tests, and users running fire drills for their alerting, exercise the
real code paths with no GPU. The parent parses the spec before the run starts (a typo is
a usage error, never a stored result), and a run with any failpoint is a ``drill``.
"""

from __future__ import annotations

import fnmatch
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from gpuprobe.run.stages import STAGE_NAMES

ENV = "GPUPROBE_FAILPOINTS"
ACTIONS = ("hang", "sleep", "delay", "deadlock", "raise", "crash", "exit", "spawn", "daemon")
DAEMON_TAG = "gpuprobe-failpoint-daemon"   # in the daemon's command line, for people and tests


class FailpointError(RuntimeError):
    """Raised by the ``raise`` action."""


@dataclass(frozen=True)
class Failpoint:
    pattern: str
    action: str
    arg: str | None = None

    def matches(self, mark: str) -> bool:
        return mark == self.pattern or fnmatch.fnmatchcase(mark, self.pattern)


def parse(spec: str, source: str = ENV) -> list[Failpoint]:
    """Parse a failpoint spec; ValueError names the bad entry and where it came from."""
    points: list[Failpoint] = []
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        pattern, sep, actions = entry.partition("=")
        pattern = pattern.strip()
        if not sep or not pattern or not actions.strip():
            raise ValueError(f"invalid failpoint {entry!r} from {source}: expected MARK=ACTION")
        # a mark is STAGE.NAME: a pattern whose first part matches no stage would never fire
        head = pattern.split(".", 1)[0]
        dotted = "." in pattern or any(c in pattern for c in "*?[")
        if not dotted or not any(fnmatch.fnmatchcase(stage, head) for stage in STAGE_NAMES):
            raise ValueError(f"failpoint {entry!r} from {source} names no mark: marks are STAGE.NAME, "
                             f"STAGE one of {', '.join(STAGE_NAMES)} (docs/PROBES.md lists them)")
        for item in actions.split(","):
            action, _, arg = item.strip().partition(":")
            if action not in ACTIONS:
                raise ValueError(f"unknown failpoint action {action!r} in {entry!r} from {source}; known: {', '.join(ACTIONS)}")
            if action == "delay" and not arg:
                raise ValueError(f"failpoint 'delay' needs seconds (delay:0.5) in {entry!r} from {source}")
            if arg:
                _check_arg(action, arg, entry, source)
            points.append(Failpoint(pattern, action, arg or None))
    return points


def _check_arg(action: str, arg: str, entry: str, source: str) -> None:
    if action in ("sleep", "delay"):
        try:
            seconds = float(arg)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"invalid seconds {arg!r} in {entry!r} from {source}: a finite number, 0 or more")
    elif action == "exit":
        if not arg.isdigit() or int(arg) > 255:
            raise ValueError(f"invalid exit code {arg!r} in {entry!r} from {source}: 0 to 255")
    else:
        raise ValueError(f"failpoint {action!r} takes no argument, got {arg!r} in {entry!r} from {source}")


# -- the actions: named functions, so that stacks say what happened ---------------
def failpoint_hang() -> None:
    while True:  # busy loop on purpose: looks like "118% CPU, no output"
        pass


def failpoint_sleep(seconds: float | None) -> None:
    if seconds is not None:
        time.sleep(seconds)
        return
    while True:
        time.sleep(3600)


def failpoint_deadlock() -> None:
    first, second = threading.Lock(), threading.Lock()
    first_held = threading.Event()

    def other_thread() -> None:
        with second:
            first_held.wait()
            with first:  # waits for the main thread forever
                pass

    worker = threading.Thread(target=other_thread, name="failpoint-deadlock", daemon=True)
    with first:
        worker.start()
        time.sleep(0.05)  # let the worker take `second`
        first_held.set()
        with second:  # waits for the worker forever
            pass


def failpoint_crash() -> None:
    import faulthandler

    faulthandler._sigsegv()


def failpoint_spawn() -> int:
    # A grandchild in our process group, like ninja or a prefetch worker would be.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(3600)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc.pid


def failpoint_daemon() -> int:
    # The classic daemon: fork, setsid, fork again; the middle process exits, so the daemon is
    # re-parented away, in a session and group of its own, where killing the stage's process
    # group and descendants cannot reach it. Its pid comes back on a pipe.
    code = (f"# {DAEMON_TAG}\n"   # first: command lines are often shown cut short
            "import os, sys, time\n"
            "if os.fork(): os._exit(0)\n"
            "os.setsid()\n"
            "if os.fork(): os._exit(0)\n"
            "sys.stdout.write(f'{os.getpid()}\\n'); sys.stdout.flush()\n"
            "null = os.open(os.devnull, os.O_RDWR)\n"
            "for fd in (0, 1, 2): os.dup2(null, fd)\n"
            "while True: time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    line = proc.stdout.readline()
    proc.stdout.close()
    proc.wait()
    return int(line) if line.strip().isdigit() else -1


def fire(point: Failpoint, mark: str) -> dict | None:
    """Carry out ``point`` at ``mark``. Returns data to record, for actions that go on."""
    if point.action == "hang":
        failpoint_hang()
    elif point.action == "sleep":
        failpoint_sleep(float(point.arg) if point.arg else None)
    elif point.action == "delay":
        failpoint_sleep(float(point.arg))
    elif point.action == "deadlock":
        failpoint_deadlock()
    elif point.action == "raise":
        raise FailpointError(f"failpoint 'raise' at mark {mark}")
    elif point.action == "crash":
        failpoint_crash()
    elif point.action == "exit":
        os._exit(int(point.arg or 3))
    elif point.action == "spawn":
        return {"failpoint_spawned_pid": failpoint_spawn()}
    elif point.action == "daemon":
        return {"failpoint_daemon_pid": failpoint_daemon()}
    return None
