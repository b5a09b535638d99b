"""Known-issue rules: each fires on its evidence (through the real runner where the CPU allows,
else from a recorded StageResult) and stays quiet on healthy and unrelated results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpuprobe import signatures
from gpuprobe.signatures.catalog import RULES
from tests.stalling_buffers import run_gpuprobe, stage

IDS = {"buffer-host-storage-cpu-bound", "stale-kernel-build-lock", "ptx-jit-first-load", "cuda-context-init-stall",
       "pinned-host-alloc-stall", "stdout-block-buffered", "lock-file-wait", "prefetch-pool-stuck",
       "cpu-oversubscription", "dflex-numpy-2", "dflex-gym-missing", "dflex-kernels-not-writable",
       "dflex-no-compiler", "dflex-concurrent-kernel-build",   # the dflex rules fire on real runs: test_probe_sim.py
       "ptx-jit-stall-static"}
BUFFER = ["--device", "cpu", "--only", "--stage", "buffer", "--set", "buffer.capacities=[]", "--set", "buffer.capacity=2000",
          "--timeout", "4", "--stall-window", "1.5"]
FP = {"hostname": "l40s-node01", "gpus": [{"index": 0, "name": "NVIDIA L40S", "compute_capability": "8.9"}]}


def ids(result) -> list[str]:
    return [m["id"] for m in signatures.match(result, FP)]


def recorded(stage_name: str, status: str, marks: list[tuple[str, dict]], stacks: str = "", device: str = "cuda",
             cpu: float | None = None, data: dict | None = None) -> dict:
    ev = {"stacks": {"method": "py-spy --native", "text": stacks}}
    if cpu is not None:
        ev["process"] = {"cpu_percent_total": cpu}
    return {"stage": stage_name, "status": status, "device": device, "data": data or {},
            "marks": [{"name": n, "t": float(i), "data": d} for i, (n, d) in enumerate(marks)], "evidence": ev}


def test_every_shipped_rule_is_listed_by_the_command():
    assert {r.id for r in RULES} == IDS
    out = subprocess.run([sys.executable, "-m", "gpuprobe", "signatures", "--json"], capture_output=True, text=True)
    listed = json.loads(out.stdout)
    assert out.returncode == 0 and {r["id"] for r in listed} == IDS
    assert all(r["title"] and r["explanation"] and r["remedy"] for r in listed)


# -- (a) host storage, CPU-bound sampling: through the runner -----------------------------
def test_host_storage_hang_at_first_sample_fires_the_host_storage_rule(tmp_path):
    # 2.5 x 0.37 MB needs ~0.93 MB free: with 0.0005 GB (0.5 MB) PWM's rule picks the host
    code, doc = run_gpuprobe(BUFFER + ["--free-memory-gb", "0.0005", "--prefetch", "2"], str(tmp_path),
                             failpoints="buffer.*.first_sample.start=hang")
    res = stage(doc, "buffer")
    assert code == 3 and res["status"] == "hang" and res["last_mark"] == "buffer.cap2e3.first_sample.start"
    sim = next(m for m in res["marks"] if m["name"].endswith("simulated_storage_decision"))["data"]
    assert sim["device"] == "cpu" and sim["simulated"]
    assert ids(res) == ["buffer-host-storage-cpu-bound"]
    # the runner's own: first that a failpoint made this hang (a drill), then what the rule would say
    assert [m["id"] for m in res["signatures"]] == ["failpoint-drill", "buffer-host-storage-cpu-bound"]


def test_host_storage_rule_is_quiet_when_the_storage_stays_on_the_device(tmp_path):
    code, doc = run_gpuprobe(BUFFER + ["--free-memory-gb", "48"], str(tmp_path),
                             failpoints="buffer.*.first_sample.start=hang")
    res = stage(doc, "buffer")
    assert res["status"] == "hang" and "buffer-host-storage-cpu-bound" not in ids(res)


def test_host_storage_rule_from_recorded_slow_sampling_on_a_gpu():
    decision = {"device": "cpu", "compute_device": "cuda:0", "policy": "auto", "free_bytes": 400_000_000,
                "reason": "2.5 x 0.17 GiB = 0.43 GiB >= 0.37 GiB free on cuda:0: host storage (PWM's rule)"}
    res = recorded("buffer", "slow", [("buffer.cap1e6.storage_decision", decision),
                                      ("buffer.cap1e6.sample", {"done": 3, "total": 50})], cpu=118.0)
    assert ids(res) == ["buffer-host-storage-cpu-bound"]
    res["status"] = "pass"
    assert ids(res) == []


# -- (d) the first CUDA call / cudaMemGetInfo: through the runner -------------------------
def test_stall_in_the_free_memory_query_fires_the_context_rule(tmp_path):
    code, doc = run_gpuprobe(BUFFER, str(tmp_path), failpoints="buffer.*.mem_get_info.start=sleep")
    res = stage(doc, "buffer")
    assert res["status"] == "hang" and res["last_mark"] == "buffer.cap2e3.mem_get_info.start"
    assert ids(res) == ["cuda-context-init-stall"]


def test_context_rule_from_a_recorded_cuda_stage():
    res = recorded("cuda", "hang", [("cuda.import_torch", {}), ("cuda.is_available", {}), ("cuda.init", {}),
                                    ("cuda.context", {"gpu": 0})], stacks="cuDevicePrimaryCtxRetain (libcuda.so.1)")
    assert ids(res) == ["cuda-context-init-stall"]


# -- (b) stale lock: recorded (the runner path is in test_probe_sim.py) ---------------------
def test_stale_lock_rule_from_filebaton_stacks():
    stacks = "Thread 1 (idle): \"MainThread\"\n    FileBaton.wait (torch/utils/file_baton.py:47)\n    load_inline"
    res = recorded("sim", "hang", [("sim.lock_check", {}), ("sim.import_dflex", {"locks": 0, "stale_locks": []})],
                   stacks=stacks, cpu=0.5)
    assert ids(res) == ["stale-kernel-build-lock"]


# -- (c) PTX JIT: recorded, it needs a GPU -------------------------------------------------
def test_ptx_jit_rule_from_native_stacks_at_the_first_kernel():
    stacks = ("Thread 7 (active): \"MainThread\"\n    0x7f (libnvidia-ptxjitcompiler.so.575.57.08)\n"
              "    cuModuleLoadData (libcuda.so.1)\n    __cudaRegisterFatBinary")
    res = recorded("sim", "slow", [("sim.import_dflex", {"locks": 0, "stale_locks": []}), ("sim.kernel_build", {})],
                   stacks=stacks, cpu=100.0)
    assert ids(res) == ["ptx-jit-first-load"]
    # the same stall with no native stacks still points at the first kernel on a CUDA device
    assert "ptx-jit-first-load" in ids(recorded("cuda", "hang", [("cuda.context", {}), ("cuda.kernel", {})]))
    # ... but not on the CPU, where nothing is JIT-compiled by the driver
    assert ids(recorded("sim", "hang", [("sim.kernel_build", {})], device="cpu")) == []
    # dflex's kernels first run on the GPU in its first env: a stall there on CUDA points at the JIT
    assert ids(recorded("sim", "hang", [("sim.kernel_build", {}), ("sim.dflex_ant.reset", {})])) == ["ptx-jit-first-load"]
    assert ids(recorded("sim", "hang", [("sim.dflex_ant.reset", {})], device="cpu")) == []


# -- (e) pinned host allocation: recorded, it needs CUDA ------------------------------------
def test_pinned_alloc_rule_from_alloc_marks_and_stacks():
    res = recorded("alloc", "hang", [("alloc.alloc@64MiB", {}), ("alloc.pinned@64MiB", {"bytes": 64 << 20})])
    assert ids(res) == ["pinned-host-alloc-stall"]
    decision = {"device": "cpu", "pinned": True, "policy": "cpu", "reason": "storage='cpu' requested; pinned"}
    res = recorded("buffer", "hang", [("buffer.cap1e6.storage_decision", decision), ("buffer.cap1e6.alloc.start", {})],
                   stacks="cudaHostAlloc (libcudart.so.12)")
    assert ids(res) == ["pinned-host-alloc-stall"]


# -- quiet on healthy and unrelated results ---------------------------------------------------
@pytest.mark.parametrize("rule", sorted(IDS))
def test_every_rule_is_quiet_on_a_healthy_run(rule, tmp_path_factory):
    doc = _healthy_run(tmp_path_factory)
    for res in doc["stages"]:
        assert res["signatures"] == [] and rule not in ids(res)


def test_no_rule_claims_an_unrelated_hang():
    res = recorded("buffer", "hang", [("buffer.cap1e3.start", {}), ("buffer.cap1e3.construct", {})],
                   stacks="Thread 1\n    wait (threading.py:320)\n    my_own_code (mine.py:10)", cpu=0.0, device="cpu")
    assert ids(res) == []


_HEALTHY: dict = {}


def _healthy_run(factory) -> dict:
    if "doc" not in _HEALTHY:
        args = ["--device", "cpu", "--stage", "buffer", "--set", "buffer.capacities=[]", "--set", "buffer.capacity=2000",
                "--set", "buffer.samples=3", "--set", "sim.bundled_steps=3", "--set", "sim.bundled_num_envs=2",
                "--set", "alloc.cpu_max_mib=64", "--free-memory-gb", "0.0005"]
        code, doc = run_gpuprobe(args, str(factory.mktemp("healthy")))
        assert code == 0, [(s["stage"], s["status"], s.get("reason")) for s in doc["stages"]]
        _HEALTHY["doc"] = doc
    return _HEALTHY["doc"]
