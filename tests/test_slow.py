"""Stalled or merely slow: a loop slowed by a failpoint is `slow` with a rate and an estimate;
one that stops is `hang`. Through the real runner with short timeouts."""

from __future__ import annotations

from tests.stalling_buffers import run_gpuprobe, stage

BASE = ["--device", "cpu", "--only", "--stage", "buffer", "--set", "buffer.capacities=[]", "--set", "buffer.capacity=1000",
        "--timeout", "4", "--stall-window", "1.5"]


def test_slow_sampling_is_slow_with_rate_and_estimate(tmp_path):
    code, doc = run_gpuprobe(BASE + ["--set", "buffer.samples=1000"], str(tmp_path),
                             failpoints="buffer.*.sample=delay:0.3")
    res = stage(doc, "buffer")
    assert code == 3 and res["status"] == "slow", res["reason"]
    d = res["data"]
    assert d["progress_mark"] == "buffer.cap1e3.sample" and d["total"] == 1000
    assert d["rate_per_s"] > 0 and d["eta_s"] > 0 and d["estimated_total_s"] > d["timeout_s"]
    assert "still making progress" in res["reason"]
    assert res["evidence"]["stacks"]["text"]  # evidence for slow as for hang


def test_slow_fill_is_slow_with_the_fill_progress(tmp_path):
    args = BASE + ["--set", "buffer.capacity=100000", "--set", "buffer.episode_length=20", "--set", "buffer.num_envs=1"]
    code, doc = run_gpuprobe(args, str(tmp_path), failpoints="buffer.*.fill=delay:0.3")
    res = stage(doc, "buffer")
    assert code == 3 and res["status"] == "slow", res["reason"]
    assert res["data"]["progress_mark"] == "buffer.cap1e5.fill" and res["data"]["total"] == 100000
    assert res["data"]["eta_s"] > 0


def test_stopped_sampling_is_a_hang_at_its_mark(tmp_path):
    code, doc = run_gpuprobe(BASE + ["--set", "buffer.samples=1000"], str(tmp_path),
                             failpoints="buffer.cap1e3.sample=sleep")
    res = stage(doc, "buffer")
    assert code == 3 and res["status"] == "hang"
    assert res["last_mark"] == "buffer.cap1e3.sample" and res["data"]["quiet_for_s"] > 1.5
    assert "failpoint_sleep" in res["evidence"]["stacks"]["text"]
