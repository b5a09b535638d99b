"""gpuprobe watch: output passed through unchanged, stalls recorded, signals forwarded (real jobs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from jobs_harness import job_cmd

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent


def watch(args: list[str], results: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_") and k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "gpuprobe", "watch", "--results", str(results), *args],
                          capture_output=True, env=env, cwd=ROOT, timeout=150, **kw)


def docs(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.result.json"))]


def job_processes(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in a for a in p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_watch_kills_a_stuck_job_with_the_evidence_and_leaves_nothing(tmp_path):
    lock = tmp_path / "stale-build.lock"
    run = watch(["--stall", "3", "--on-stall", "kill", "--", *job_cmd("stuck_on_lock.py", str(lock))], tmp_path / "r")
    err = run.stderr.decode()
    assert run.returncode == 3, err
    assert run.stdout.decode() == "loading config\nbuilding kernels\n"   # unbuffered: nothing held back
    assert "stuck" in err and "wait_for_lock" in err and "lock-file-wait" in err
    [doc] = docs(tmp_path / "r")
    stage = doc["stages"][0]
    assert doc["provenance"]["kind"] == "observed" and stage["provenance"] == "observed"
    assert stage["stage"] == "job" and stage["status"] == "hang"
    assert stage["data"]["verdict"]["kind"] == "stuck" and "wait_for_lock" in stage["data"]["verdict"]["where"]
    assert stage["data"]["watch"]["stall_s"] == 3
    assert stage["data"]["streams"]["stdout"]["kind"] == "pipe" and not stage["data"]["streams"]["block_buffered"]
    assert "lock-file-wait" in {s["id"] for s in stage["signatures"]}
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in stage["data"]["pids"])
    assert job_processes(str(lock)) == []


def test_watch_passes_a_healthy_jobs_output_through_unchanged(tmp_path):
    cmd = job_cmd("healthy.py", "8")
    direct = subprocess.run(cmd, capture_output=True, timeout=60)
    run = watch(["--stall", "3", "--", *cmd], tmp_path / "r")
    assert run.returncode == 0, run.stderr
    assert run.stdout == direct.stdout and run.stdout.decode().splitlines()[-1] == "done"
    assert run.stderr == direct.stderr          # stderr too, and nothing of ours: there was no stall
    [doc] = docs(tmp_path / "r")
    assert doc["stages"][0]["status"] == "pass" and doc["provenance"]["kind"] == "observed"


def test_watch_says_a_silent_busy_job_is_spinning_and_where(tmp_path):
    run = watch(["--stall", "3", "--on-stall", "kill", "--", *job_cmd("spinning.py")], tmp_path / "r")
    err = run.stderr.decode()
    assert run.returncode == 3, err
    [doc] = docs(tmp_path / "r")
    verdict = doc["stages"][0]["data"]["verdict"]
    assert verdict["kind"] == "spinning", err
    assert "spin_until_converged" in verdict["where"] and "spinning" in err


def test_watch_evidence_mode_keeps_the_job_and_its_exit_code(tmp_path):
    script = "import time; print('a', flush=True); time.sleep(5); print('b'); raise SystemExit(5)"
    run = watch(["--stall", "2", "--", sys.executable, "-c", script], tmp_path / "r")
    assert run.returncode == 5 and run.stdout == b"a\nb\n"
    [doc] = docs(tmp_path / "r")                # the stall; a failed job is not recorded as a pass
    assert doc["stages"][0]["status"] == "hang"


def test_watch_forwards_sigterm_to_the_job(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "watch", "--results", str(tmp_path / "r"), "--",
                             *job_cmd("on_term.py")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert out == b"got signal 15: checkpoint saved\n"


def test_the_job_dies_with_a_killed_watcher(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env["PYTHONPATH"] = str(ROOT)
    marker = str(tmp_path / "orphan.lock")
    proc = subprocess.Popen([sys.executable, "-m", "gpuprobe", "watch", "--results", str(tmp_path / "r"), "--",
                             *job_cmd("stuck_on_lock.py", marker)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline() == b"loading config\n"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while job_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_processes(marker) == []


def test_watch_usage_errors(tmp_path):
    run = watch(["--", "no-such-command-xyz"], tmp_path / "r")
    assert run.returncode == 127 and run.stderr.decode().count("\n") == 1
    run = watch(["--stall", "soon", "--", "true"], tmp_path / "r")
    assert run.returncode == 2 and b"not a duration" in run.stderr
