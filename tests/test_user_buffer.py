"""The user's own Buffer, unchanged: a TD-MPC2/PWM-style torchrl Buffer through --buffer-impl,
with --free-memory-gb / --emulate-gpu making it see a GPU on this CPU machine (real torchrl)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchrl", reason="torchrl is in the [test] extra (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
USER_BUFFER = "tests/fixtures/user_buffers/tdmpc2_style.py:Buffer"
SMALL = ["--set", "buffer.capacities=[]", "--set", "buffer.capacity=1e5", "--set", "buffer.samples=5",
         "--set", "buffer.num_envs=8"]

pytestmark = pytest.mark.timeout(240)


def probe(tmp_path: Path, *flags: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", "run", "--device", "cpu", "--only", "--stage", "buffer",
                           "--buffer-impl", USER_BUFFER, *SMALL, *flags, "--results", str(out), "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=230)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)["stages"][0]


def test_upstream_style_buffer_fails_on_a_cpu_machine_without_emulation(tmp_path):
    """What the user meets today: the Buffer asks torch.cuda.mem_get_info() unconditionally."""
    code, stage = probe(tmp_path)
    assert code == 1 and stage["status"] == "fail"
    assert "Torch not compiled with CUDA enabled" in stage["reason"]


def test_user_buffer_with_free_memory_46gb_passes_with_its_own_storage_decision(tmp_path):
    code, stage = probe(tmp_path, "--free-memory-gb", "46")
    assert code == 0 and stage["status"] == "pass", stage.get("reason")
    assert stage["provenance"] == "simulated"
    [cap] = stage["data"]["capacities"]
    decision = cap["storage_decision"]
    # 100k steps x (37 + 8 + 1 floats + an int64 episode id) = 19.2 MB: 2.5x fits in 46 GB -> the
    # Buffer itself puts its storage on the (emulated) GPU
    assert decision["device"] == "cuda" and decision["bytes"] == 19_200_000 and decision["simulated"]
    assert decision["free_bytes_seen"] == 46_000_000_000 and decision["mem_get_info_calls"] == 1
    mark = next(m for m in stage["marks"] if m["name"] == "buffer.cap1e5.storage_decision")["data"]
    assert mark["device"] == "cuda" and mark["compute_device"] == "cuda:0"
    assert cap["completed"] and cap["samples"] == 5
    assert stage["data"]["emulation"]["style"] == "episode"


def test_user_buffer_on_a_nearly_full_gpu_falls_back_to_pinned_host_storage(tmp_path):
    # 2.5 x 19.2 MB = 48 MB > 40 MB free: the Buffer's own rule picks host memory, and torchrl
    # pins what it samples from it (pin_memory=True): both run here on the CPU
    code, stage = probe(tmp_path, "--free-memory-gb", "0.04")
    assert code == 0, stage.get("reason")
    decision = stage["data"]["capacities"][0]["storage_decision"]
    assert decision["device"] == "cpu" and decision["pin_requests"] > 0


def test_emulate_gpu_l40s_answers_as_a_fresh_l40s_context(tmp_path):
    code, stage = probe(tmp_path, "--emulate-gpu", "L40S")
    assert code == 0, stage.get("reason")
    emu = stage["data"]["capacities"][0]["emulation"]
    from gpuprobe.node.fakes import SCENARIOS

    l40s = SCENARIOS["l40s"].gpus[0]       # the NVML fake's L40S: nvidia-smi's 46068 MiB
    assert emu["gpu"]["name"] == "NVIDIA L40S" and emu["gpu"]["total_bytes"] == l40s.memory_total
    assert emu["mem_get_info_calls"][0] == {"free": l40s.memory_total - l40s.memory_used,
                                           "total": l40s.memory_total}
    assert stage["data"]["capacities"][0]["storage_decision"]["device"] == "cuda"


def test_emulation_answers_with_torchs_own_shapes():
    """mem_get_info's (free, total) ints and the device-property names torch documents."""
    import torch

    from gpuprobe.probes import _emulate

    with _emulate.Emulation(_emulate.model("H200", None)) as rec:
        free, total = torch.cuda.mem_get_info()
        props = torch.cuda.get_device_properties(0)
        assert torch.cuda.is_available() and torch.cuda.device_count() == 1
        t = torch.zeros(1024, 1024, device="cuda")          # 4 MiB "on the GPU": lands on the CPU
        pinned = torch.ones(10).pin_memory()
    assert isinstance(free, int) and isinstance(total, int) and free < total
    assert props.name == "NVIDIA H200" and (props.major, props.minor) == (9, 0) and props.total_memory == total
    assert t.device.type == "cpu" and rec.allocations[0]["requested"] == "cuda" and pinned.device.type == "cpu"
    assert not torch.cuda.is_available()                    # uninstalled on exit
    with pytest.raises(ValueError, match="known models"):
        _emulate.model("K80", None)
