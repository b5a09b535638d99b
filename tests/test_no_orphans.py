"""No process of a run survives it: not after a timeout, not after SIGKILL of `gpuprobe run`,
with or without the fork server, and not a daemon (double fork + setsid) that left the
stage's process group and session.

Every process of a run carries the run's mark (GPUPROBE_RUN_MARK=<run id>); the tests look
for that mark in /proc, as the run's own reaper and guardian do. Judged by what is left, never
by how long the run took: the only time bound is the issue's "3 s later", polled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuprobe.child.failpoints import DAEMON_TAG
from gpuprobe.run import marks, reaper

ROOT = Path(__file__).resolve().parent.parent
SETUP_S = 240.0     # for torch's import on a loaded machine: a bound on getting there, not a verdict
GONE_WITHIN_S = 3.0


def _env(failpoints: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    return {**env, "PYTHONPATH": str(ROOT), "GPUPROBE_FAILPOINTS": failpoints, "GPUPROBE_PYSPY": "none"}


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = SETUP_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"gpuprobe run ended early with {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _run_id(results: Path) -> str | None:
    for path in results.glob("*.result.json"):
        try:
            return json.loads(path.read_text())["run_id"]
        except (OSError, ValueError, KeyError):
            return None   # being written: the next poll reads it
    return None


def _settled_daemon(run_id: str) -> int | None:
    """The failpoint's daemon once its double fork is done: the only process with its command
    line (the two before it have exited), re-parented away from the run, in a session it
    does not lead."""
    marked = marks.find(run_id)
    tagged = [p for p in marked if DAEMON_TAG in _cmdline(p)]
    if len(tagged) != 1:
        return None
    try:
        ppid = int(Path(f"/proc/{tagged[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return tagged[0] if os.getsid(tagged[0]) != tagged[0] and ppid not in marked else None
    except (OSError, ValueError, IndexError):
        return None


def _left_after(run_id: str, within: float = GONE_WITHIN_S) -> list[str]:
    deadline = time.monotonic() + within
    while True:
        left = marks.find(run_id)
        if not left or time.monotonic() >= deadline:
            return [f"{pid}: {_cmdline(pid)[:120]}" for pid in left]
        time.sleep(0.05)


@pytest.mark.parametrize("extra", [[], ["--no-fork-server"]], ids=["fork-server", "direct"])
def test_sigkill_of_run_mid_hang_leaves_no_process(tmp_path, extra):
    results = tmp_path / "results"
    # at the first allocation: a grandchild in the stage's group, a daemon outside it, then hang
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "run", "--device", "cpu", "--only", "--stage", "alloc",
                             "--timeout", "600", "--results", str(results), *extra],
                            env=_env("alloc.alloc@64MiB=spawn,daemon,hang"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = None
    try:
        run_id = _wait_for(lambda: _run_id(results), proc)
        daemon = _wait_for(lambda: _settled_daemon(run_id), proc)
        marked = marks.find(run_id)
        servers = [p for p in marked if "gpuprobe.child.forkserver" in _cmdline(p)]
        assert bool(servers) == (not extra), [_cmdline(p) for p in marked]   # the path we mean to test
        # the daemon left every group and session of the run: only the mark can find it
        sessions = {os.getsid(p) for p in marked if p != daemon} | {os.getsid(proc.pid)}
        assert os.getsid(daemon) not in sessions, [(p, os.getsid(p), _cmdline(p)[:70]) for p in marked]
        assert len(marked) >= 3, [_cmdline(p) for p in marked]   # the stage, its grandchild, the daemon
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _left_after(run_id) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if run_id:
            reaper.kill_marked(run_id)   # a failing test must not leave its processes to the next


def test_timeout_kills_a_daemonised_grandchild(gpuprobe_cli):
    # nvml marks nvml.init before touching NVML: no torch import, a direct child
    run = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--timeout", "2", "--json"],
                       env={"GPUPROBE_FAILPOINTS": "nvml.init=daemon,hang", "GPUPROBE_PYSPY": "none"})
    try:
        assert run.returncode == 3, run.stderr
        stage = run.stage("nvml")
        assert stage["status"] == "hang"
        strays = stage["evidence"]["strays_killed"]
        assert any(DAEMON_TAG in s["cmdline"] for s in strays["found"]) and strays["survivors"] == []
        assert _left_after(run.doc()["run_id"]) == []
    finally:
        reaper.kill_marked(run.doc()["run_id"])
