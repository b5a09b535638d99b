"""The rules for observed jobs: each fires on its evidence (a real job where one can be made
here, else a recorded observation) and stays quiet on a healthy one."""

from __future__ import annotations

import pytest

from gpuprobe import signatures
from jobs_harness import Job, job_cmd

pytestmark = pytest.mark.timeout(180)
FP = {"hostname": "l40s-node01", "gpus": [{"index": 0, "name": "NVIDIA L40S", "compute_capability": "8.9"}]}


def observed(stacks: str, kind: str = "stuck", status: str = "hang", **data) -> dict:
    """A job stage as observe.py records it (the fields the rules read)."""
    return {"stage": "job", "status": status, "provenance": "observed",
            "data": {"verdict": {"kind": kind, "where": "f (x.py:1)"}, **data},
            "evidence": {"stacks": {"method": "py-spy --native", "text": stacks}}}


def ids(result: dict) -> set[str]:
    return {m["id"] for m in signatures.match(result, FP)}


HEALTHY = """Process 1: python train.py
Thread 1 (active): "MainThread"
    update (pwm/algorithms/pwm.py:210)
    train (pwm/algorithms/pwm.py:400)
"""


def test_real_stuck_prefetch_pool_is_named(gpuprobe_cli, tmp_path):
    ready = tmp_path / "stuck"
    job = Job(job_cmd("prefetch_stuck.py", str(ready)), tmp_path / "job.out", wait_for=str(ready))
    try:
        run = gpuprobe_cli(["attach", str(job.pid), "--samples", "2"], results=tmp_path / "r")
        stage = run.stage("job")
        match = next((s for s in stage["signatures"] if s["id"] == "prefetch-pool-stuck"), None)
        assert match is not None, stage["evidence"]["stacks"]["text"][:3000]
        assert match["detail"].startswith("12 prefetch workers") and "first_batch" in match["detail"]
        assert job.alive()
    finally:
        job.stop()


def test_jit_in_the_driver_and_pinned_allocation_apply_to_jobs():
    jit = HEALTHY.replace("    update", "    cuModuleLoadData (libcuda.so.1)\n    __nvJitLinkComplete (libnvidia-ptxjitcompiler.so)\n    update")
    assert "ptx-jit-first-load" in ids(observed(jit, kind="spinning"))
    pinned = HEALTHY.replace("    update", "    cuMemHostAlloc (libcuda.so.1)\n    pin_memory (torch/_tensor.py:1)\n    update")
    assert "pinned-host-alloc-stall" in ids(observed(pinned))


def test_job_rules_stay_quiet_on_a_healthy_job():
    fits = {"allowed_cpus": 8.0, "busy_threads": 8, "cpu_percent": 790.0, "openmp_pool_threads_seen": 7,
            "spin_threads_seen": 0}
    unbuffered = {"block_buffered": False, "stdout": {"kind": "pipe"}}
    assert ids(observed(HEALTHY, kind="progressing", status="pass", cpu=fits, streams=unbuffered)) == set()


def test_oversubscription_fires_on_openmp_spin_at_full_allotment():
    """The second trigger: CPU% near allowed x 100 with OpenMP barrier frames, few runnable threads."""
    spin = HEALTHY.replace("    update", "    do_spin (libgomp.so.1)\n    gomp_team_barrier_wait_end (libgomp.so.1)\n    update")
    cpu = {"allowed_cpus": 2.0, "busy_threads": 3, "cpu_percent": 196.0, "openmp_pool_threads_seen": 31,
           "spin_threads_seen": 31, "summary": "..."}
    assert "cpu-oversubscription" in ids(observed(spin, kind="progressing", status="pass", cpu=cpu))
    cpu_idle = {**cpu, "cpu_percent": 20.0}
    assert "cpu-oversubscription" not in ids(observed(spin, kind="progressing", status="pass", cpu=cpu_idle))
