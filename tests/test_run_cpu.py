"""A plain run on a machine without a GPU does useful work and says what it skipped."""

from __future__ import annotations

import json


def test_cpu_run_of_the_first_stages(gpuprobe_cli):
    run = gpuprobe_cli(["run", "--stage", "alloc", "--json"])
    assert run.returncode == 0, run.stderr
    doc = run.doc()
    assert doc["complete"] and doc["provenance"]["kind"] == "probed"
    assert doc["config"]["device"] == "cpu"
    assert "no GPU visible" in run.stderr  # says that it fell back to the CPU
    by = {s["stage"]: s for s in doc["stages"]}
    assert by["nvml"]["status"] == "skip" and "NVML" in by["nvml"]["reason"]
    assert by["cuda"]["status"] == "skip" and by["cuda"]["reason"]
    alloc = by["alloc"]
    assert alloc["status"] == "pass"
    assert [m["name"] for m in alloc["marks"]][:2] == ["alloc.host_memory", "alloc.alloc@64MiB"]
    assert alloc["data"]["allocations"] and alloc["data"]["pinned"]["probed"] is False
    assert json.loads(run.stdout)["run_id"] == doc["run_id"]


def test_show_reads_back_the_run(gpuprobe_cli, tmp_path):
    results = tmp_path / "r"
    gpuprobe_cli(["run", "--device", "cpu", "--only", "--stage", "alloc"], results=results)
    shown = gpuprobe_cli(["show", "latest", "--json"], results=results)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["stages"][0]["stage"] == "alloc"
    human = gpuprobe_cli(["show", "latest"], results=results)
    assert "alloc" in human.stdout and "pass" in human.stdout


def test_secrets_are_redacted(gpuprobe_cli):
    env = {"WANDB_API_KEY": "wandb-s3cret", "GPUPROBE_TOKEN": "tok-s3cret", "AWS_SECRET_ACCESS_KEY": "aws-s3cret",
           "HF_TOKEN": "hf-s3cret", "CUDA_VISIBLE_DEVICES": "0"}
    run = gpuprobe_cli(["run", "--device", "cpu", "--only", "--stage", "alloc"], env=env)
    text = run.result_files()[0].read_text()
    for value in ("wandb-s3cret", "tok-s3cret", "aws-s3cret", "hf-s3cret"):
        assert value not in text
    recorded = run.doc()["config"]["environment"]
    assert recorded["WANDB_API_KEY"] == "<redacted>" and recorded["CUDA_VISIBLE_DEVICES"] == "0"


def test_simulated_gpu_is_never_passed_off_as_probed(gpuprobe_cli):
    run = gpuprobe_cli(["run", "--stage", "alloc", "--json"], env={"GPUPROBE_FAKE_NVML": "h200"})
    doc = run.doc()
    assert doc["provenance"]["kind"] == "simulated" and "fake" in doc["provenance"]["note"]
    by = {s["stage"]: s for s in doc["stages"]}
    assert by["nvml"]["status"] == "pass" and by["nvml"]["data"]["devices"][0]["name"] == "NVIDIA H200"
    # NVML says there is a GPU, torch here has no CUDA: skip with the reason, never a pass
    assert by["cuda"]["status"] == "skip" and "no CUDA" in by["cuda"]["reason"]
    assert by["alloc"]["status"] == "skip"


def test_lost_gpu_fails_the_nvml_stage(gpuprobe_cli):
    run = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--json"], env={"GPUPROBE_FAKE_NVML": "lost"})
    stage = run.stage("nvml")
    assert stage["status"] == "fail" and "GPU is lost" in stage["reason"]
    assert run.returncode == 1
