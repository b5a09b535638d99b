"""Against a real SLURM (a private single node, started by tests/slurm_harness.py):
gpuprobe sweep and scripts/submit_job.sh with its preflight gate.

Jobs are kept tiny (CPU probes of 32 MiB, pwm_tiny for one epoch) and every wait is
bounded. Skipped, with the reason, only when slurm-wlm/munge are not installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import slurm_harness
from slurm_harness import SlurmCluster, _our_pids, start_cluster, stop_cluster

from gpuprobe import exitcodes
from gpuprobe.store.results import SUFFIX, read_result, write_atomic
from gpuprobe.run.sweep import SWEEP_ENV

slurm_cluster = slurm_harness.slurm_cluster   # the session fixture: one private SLURM for this file

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(170)]

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = ROOT / "scripts" / "submit_job.sh"
JOB_TIMEOUT_S = 60


def _gpuprobe(cluster: SlurmCluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return cluster.run(sys.executable, "-m", "gpuprobe.cli.main", *args, timeout=timeout)


def test_sweep_leaves_one_result_per_node_and_renders_them(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    results = tmp_path / "shared-results"
    res = _gpuprobe(slurm_cluster, "sweep", "--partition", slurm_cluster.partition, "--nodes", "1",
                    "--device", "cpu", "--only", "--stage", "alloc", "--set", "alloc.cpu_max_mib=32",
                    "--set", "alloc.pinned_max_mib=8", "--timeout", "60", "--results", str(results),
                    "--poll", "0.5", "--wait-timeout", "90", "--json")
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{slurm_cluster.logs()}"
    data = json.loads(res.stdout)
    assert data["job_state"] == "COMPLETED"
    assert [(n["node"], n["status"], n["exit_code"]) for n in data["nodes"]] == [(slurm_cluster.node, "pass", 0)]

    files = list(results.glob(f"*{SUFFIX}"))
    docs = [read_result(p) for p in files]
    ours = [d for d in docs if d["config"]["environment"].get(SWEEP_ENV) == data["sweep_id"]]
    assert len(ours) == 1 == len(files)                       # one result per node task, nothing else
    doc = ours[0]
    assert doc["complete"] and doc["fingerprint"]["hostname"].split(".")[0] == slurm_cluster.node
    assert doc["config"]["environment"]["SLURM_JOB_ID"] == data["job_id"]   # it really ran as that job
    assert [(s["stage"], s["status"]) for s in doc["stages"]] == [("alloc", "pass")]

    rows = {r["key"]["hostname"]: r for r in data["matrix"]["rows"]}   # the matrix of what the sweep wrote
    assert rows[slurm_cluster.node]["cells"]["alloc"]["summary"] == "pass 1/1"

    human = _gpuprobe(slurm_cluster, "sweep", "-p", slurm_cluster.partition, "--device", "cpu", "--only",
                      "--stage", "alloc", "--set", "alloc.cpu_max_mib=32", "--results", str(results), "--poll", "0.5",
                      "--wait-timeout", "90")
    assert human.returncode == 0, human.stderr
    assert "sweep: one row per node" in human.stdout and slurm_cluster.node in human.stdout
    assert ("gpuprobe matrix" in human.stdout) or ("per-node table only" in human.stdout)  # the node view follows
    assert re.search(r"job \d+: (PENDING|RUNNING)", human.stderr), human.stderr    # progress was shown
    assert len(list(results.glob(f"*{SUFFIX}"))) == 2


def test_sweep_unknown_partition_is_one_line_exit_2(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    res = _gpuprobe(slurm_cluster, "sweep", "-p", "no-such-partition", "--results", str(tmp_path), timeout=60)
    assert res.returncode == exitcodes.USAGE
    assert res.stderr.strip() == f"Error: unknown partition 'no-such-partition' (known: {slurm_cluster.partition})"


def test_sweep_no_wait_prints_the_job_id(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    res = _gpuprobe(slurm_cluster, "sweep", "--device", "cpu", "--only", "--stage", "alloc",
                    "--set", "alloc.cpu_max_mib=16", "--results", str(tmp_path / "r"), "--no-wait", timeout=60)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    assert job_id.isdigit()
    assert slurm_cluster.wait_job(job_id, timeout=JOB_TIMEOUT_S) == "COMPLETED"


# -- submit_job.sh ----------------------------------------------------------------------
def _l40s_field_report(results: Path) -> None:
    """What the field saw: PWM hung in the Buffer on an L40S node (reported by hand)."""
    fp = json.loads(subprocess.run([sys.executable, "-m", "gpuprobe", "info", "--json"], capture_output=True,
                                   text=True, timeout=60, check=True,
                                   env={**os.environ, "GPUPROBE_FAKE_NVML": "l40s"}).stdout)
    fp.pop("simulated", None)
    fp["hostname"] = "l40s-node07"
    doc = {"schema": 1, "run_id": "20251109T120000Z-l40s-node07-field", "tool": {"name": "gpuprobe"},
           "started_at": "2025-11-09T12:00:00Z", "finished_at": "2025-11-09T12:30:00Z", "complete": True,
           "provenance": {"kind": "reported", "command": [], "note": "PWM hung in the Buffer's first use"},
           "fingerprint": fp, "config": {"device": "cuda", "environment": {}},
           "stages": [{"stage": "buffer", "status": "hang", "gpu": 0, "duration_s": 1800.0, "marks": [],
                       "reason": "no output for 30 min at 118% CPU", "provenance": "reported"}],
           "summary": {"status": "hang", "exit_code": 3}}
    results.mkdir(parents=True, exist_ok=True)
    write_atomic(results / f"{doc['run_id']}{SUFFIX}", doc)


def _submit(cluster: SlurmCluster, tmp_path: Path, *args: str, fake: str) -> tuple[str, Path]:
    logs = tmp_path / "logs"
    res = cluster.run(str(SUBMIT), "-p", cluster.partition, "-g", "0", "-c", "1", "-t", "5",
                      "-l", str(logs), "-r", str(tmp_path / "results"), "-e", f"GPUPROBE_FAKE_NVML={fake}",
                      *args, timeout=60, env={"PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    assert job_id.isdigit(), res.stdout
    return job_id, logs


def _exit_code(cluster: SlurmCluster, job_id: str) -> str:
    out = cluster.run("scontrol", "show", "job", job_id, timeout=10).stdout
    return re.search(r"\bExitCode=(\S+)", out).group(1)


def test_submit_job_stops_on_a_known_bad_node(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    _l40s_field_report(tmp_path / "results")
    runs = tmp_path / "runs"
    job_id, logs = _submit(slurm_cluster, tmp_path, "single", "pwm_tiny", "pendulum", "42", "--",
                           "alg.max_epochs=1", f"general.logdir={runs}", fake="l40s")
    assert slurm_cluster.wait_job(job_id, timeout=JOB_TIMEOUT_S) == "FAILED"
    assert _exit_code(slurm_cluster, job_id) == "4:0"          # preflight's exit code is the job's
    out = (logs / f"pwm-pwm_tiny-pendulum-{job_id}.out").read_text()
    assert "preflight: known-incompatible (exit 4)" in out                     # preflight's own message
    assert "20251109T120000Z-l40s-node07-field" in out                        # ... with its evidence
    assert "submit_job: gpuprobe preflight exit 4" in out
    assert f"scontrol requeue {job_id}" in out and f"--exclude={slurm_cluster.node}" in out
    assert "submit_job: training" not in out
    assert not runs.exists()                                                  # nothing was built


def test_submit_job_trains_when_preflight_says_ok(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    _l40s_field_report(tmp_path / "results")   # evidence about L40S says nothing against an H200
    runs = tmp_path / "runs"
    job_id, logs = _submit(slurm_cluster, tmp_path, "single", "pwm_tiny", "pendulum", "7", "--",
                           "alg.max_epochs=1", "general.device=cpu", f"general.logdir={runs}", fake="h200")
    state = slurm_cluster.wait_job(job_id, timeout=120)
    out = (logs / f"pwm-pwm_tiny-pendulum-{job_id}.out").read_text()
    assert state == "COMPLETED", out
    assert "submit_job: gpuprobe preflight exit 0" in out and "submit_job: training" in out
    assert list(runs.glob("pwm_tiny_pendulum_seed7_*/final_policy.pt"))
    # by default the trainer runs under gpuprobe watch: its completion is evidence for the job stage
    assert "submit_job: under gpuprobe watch --stall 15m --on-stall evidence" in out
    jobs = [d for d in map(read_result, (tmp_path / "results").glob(f"*{SUFFIX}"))
            if d["stages"][0]["stage"] == "job"]
    assert [d["stages"][0]["status"] for d in jobs] == ["pass"]
    assert "gpuprobe_pwm.train" in " ".join(jobs[0]["stages"][0]["data"]["command"])


def test_submit_job_preflight_warn_trains_anyway_and_tells_the_trainer(slurm_cluster: SlurmCluster,
                                                                      tmp_path: Path) -> None:
    _l40s_field_report(tmp_path / "results")
    runs = tmp_path / "runs"
    job_id, logs = _submit(slurm_cluster, tmp_path, "--preflight", "warn", "--no-watch", "single", "pwm_tiny",
                           "pendulum", "8",
                           "--", "alg.max_epochs=1", "general.device=cpu", f"general.logdir={runs}", fake="l40s")
    state = slurm_cluster.wait_job(job_id, timeout=120)
    out = (logs / f"pwm-pwm_tiny-pendulum-{job_id}.out").read_text()
    assert state == "COMPLETED", out
    assert "submit_job: gpuprobe preflight exit 4" in out and "--preflight warn: training anyway" in out
    assert "general.preflight=warn" in out          # the trainer's own gate warns too instead of refusing
    assert "under gpuprobe watch" not in out         # --no-watch: the trainer runs bare
    assert list(runs.glob("pwm_tiny_pendulum_seed8_*/final_policy.pt"))


def test_submit_job_sweep_is_an_array_over_seeds(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    _l40s_field_report(tmp_path / "results")
    job_id, logs = _submit(slurm_cluster, tmp_path, "sweep", "pwm_tiny", "pendulum", "3", "5", fake="l40s")
    for task, seed in ((0, 3), (1, 5)):
        assert slurm_cluster.wait_job(f"{job_id}_{task}", timeout=JOB_TIMEOUT_S) == "FAILED"
        out = (logs / f"pwm-pwm_tiny-pendulum-{job_id}_{task}.out").read_text()
        assert f"seed {seed}" in out and "submit_job: gpuprobe preflight exit 4" in out


def test_submit_job_resubmits_elsewhere_excluding_the_node(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    _l40s_field_report(tmp_path / "results")
    job_id, logs = _submit(slurm_cluster, tmp_path, "--resubmit-elsewhere", "single", "pwm_tiny",
                           "pendulum", "1", fake="l40s")
    assert slurm_cluster.wait_job(job_id, timeout=JOB_TIMEOUT_S) == "FAILED"
    out = (logs / f"pwm-pwm_tiny-pendulum-{job_id}.out").read_text()
    match = re.search(r"submit_job: resubmitted as job (\d+) excluding " + slurm_cluster.node, out)
    assert match, out
    new_id = match.group(1)
    try:
        show = slurm_cluster.run("scontrol", "show", "job", new_id, timeout=10).stdout
        # the only node is excluded now: the job waits for a good node instead of looping on this one
        assert "JobState=PENDING" in show, show
        assert f"ExcNodeList={slurm_cluster.node}" in show, show
        assert "/pwm-pwm_tiny-pendulum-" in show and ".sbatch" in show      # the same script, reused
    finally:
        slurm_cluster.run("scancel", new_id, timeout=10)


def test_submit_job_dry_run_and_bad_input(tmp_path: Path) -> None:
    """No cluster needed: the script is printed, nothing is created, bad input is exit 2."""
    env = {**os.environ, "PYTHON": sys.executable}
    dry = subprocess.run([str(SUBMIT), "--dry-run", "-l", str(tmp_path / "logs"), "single", "pwm_5M",
                          "cartpole_swingup", "42"], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("#!/bin/bash\n") and f"--output={tmp_path}/logs/%x-%j.out" in dry.stdout
    assert f"PY={sys.executable}" in dry.stdout or "PY=/" in dry.stdout
    assert not (tmp_path / "logs").exists()
    assert subprocess.run(["bash", "-n"], input=dry.stdout, text=True, check=False).returncode == 0
    bad = subprocess.run([str(SUBMIT), "single", "pwm_5M", "cartpole_swingup", "x"], capture_output=True,
                         text=True, timeout=60, env=env, check=False)
    assert bad.returncode == 2 and "seed 'x'" in bad.stderr
    assert subprocess.run([str(SUBMIT), "--help"], capture_output=True, timeout=30, check=False).returncode == 0


def test_harness_runs_a_second_cluster_and_cleans_up(slurm_cluster: SlurmCluster) -> None:
    """Twice in a row (here: even side by side) and nothing left behind."""
    second = start_cluster()
    try:
        assert second.conf != slurm_cluster.conf
        assert f"{second.node} idle" in second.run("sinfo", "-h", "-N", "-o", "%N %T", timeout=10).stdout
    finally:
        stop_cluster(second)
    assert all(p.poll() is not None for p in second.procs.values())
    assert not second.root.exists() and _our_pids(second.conf) == []
    assert slurm_cluster.run("scontrol", "ping", timeout=10).stdout.count("UP") == 1   # the first one is fine
