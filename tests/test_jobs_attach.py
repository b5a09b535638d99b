"""gpuprobe attach: a running job's forensics, without stopping or killing it (real jobs, real py-spy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs_harness import Job, job_cmd

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def stuck_job(tmp_path):
    lock = tmp_path / "kernels.lock"
    job = Job(job_cmd("stuck_on_lock.py", str(lock), "--api-key=SECRET123"), tmp_path / "job.out", wait_for=str(lock))
    yield job
    job.stop()


def test_attach_names_the_waiting_function_and_leaves_the_job_running(gpuprobe_cli, stuck_job, tmp_path):
    results = tmp_path / "res"
    run = gpuprobe_cli(["attach", str(stuck_job.pid)], results=results)
    assert run.returncode == 3, run.stderr          # stuck: the same stacks, no CPU
    assert "stuck" in run.stdout and "wait_for_lock" in run.stdout, run.stdout
    assert stuck_job.alive(), "attach must leave the job running (not stopped, not killed)"
    doc = run.doc()
    assert doc["provenance"]["kind"] == "observed"
    stage = doc["stages"][0]
    assert stage["stage"] == "job" and stage["provenance"] == "observed" and stage["status"] == "hang"
    assert stage["data"]["verdict"]["kind"] == "stuck"
    assert "wait_for_lock" in stage["data"]["verdict"]["where"]
    assert stage["evidence"]["stacks"]["method"] in ("py-spy --native", "py-spy")
    ids = {s["id"] for s in stage["signatures"]}
    assert "lock-file-wait" in ids
    # stdout goes to a file without PYTHONUNBUFFERED: the two printed lines are still in the buffer
    assert "stdout-block-buffered" in ids
    streams = stage["data"]["streams"]
    assert streams["stdout"]["kind"] == "file" and streams["block_buffered"]
    assert streams["stdout"]["behind_bytes_max"] > 0
    assert (tmp_path / "job.out").read_text() == ""   # what the user sees: nothing, although it printed
    # the job's command line is recorded redacted, everywhere
    text = run.result_files()[0].read_text()
    assert "SECRET123" not in text and "--api-key=<redacted>" in text


def test_attach_counts_in_matrix_and_preflight(gpuprobe_cli, stuck_job, tmp_path):
    results = tmp_path / "res"
    assert gpuprobe_cli(["attach", str(stuck_job.pid)], results=results).returncode == 3
    matrix = gpuprobe_cli(["matrix", "--json"], results=results)
    assert matrix.returncode == 0, matrix.stderr
    assert '"job"' in matrix.stdout and "hang" in matrix.stdout
    pre = gpuprobe_cli(["preflight", "--json"], results=results)
    verdict = json.loads(pre.stdout)
    assert pre.returncode == 4 and verdict["verdict"] == "known-incompatible", pre.stdout
    assert [s["stage"] for s in verdict["stages"] if s["status"] == "hang"] == ["job"]


def test_preflight_without_job_evidence_does_not_ask_for_it(gpuprobe_cli, tmp_path):
    (tmp_path / "empty").mkdir()   # a named folder that is missing is an error, not "no evidence"
    pre = gpuprobe_cli(["preflight", "--json"], results=tmp_path / "empty")
    assert "job" not in [s["stage"] for s in json.loads(pre.stdout)["stages"]]


def test_attach_progressing_job_is_not_a_hang(gpuprobe_cli, tmp_path):
    job = Job(job_cmd("healthy.py", "30"), tmp_path / "job.out", unbuffered=True)
    try:
        run = gpuprobe_cli(["attach", str(job.pid), "--samples", "3", "--interval", "1.2"], results=tmp_path / "r")
        assert run.returncode == 0, run.stdout + run.stderr
        stage = run.stage("job")
        assert stage["data"]["verdict"]["kind"] == "progressing" and stage["status"] == "pass"
        assert "unbuffered (PYTHONUNBUFFERED=1)" in stage["data"]["streams"]["stdout"]["buffering"]
        assert "stdout-block-buffered" not in {s["id"] for s in stage["signatures"]}
    finally:
        job.stop()


def test_attach_spinning_job_says_spinning_and_where(gpuprobe_cli, tmp_path):
    job = Job(job_cmd("spinning.py"), tmp_path / "job.out")
    try:
        job.wait_for(str(tmp_path / "job.out"))
        run = gpuprobe_cli(["attach", str(job.pid), "--samples", "3", "--interval", "0.5"], results=tmp_path / "r")
        stage = run.stage("job")
        assert run.returncode == 3 and stage["data"]["verdict"]["kind"] == "spinning", run.stdout
        assert "spin_until_converged" in stage["data"]["verdict"]["where"]
        assert job.alive()
    finally:
        job.stop()


def test_oversubscribed_torch_job_is_named_with_its_numbers(gpuprobe_cli, tmp_path):
    """A torch job pinned to one CPU with 32 intra-op threads (taskset -c 0), for real."""
    ready = tmp_path / "job.out"
    job = Job(["taskset", "-c", "0", *job_cmd("oversubscribed.py", "32")], ready, unbuffered=True)
    try:
        import time
        deadline = time.monotonic() + 90
        while "threads 32" not in ready.read_text():
            assert job.proc.poll() is None and time.monotonic() < deadline, ready.read_text()
            time.sleep(0.2)
        run = gpuprobe_cli(["attach", str(job.pid), "--samples", "3", "--interval", "0.5"], results=tmp_path / "r")
        stage = run.stage("job")
        match = next((s for s in stage["signatures"] if s["id"] == "cpu-oversubscription"), None)
        assert match is not None, (stage["data"]["cpu"], run.stdout)
        cpu = stage["data"]["cpu"]
        assert cpu["allowed_cpus"] == 1.0 and stage["data"]["allotment"]["affinity"] == "0"
        assert cpu["threads_total"] >= 32 and cpu["busy_threads"] >= 2
        assert "for 1 allowed CPU" in match["detail"] and "torch.set_num_threads(1)" in match["detail"]
        assert "cpu-oversubscription" in run.stdout and "allowed CPU" in run.stdout
    finally:
        job.stop()


def test_attach_errors_are_one_line(gpuprobe_cli, tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = gpuprobe_cli(["attach", gone.stdout.strip()], results=tmp_path / "r")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "no process" in run.stderr
    run = gpuprobe_cli(["attach"], results=tmp_path / "r")
    assert run.returncode == 2 and "PID or --job" in run.stderr
    run = gpuprobe_cli(["attach", "--job", "999999"], results=tmp_path / "r")
    assert run.returncode == 2 and "no processes of job 999999" in run.stderr
