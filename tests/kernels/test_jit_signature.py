"""The JIT-stall signature joins runtime evidence (JIT frames, high CPU, no new marks) with the static verdict."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest_paths import run
from gpuprobe import signatures

FP = {"hostname": "l40s-node01", "gpus": [{"index": 0, "name": "NVIDIA L40S", "compute_capability": "8.9"}]}
# py-spy dump --native of a process the driver is JIT-compiling for (frames as py-spy prints them)
JIT_STACKS = """Thread 0x7F2A1C4B6740 (active+gil): "MainThread"
    0x7f29d8a1b3c2 (libnvidia-ptxjitcompiler.so.575.57.08)
    0x7f29d8a0f117 (libnvidia-ptxjitcompiler.so.575.57.08)
    __cuda_CallJitEntryPoint (libnvidia-ptxjitcompiler.so.575.57.08)
    0x7f29e1c2a9d0 (libcuda.so.575.57.08)
    cuModuleLoadData (libcuda.so.575.57.08)
    _load_kernels (dflex/adjoint.py:1909)
    <module> (dflex/__init__.py:15)
"""
STATIC_JIT = {"verdict": "jit", "gpu": {"name": "L40S", "cc": "8.9", "driver": "580.65.06", "driver_cuda": "13.0"},
              "jit": [{"path": "/site/dflex/kernels/kernels.so", "reason": "no SASS for sm_89 ...", "ptx_bytes": 4_000_000}],
              "cannot_run": [], "remedies": []}


def recorded(status="hang", stacks=JIT_STACKS, cpu=118.0, kernels=STATIC_JIT) -> dict:
    ev = {"stacks": {"method": "py-spy --native", "text": stacks}, "process": {"cpu_percent_total": cpu}}
    if kernels is not None:
        ev["kernels"] = kernels
    return {"stage": "sim", "status": status, "device": "cuda", "data": {},
            "marks": [{"name": "sim.import_dflex", "t": 0.1, "data": {}}], "evidence": ev}


def ids(result) -> list[str]:
    return [m["id"] for m in signatures.match(result, FP)]


def test_fires_on_jit_frames_high_cpu_no_marks_and_a_static_jit_verdict():
    assert ids(recorded())[0] == "ptx-jit-stall-static"


@pytest.mark.parametrize("change", [
    {"kernels": None},                                                   # no static evidence: the generic rule only
    {"kernels": {**STATIC_JIT, "verdict": "native", "jit": []}},         # the stack is native: not this
    {"cpu": 3.0},                                                        # idle: not a JIT
    {"status": "slow"},                                                  # marks still arriving
    {"stacks": "Thread 1 (idle)\n    time.sleep (file_baton.py:42)\n"},  # no JIT frames
])
def test_quiet_without_each_part_of_the_evidence(change):
    assert "ptx-jit-stall-static" not in ids(recorded(**change))


def test_the_runner_records_the_static_verdict_with_a_hang(kernel_libs, tmp_path):
    """Through the real runner: a hang on a (simulated) L40S node whose stack has a PTX-only extension."""
    ext = tmp_path / "torch_extensions" / "op"
    ext.mkdir(parents=True)
    shutil.copy2(kernel_libs["ptx80"], ext / "op.so")
    results = tmp_path / "results"
    proc = run(["run", "--only", "--stage", "alloc", "--device", "cpu", "--timeout", "4", "--stall-window", "1.5",
                "--results", str(results)], tmp_path,
               {"GPUPROBE_FAKE_NVML": "l40s", "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),
                "GPUPROBE_FAILPOINTS": "alloc.*=hang"}, timeout=180)
    doc = json.loads(next(results.glob("*.result.json")).read_text())
    (stage,) = doc["stages"]
    assert stage["status"] == "hang", (proc.stderr, stage.get("reason"))
    kernels = stage["evidence"]["kernels"]
    assert kernels["gpu"]["cc"] == "8.9" and kernels["gpu"]["driver"] == "575.57.08"
    (bad,) = [b for b in kernels["cannot_run"] if b["path"].endswith("op.so")]
    assert bad["verdict"] == "ptx-newer-than-driver"    # nvcc 13's PTX on the field's 12.9 driver
