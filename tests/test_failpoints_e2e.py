"""Each failpoint action at an alloc mark, through the real CLI, runner and watchdog."""

from __future__ import annotations

import time

import psutil
import pytest

MARK = "alloc.alloc@64MiB"
ARGS = ["run", "--device", "cpu", "--only", "--stage", "alloc", "--timeout", "4", "--json"]


def run_with(gpuprobe_cli, action: str, extra_env: dict | None = None):
    env = {"GPUPROBE_FAILPOINTS": f"{MARK}={action}", **(extra_env or {})}
    start = time.monotonic()
    run = gpuprobe_cli(ARGS, env=env)
    return run, time.monotonic() - start


@pytest.mark.parametrize("action, status, code", [
    ("hang", "hang", 3), ("sleep", "hang", 3), ("deadlock", "hang", 3),
    ("raise", "fail", 1), ("crash", "crash", 1), ("exit", "crash", 1),
])
def test_failpoint_gives_status_and_last_mark(gpuprobe_cli, action, status, code):
    run, elapsed = run_with(gpuprobe_cli, action)
    stage = run.stage("alloc")
    assert stage["status"] == status, stage["reason"]
    assert run.returncode == code
    assert stage["last_mark"] == MARK
    if status == "hang":   # judged at the stage's own deadline (no wall-clock bound: the suite has no timed asserts)
        assert stage["data"]["timeout_s"] == 4 and stage["duration_s"] >= 4


@pytest.mark.parametrize("action, expected", [
    ("hang", ["failpoint_hang", "allocate_staged"]),
    ("sleep", ["failpoint_sleep", "allocate_staged", "nanosleep"]),   # native frame too
    ("deadlock", ["failpoint_deadlock", "allocate_staged"]),
])
def test_hang_stacks_name_the_function(gpuprobe_cli, action, expected):
    run, _ = run_with(gpuprobe_cli, action)
    stacks = run.stage("alloc")["evidence"]["stacks"]
    assert stacks["method"] == "py-spy --native"
    for name in expected:
        assert name in stacks["text"], f"{name} missing from stacks:\n{stacks['text']}"


def test_crash_keeps_native_evidence(gpuprobe_cli):
    run, _ = run_with(gpuprobe_cli, "crash")
    stage = run.stage("alloc")
    assert stage["reason"].startswith("killed by signal SIGSEGV; caused by the failpoint alloc.alloc@64MiB=crash")
    # faulthandler writes the Python stack of the crash into the stage log
    assert "allocate_staged" in stage["evidence"]["log_tail"]


def test_raise_keeps_traceback(gpuprobe_cli):
    run, _ = run_with(gpuprobe_cli, "raise")
    err = run.stage("alloc")["error"]
    assert err["type"] == "FailpointError"
    assert "allocate_staged" in err["traceback"]


def test_no_process_survives_including_grandchild(gpuprobe_cli):
    run, _ = run_with(gpuprobe_cli, "spawn,hang")
    stage = run.stage("alloc")
    assert stage["status"] == "hang"
    spawned = [log["data"]["failpoint_spawned_pid"] for log in stage["logs"] if "failpoint_spawned_pid" in log["data"]]
    assert spawned, stage["logs"]
    pids = spawned + [p["pid"] for p in stage["evidence"]["process"]["processes"]]
    assert len(pids) >= 2  # the stage and its grandchild were both seen
    for pid in pids:
        if psutil.pid_exists(pid):
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"pid {pid} survived"


def test_without_pyspy_faulthandler_gives_stacks(gpuprobe_cli):
    run, _ = run_with(gpuprobe_cli, "hang", {"GPUPROBE_PYSPY": "none"})
    stacks = run.stage("alloc")["evidence"]["stacks"]
    assert stacks["method"] == "faulthandler"
    assert "failpoint_hang" in stacks["text"] and "allocate_staged" in stacks["text"]
    assert "py-spy not found" in stacks["attempts"][0]["error"]


def test_pyspy_cannot_attach_falls_back(gpuprobe_cli, tmp_path):
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Operation not permitted (os error 1)' >&2\nexit 1\n")
    fake.chmod(0o755)
    run, _ = run_with(gpuprobe_cli, "sleep", {"GPUPROBE_PYSPY": str(fake)})
    stacks = run.stage("alloc")["evidence"]["stacks"]
    assert [a["method"] for a in stacks["attempts"]] == ["py-spy --native", "py-spy", "faulthandler"]
    assert "Operation not permitted" in stacks["attempts"][0]["error"]
    assert stacks["method"] == "faulthandler" and "failpoint_sleep" in stacks["text"]


def test_hang_evidence_has_process_and_gpu_snapshots(gpuprobe_cli):
    run, _ = run_with(gpuprobe_cli, "hang")
    ev = run.stage("alloc")["evidence"]
    main = ev["process"]["processes"][0]
    assert main["state"] in ("R", "S")
    # a busy loop (the "118% CPU" a user sees); on a loaded machine its share is the scheduler's
    # to give, so only "it ran" is certain: a stage asleep reads 0
    assert main["cpu_percent"] > 0
    assert ev["gpu"]["available"] is False and "NVML" in ev["gpu"]["reason"]
    assert ev["kill"]["signals"][0] == "SIGTERM" and ev["kill"]["survivors"] == []
