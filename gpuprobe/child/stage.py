"""The child side of a stage: marks, failpoints and the event stream.

A stage runs in a process of its own and tells the parent what it is doing through an
append-only JSON-lines file (one event per line, flushed at once):

    {"ev": "start",  "pid": 123, "stage": "alloc", "t": <monotonic>}
    {"ev": "mark",   "name": "alloc.alloc@64MiB", "t": <monotonic>, "data": {...}}
    {"ev": "log",    "level": "info", "msg": "...", "t": ...}
    {"ev": "result", "status": "pass" | "skip" | "fail", "data": {...}, "reason": ..., "error": {...}}

A file rather than a pipe: it survives the child, it needs no reader to make progress,
and the parent can read it with a deadline by polling. CLOCK_MONOTONIC is shared by all
processes on the host, so the parent can compare mark times with its own clock.

Probes use :class:`StageContext`; run a stage by hand with
``python -m gpuprobe.child.stage alloc --events /tmp/ev.jsonl --config '{"device": "cpu"}'``.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import signal
import sys
import time
import traceback
from typing import Any, TextIO

from gpuprobe.child import failpoints as fp
from gpuprobe.run.stages import BY_NAME


class StageSkipped(Exception):
    """Raise (via ``ctx.skip``) when a stage cannot run here; the reason is recorded."""


class EventWriter:
    def __init__(self, path: str):
        self._fh: TextIO = open(path, "a", encoding="utf-8", buffering=1)

    def emit(self, ev: str, **fields: Any) -> None:
        fields = {"ev": ev, "t": time.monotonic(), **fields}
        self._fh.write(json.dumps(fields, default=repr) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class StageContext:
    """What a probe's ``run(ctx)`` gets: its config and the means to report progress."""

    def __init__(self, stage: str, config: dict, events: EventWriter, failpoints: list[fp.Failpoint]):
        self.stage = stage
        self.config = config
        self.events = events
        self.failpoints = failpoints
        self.device: str = config.get("device", "cpu")    # "cpu" or "cuda"
        self.gpu: int | None = config.get("gpu")
        # the parent resolved and checked them (gpuprobe.run.options); by hand, a global "*" entry
        # still applies, and the more specific (this stage's) one wins
        options = config.get("options", {})
        self.options: dict = options.get("*", {}) | options.get(stage, {})
        self.marks: list[str] = []

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.gpu or 0}" if self.device == "cuda" else "cpu"

    def mark(self, name: str, **data: Any) -> None:
        """Record progress at ``<stage>.<name>``; failpoints fire here, after the mark is out."""
        full = f"{self.stage}.{name}"
        self.events.emit("mark", name=full, data=data)
        self.marks.append(full)
        for point in self.failpoints:
            if point.matches(full):
                extra = fp.fire(point, full)
                if extra:
                    self.events.emit("log", level="info", msg=f"failpoint {point.action} at {full}", data=extra)

    def progress(self, name: str, done: int | float, total: int | float | None = None, **data: Any) -> None:
        """A mark in a loop: the watchdog turns done/total into a rate and an estimate."""
        self.mark(name, done=done, total=total, **data)

    def log(self, msg: str, level: str = "info", **data: Any) -> None:
        self.events.emit("log", level=level, msg=msg, data=data)

    def skip(self, reason: str) -> StageSkipped:
        return StageSkipped(reason)


def run_stage(stage: str, config: dict, events_path: str, stacks_path: str | None = None) -> int:
    """Run one stage in this process and report through ``events_path``. Returns the exit code."""
    events = EventWriter(events_path)
    if stacks_path:
        # py-spy may be missing or denied ptrace: SIGUSR1 then dumps every thread's
        # Python stack from a C signal handler, even while this thread holds the GIL.
        stacks = open(stacks_path, "w", encoding="utf-8")
        faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True, chain=False)
    faulthandler.enable(file=sys.stderr, all_threads=True)  # crash stacks land in the stage log
    events.emit("start", pid=os.getpid(), stage=stage)
    try:
        points = fp.parse(config.get("failpoints", os.environ.get(fp.ENV, "")))
        ctx = StageContext(stage, config, events, points)
        module = importlib.import_module(BY_NAME[stage].module)
        data = module.run(ctx) or {}
        if "torch" in sys.modules and isinstance(data, dict):  # what torch really chose, beside the fingerprint's allotment
            torch = sys.modules["torch"]
            data.setdefault("torch_threads", {"intra_op": torch.get_num_threads(),
                                              "inter_op": torch.get_num_interop_threads()})
        # a one-line ``summary`` in the data is the stage's reason (mixed outcomes, e.g. sim)
        summary = data.get("summary") if isinstance(data.get("summary"), str) else None
        events.emit("result", status="pass", data=data, reason=summary)
    except StageSkipped as skip:
        events.emit("result", status="skip", reason=str(skip), data=getattr(skip, "data", {}))
    except BaseException as exc:  # the stage failed: keep the traceback, report, exit cleanly
        events.emit(
            "result", status="fail", reason=f"{type(exc).__name__}: {exc}", data=getattr(exc, "data", None) or {},
            error={"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()},
        )
    finally:
        events.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuprobe.child.stage", description="Run one gpuprobe stage.")
    parser.add_argument("stage", choices=sorted(BY_NAME))
    parser.add_argument("--events", required=True, help="JSON-lines event file to append to")
    parser.add_argument("--stacks", help="file for faulthandler's stacks on SIGUSR1")
    parser.add_argument("--config", default="{}", help="stage config as JSON")
    args = parser.parse_args(argv)
    return run_stage(args.stage, json.loads(args.config), args.events, args.stacks)


if __name__ == "__main__":
    sys.exit(main())
