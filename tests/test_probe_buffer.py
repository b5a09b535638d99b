"""The buffer stage through the real CLI, runner and child, on the CPU with small capacities."""

from __future__ import annotations

import pytest
import torch

from gpuprobe.run.options import resolve
from tests.stalling_buffers import mark_names, run_gpuprobe, stage

SMALL = ["--device", "cpu", "--only", "--stage", "buffer", "--set", "buffer.capacity=3000",
         "--set", "buffer.capacities=[1000]", "--set", "buffer.samples=5"]
STEPS = ("start", "construct", "mem_get_info.start", "mem_get_info", "storage_decision", "alloc.start", "alloc",
         "fill", "first_sample.start", "first_sample", "sample")


def test_buffer_passes_with_every_mark_and_a_storage_decision(tmp_path):
    code, doc = run_gpuprobe(SMALL + ["--storage", "cpu", "--pin-memory", "--prefetch", "2"], str(tmp_path))
    res = stage(doc, "buffer")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    names = mark_names(res)
    for tag in ("cap1e3", "cap3e3"):
        for step in STEPS:
            assert f"buffer.{tag}.{step}" in names, (tag, step)
    assert doc["config"]["options"]["buffer"]["prefetch"] == 2  # the flags land in the stage options
    cap = res["data"]["capacities"][-1]
    assert cap["completed"] and cap["samples"] == 5
    decision = cap["storage_decision"]
    assert decision["device"] == "cpu" and decision["policy"] == "cpu"
    assert decision["pinned"] is False and "not pinned: CUDA is not available" in decision["reason"]
    fills = [m for m in res["marks"] if m["name"] == "buffer.cap3e3.fill"]
    assert fills[-1]["data"]["done"] == fills[-1]["data"]["total"] == 3000
    assert "within budget" in res["reason"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_storage_cuda_without_cuda_is_a_skip_with_the_reason(tmp_path):
    code, doc = run_gpuprobe(SMALL + ["--storage", "cuda"], str(tmp_path))
    res = stage(doc, "buffer")
    assert code == 0 and res["status"] == "skip"
    assert "--storage cuda needs CUDA" in res["reason"] and "is_available() is False" in res["reason"]


def test_storage_arithmetic_pwm_sizes():
    """PWM's Ant sizes at capacity 1e6: what our Buffer needs, and where PWM's 2.5x rule puts it."""
    from gpuprobe_pwm.buffer import Buffer, decide_storage

    need = Buffer(1_000_000, 37, 8, horizon=16).storage_bytes()
    # 1e6 rows x 4 bytes x (37 + 8 + 1) = 184 MB, plus a small episode table (~1.4 MB)
    rows = 1_000_000 * 4 * (37 + 8 + 1)
    assert rows <= need < rows + 2_000_000
    where = {gb: decide_storage("auto", "cuda:0", need, free_bytes=int(gb * 1e9), cuda_available=True).device
             for gb in (141, 48, 0.47, 0.46)}
    assert 2.5 * need < 0.47e9 and 2.5 * need > 0.46e9
    # 2.5 x 185.4 MB = 463.5 MB: both a 48 GB and a 141 GB card keep it on the device
    assert where == {141: "cuda:0", 48: "cuda:0", 0.47: "cuda:0", 0.46: "cpu"}


def test_free_memory_48gb_simulated_decision_without_a_device_allocation(tmp_path):
    args = ["--device", "cpu", "--only", "--stage", "buffer", "--set", "buffer.capacities=[]", "--set", "buffer.samples=2",
            "--free-memory-gb", "48"]
    code, doc = run_gpuprobe(args, str(tmp_path))
    res = stage(doc, "buffer")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    cap = res["data"]["capacities"][-1]
    assert cap["capacity"] == 1_000_000
    sim = cap["simulated_storage_decision"]
    assert sim["device"] == "cuda:0" and sim["simulated"] and sim["free_bytes"] == 48_000_000_000
    assert "no device allocation was made" in sim["note"]
    assert cap["storage_decision"]["device"] == "cpu"  # what really happened here: host storage
    assert res["data"]["free_memory"]["simulated"] is True


def test_stalling_buffer_impl_is_a_hang_at_the_first_sample_with_its_frames(tmp_path):
    args = SMALL + ["--buffer-impl", "tests.stalling_buffers:DeadlockingBuffer", "--timeout", "4",
                    "--stall-window", "1.5", "--set", "buffer.capacities=[]"]
    code, doc = run_gpuprobe(args, str(tmp_path))
    res = stage(doc, "buffer")
    assert code == 3 and res["status"] == "hang"
    assert res["last_mark"] == "buffer.cap3e3.first_sample.start"
    stacks = res["evidence"]["stacks"]["text"]
    assert "_prefetch_worker_deadlock" in stacks and "stalling_buffers.py" in stacks  # its own frames
    # no storage decision, no CUDA: none of the known causes applies, and none is claimed
    assert res["signatures"] == []


def test_budget_zero_is_over_budget_and_bisect_reports_it(tmp_path):
    code, doc = run_gpuprobe(SMALL + ["--set", "buffer.budget_s=0"], str(tmp_path))
    res = stage(doc, "buffer")
    assert code == 1 and res["status"] == "fail" and "did not complete within its budget" in res["reason"]
    assert res["data"]["not_attempted"] == [3000] and res["data"]["capacities"][0]["over_budget"]
    code, doc = run_gpuprobe(SMALL + ["--set", "buffer.budget_s=0", "--bisect"], str(tmp_path))
    res = stage(doc, "buffer")
    assert code == 0 and res["status"] == "pass"
    assert res["data"]["bisect"]["largest_in_budget"] is None
    assert res["data"]["bisect"]["smallest_over_budget"] <= 1000


def test_run_flags_map_to_stage_options_and_set_wins():
    got = resolve(["buffer.prefetch=3"], {"prefetch": 12, "pin_memory": True, "storage": None,
                                          "model_size": "48M", "train_epoch": True, "bisect": None})
    assert got["buffer"] == {"prefetch": 3, "pin_memory": True}
    assert got["train"] == {"prefetch": 12, "pin_memory": True, "model_size": "48M", "first_epoch": True}
