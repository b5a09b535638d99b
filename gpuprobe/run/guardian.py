"""The guardian: a small process that outlives ``gpuprobe run`` to kill what the run left.

SIGKILL of ``gpuprobe run`` (an OOM kill, ``kill -9``, a batch system's hard stop) leaves
no chance to clean up in the run itself. The guardian, started at the beginning of the run
in a session of its own, holds the read end of a pipe whose write end only the run holds;
when the run is gone, for whatever reason, the read returns EOF, and the guardian kills
every process carrying the run's mark (:mod:`gpuprobe.run.marks`), daemons included.

It carries no mark itself, ignores the terminal's signals (Ctrl-C is the run's to handle),
writes nothing, and exits as soon as the sweep is done. After a normal end it finds
nothing left to kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from gpuprobe import paths
from gpuprobe.run import marks


def start(mark: str) -> subprocess.Popen | None:
    """Start the guardian for ``mark``; keep the returned Popen (its stdin) open for the run's life."""
    env = {k: v for k, v in os.environ.items() if k != marks.ENV}
    root = str(paths.package_root())   # the guardian imports this very gpuprobe
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        # stdout/stderr to /dev/null: a guardian holding the run's output pipes would keep a
        # caller that reads them (a test, a job wrapper) waiting after the run has ended
        return subprocess.Popen([sys.executable, "-m", "gpuprobe.run.guardian", mark], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env=env)
    except OSError:
        return None   # the run's own cleanup still applies; only a SIGKILL of the run is then uncovered


def stop(proc: subprocess.Popen | None) -> None:
    """The run ended normally: close the pipe (the guardian sweeps, finds nothing, exits)."""
    if proc is not None and proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0]:
        print("usage: python -m gpuprobe.run.guardian RUN_MARK (stdin: a pipe from the run)", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    from gpuprobe.run import reaper   # psutil, imported now: when the run dies, every moment counts

    while True:   # only EOF matters: the run never writes
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    reaper.kill_marked(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
