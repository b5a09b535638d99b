"""A process that survives SIGKILL is recorded as hang-unkillable (no D state needed to test)."""

from __future__ import annotations

import subprocess
import sys

from gpuprobe.run import reaper


def test_survivor_after_sigkill_is_reported(monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    real_is_alive = reaper.is_alive
    # pretend the kernel cannot kill it (uninterruptible sleep in a driver)
    monkeypatch.setattr(reaper, "is_alive", lambda p: True if p.pid == proc.pid else real_is_alive(p))
    monkeypatch.setattr(reaper, "KILL_WAIT_S", 0.05)
    monkeypatch.setattr(reaper, "TERM_GRACE_S", 0.05)
    report = reaper.kill_tree(proc.pid, proc.pid, poll=proc.poll)
    assert report["signals"] == ["SIGTERM", "SIGKILL"]
    assert [s["pid"] for s in report["survivors"]] == [proc.pid]
    proc.wait(timeout=5)


def test_group_killed_even_when_leader_is_gone():
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess,sys; subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); print('x', flush=True)"],
        start_new_session=True, stdout=subprocess.PIPE, text=True)
    leader.stdout.readline()
    leader.wait(timeout=10)
    import psutil
    group = [p for p in psutil.process_iter() if _pgid(p.pid) == leader.pid]
    assert group, "the grandchild should still be alive in the leader's group"
    report = reaper.kill_tree(leader.pid, leader.pid)
    assert report["survivors"] == []
    assert all(not reaper.is_alive(p) for p in group)


def _pgid(pid):
    import os
    try:
        return os.getpgid(pid)
    except OSError:
        return None
