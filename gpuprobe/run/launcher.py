"""Starting stage processes: straight from a fresh interpreter, or forked from the fork server.

Both give a :class:`StageProcess`: a pid (the leader of its own process group) and a
non-blocking ``poll()``. Nothing here ever blocks without a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol


class StageProcess(Protocol):
    pid: int

    def poll(self) -> int | None:
        """Exit status once the process is gone (negative: killed by that signal)."""


class LaunchError(RuntimeError):
    pass


class DirectProcess:
    """``python -m gpuprobe.child.stage <stage>`` in a session of its own."""

    def __init__(self, stage: str, config: dict, events: Path, stacks: Path, log: Path, env: dict):
        cmd = [sys.executable, "-m", "gpuprobe.child.stage", stage, "--events", str(events),
               "--stacks", str(stacks), "--config", json.dumps(config)]
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True, env=env)
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()


class ForkedProcess:
    def __init__(self, server: "ForkServerClient", pid: int):
        self.server = server
        self.pid = pid

    def poll(self) -> int | None:
        self.server.pump()
        return self.server.exited.get(self.pid)


class ForkServerClient:
    """Parent side of :mod:`gpuprobe.child.forkserver`."""

    def __init__(self, preload: list[str], scratch: Path, env: dict):
        self.events = scratch / "preload.events.jsonl"
        self.stacks = scratch / "preload.stacks.txt"
        self.log = scratch / "forkserver.log"
        cmd = [sys.executable, "-m", "gpuprobe.child.forkserver", "--events", str(self.events)]
        for module in preload:
            cmd += ["--preload", module]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True, env=env)
        self.pid = self.proc.pid
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buf = b""
        self._next_id = 0
        self.ready: dict | None = None
        self.spawned: dict[int, int] = {}
        self.exited: dict[int, int] = {}

    def poll(self) -> int | None:
        """The server's own exit status (it is supervised like a stage while it imports)."""
        self.pump()
        return self.proc.poll()

    def pump(self) -> None:
        try:
            chunk = self.proc.stdout.read()
        except (BlockingIOError, ValueError):
            chunk = None
        if chunk:
            self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            op = msg.get("op")
            if op == "ready":
                self.ready = msg
            elif op == "spawned":
                self.spawned[msg["id"]] = msg["pid"]
            elif op == "exited":
                self.exited[msg["pid"]] = msg["returncode"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, stage: str, config: dict, events: Path, stacks: Path, log: Path, timeout: float = 10.0) -> ForkedProcess:
        if self.ready is None or not self.alive():
            raise LaunchError("fork server is not ready")
        self._next_id += 1
        req = {"op": "spawn", "id": self._next_id, "stage": stage, "config": config,
               "events": str(events), "stacks": str(stacks), "log": str(log)}
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise LaunchError(f"fork server: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if self._next_id in self.spawned:
                return ForkedProcess(self, self.spawned[self._next_id])
            if not self.alive():
                break
            time.sleep(0.005)
        raise LaunchError("fork server did not answer a spawn request")

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(timeout=2)
