"""Stopping `gpuprobe run` (scancel, Ctrl-C) takes the stage in flight down and keeps the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

# not `from conftest import ROOT`: tests/pwm has a conftest too, and the name is ambiguous
ROOT = Path(__file__).resolve().parent.parent


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sigterm_kills_stage_and_keeps_finished_stages(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUPROBE_FAILPOINTS": "alloc.alloc@64MiB=hang"}
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "run", "--device", "cpu", "--stage", "alloc",
                             "--timeout", "60", "--results", str(tmp_path)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def hanging_stage():
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                if p.cpu_percent(interval=None) is not None and "forkserver" in " ".join(p.cmdline()):
                    kids = p.children()
                    if kids:
                        return kids[0]
            except psutil.Error:
                continue
        return None

    def finished_stages():
        return [[s["stage"] for s in json.loads(f.read_text())["stages"]] for f in tmp_path.glob("*.result.json")]

    # nvml and cuda saved, so the stage process found now is alloc's, hanging at its failpoint
    # (signalled earlier, under load, the run was stopped before alloc had started)
    _wait_for(lambda: finished_stages() == [["nvml", "cuda"]])
    stage = _wait_for(hanging_stage)
    # the stage process is in its own session: only our cleanup can stop it
    assert os.getsid(stage.pid) == stage.pid
    time.sleep(1.0)  # the runner notes the stage it launched right after the fork returns
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not stage.is_running() or stage.status() == psutil.STATUS_ZOMBIE
    doc = json.loads(next(tmp_path.glob("*.result.json")).read_text())
    assert doc["complete"] is False and "alloc" in doc["interrupted"]
    assert [s["stage"] for s in doc["stages"]] == ["nvml", "cuda"]  # finished stages kept


def test_a_stop_between_two_stages_names_the_stage_that_had_finished():
    """The stage name outlives its process; a stop after nvml ended and before cuda began
    said "during stage nvml" (the flaky form of the test above caught it)."""
    from gpuprobe.run.runner import Runner

    runner = object.__new__(Runner)  # only the stop's bookkeeping: no fingerprint, no results folder
    runner._current, runner._current_name, runner.save = None, "nvml", lambda complete: None
    runner._abandon_current(KeyboardInterrupt())
    assert runner.interrupted == "interrupted (KeyboardInterrupt) after stage nvml"
    runner._current_name = None
    runner._abandon_current(KeyboardInterrupt())
    assert runner.interrupted == "interrupted (KeyboardInterrupt) before the first stage"
