"""Preflight from static evidence alone: a stack whose binaries cannot run here is refused, with no probe run."""

from __future__ import annotations

import json
import os
import shutil

from conftest_paths import ROOT, run


def _fingerprint(tmp_path, driver: str, cuda: str):
    fp = json.loads((ROOT / "tests" / "fixtures" / "l40s-node.fingerprint.json").read_text())
    fp["driver_version"], fp["cuda_driver_version"] = driver, cuda
    path = tmp_path / f"node-{driver}.json"
    path.write_text(json.dumps(fp))
    return path


def test_cuda13_torch_on_the_l40s_nodes_is_refused(cuda13_site, tmp_path):
    env = {"PYTHONPATH": f"{cuda13_site}{os.pathsep}{ROOT}", "GPUPROBE_FAKE_NVML": "l40s"}
    results = tmp_path / "empty-results"
    results.mkdir()
    proc = run(["preflight", "--results", str(results), "--json"], tmp_path, env)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    v = json.loads(proc.stdout)
    assert v["verdict"] == "known-incompatible" and v["live_run"] is None
    (static,) = [s for s in v["stages"] if s["stage"] == "kernels"]
    assert static["scope"] == "static" and static["status"] == "fail"
    assert "runtime-newer-than-driver" in v["reason"]
    assert any("cu129" in a for a in v["advice"])
    assert not list(results.glob("*.result.json"))   # nothing was probed
    # without the CUDA 13 torch (this CPU environment) the same node has no evidence: exit 0
    plain = run(["preflight", "--results", str(results), "--json"], tmp_path, {"GPUPROBE_FAKE_NVML": "l40s"})
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert not [s for s in json.loads(plain.stdout)["stages"] if s["stage"] == "kernels"]


def test_jit_only_stack_is_a_warning_with_its_cost(kernel_libs, tmp_path):
    ext = tmp_path / "torch_extensions" / "my_op"
    ext.mkdir(parents=True)
    shutil.copy2(kernel_libs["ptx80"], ext / "my_op.so")
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")}
    results = tmp_path / "r"
    results.mkdir()
    fp = _fingerprint(tmp_path, "580.65.06", "13.0")
    proc = run(["preflight", "--fingerprint", str(fp), "--results", str(results), "--json"], tmp_path, env)
    v = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (static,) = [s for s in v["stages"] if s["stage"] == "kernels"]
    assert static["status"] == "pass" and "jit" in static["summary"] and "of PTX on first load" in static["summary"]
    assert any(a.startswith("warning: static check: jit") for a in v["advice"])
    assert any("warm the JIT cache once per node" in a for a in v["advice"])
    # the same extension's PTX (ISA 9.0) is too new for the 575 driver: refused
    old = run(["preflight", "--fingerprint", str(_fingerprint(tmp_path, "575.57.08", "12.9")), "--results", str(results),
               "--json"], tmp_path, env)
    assert old.returncode == 4 and "ptx-newer-than-driver" in json.loads(old.stdout)["reason"]
