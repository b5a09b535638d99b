"""attach --job and watch against a real SLURM (the private node of tests/slurm_harness.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import slurm_harness
from slurm_harness import SlurmCluster

slurm_cluster = slurm_harness.slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(170)]

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "tests" / "fixtures" / "jobs"


def _wait_running(cluster: SlurmCluster, job_id: str, ready: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert time.monotonic() < deadline, cluster.run("scontrol", "show", "job", job_id).stdout + cluster.logs()
        time.sleep(0.2)


def test_attach_to_a_slurm_job_by_its_id(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    lock = tmp_path / "stale.lock"
    out = tmp_path / "job.out"
    sub = slurm_cluster.run("sbatch", "--parsable", "-p", slurm_cluster.partition, "-t", "5", "-c", "1",
                            f"--output={out}", f"--chdir={tmp_path}",
                            f"--wrap={sys.executable} {JOBS / 'stuck_on_lock.py'} {lock}", timeout=30)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    try:
        _wait_running(slurm_cluster, job_id, lock)
        res = slurm_cluster.run(sys.executable, "-m", "gpuprobe", "attach", "--job", job_id, "--results",
                                str(tmp_path / "r"), "--json", timeout=120, env={"PYTHONPATH": str(ROOT)})
        assert res.returncode == 3, res.stdout[-3000:] + res.stderr
        doc = json.loads(res.stdout)
        stage = doc["stages"][0]
        assert stage["data"]["job"]["job"] == job_id and stage["data"]["job"]["found_by"]
        assert "wait_for_lock" in (stage["data"]["verdict"]["where"] or ""), json.dumps({k: stage["data"][k] for k in ("job", "roots", "pids", "samples")}) + json.dumps(stage["evidence"]["stacks"])[:3000]
        # the batch script's shell and the Python it runs: the tree is followed from the top
        assert any("stuck_on_lock.py" in " ".join(p.get("cmdline", "") for p in [proc])
                   for proc in stage["evidence"]["process"]["processes"])
        assert slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() == "RUNNING"
    finally:
        slurm_cluster.run("scancel", job_id, timeout=10)
