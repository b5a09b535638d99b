"""The fork server: one warm interpreter that has imported torch but never touched CUDA.

``import torch`` costs seconds; paying it once per stage would make a run several
times slower than one import. The fork server imports the stages' heavy modules once,
then forks a fresh child per stage. The fork happens before any CUDA call, so each
stage creates its own CUDA context (a context does not survive fork; an import does).

Protocol on stdin/stdout, one JSON object per line:
  server -> parent   {"op": "ready", "imports": {"torch": 2.61}, "errors": {...}}
  parent -> server   {"op": "spawn", "id": 1, "stage": "alloc", "config": {...},
                      "events": PATH, "stacks": PATH, "log": PATH}
  server -> parent   {"op": "spawned", "id": 1, "pid": 4242}
  server -> parent   {"op": "exited", "pid": 4242, "returncode": 0 | -11}
The server exits when its stdin closes (the parent is gone).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import selectors
import signal
import sys
import time
import traceback

from gpuprobe.child.stage import EventWriter, run_stage


def die_with_parent() -> None:
    """Ask Linux to SIGKILL us when our parent dies (a parent killed with -9 cannot clean up)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's own cleanup still applies


def _send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _preload(modules: list[str], events: EventWriter) -> tuple[dict, dict]:
    imports, errors = {}, {}
    for name in modules:
        events.emit("mark", name=f"preload.import_{name}", data={})
        start = time.monotonic()
        try:
            importlib.import_module(name)
            imports[name] = round(time.monotonic() - start, 3)
        except BaseException as exc:  # a broken install is a finding, not a server crash
            errors[name] = f"{type(exc).__name__}: {exc}"
    events.emit("mark", name="preload.done", data={"imports": imports, "errors": errors})
    return imports, errors


def _fork_stage(req: dict) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 70  # EX_SOFTWARE, if anything below goes wrong before the stage reports
    try:
        os.setsid()  # own session and process group: a kill takes the grandchildren too
        die_with_parent()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        log_fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for env_name, value in (req.get("env") or {}).items():
            os.environ[env_name] = value
        code = run_stage(req["stage"], req["config"], req["events"], req.get("stacks"))
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _send({"op": "exited", "pid": pid, "returncode": code})


def serve(preload: list[str], events_path: str) -> int:
    events = EventWriter(events_path)
    events.emit("start", pid=os.getpid(), stage="preload")
    imports, errors = _preload(preload, events)
    events.close()
    _send({"op": "ready", "imports": imports, "errors": errors})
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    pending = b""  # raw reads, not readline(): buffered lines would hide from select()
    while True:
        ready = sel.select(timeout=0.02)
        _reap()
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return 0  # the parent is gone; stage children live in sessions of their own
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            req = json.loads(line)
            if req.get("op") == "spawn":
                _send({"op": "spawned", "id": req["id"], "pid": _fork_stage(req)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuprobe.child.forkserver")
    parser.add_argument("--preload", action="append", default=[], help="module to import once (repeatable)")
    parser.add_argument("--events", required=True, help="JSON-lines file for the preload marks")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches it
    die_with_parent()
    return serve(args.preload, args.events)


if __name__ == "__main__":
    sys.exit(main())
