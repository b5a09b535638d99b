"""``gpuprobe kernels`` as a user runs it: the JSON contract, exit codes, a CUDA 13 torch on a 575 driver."""

from __future__ import annotations

import json
import os

import pytest

from conftest_paths import ROOT, run

# what each build is for cc 8.9 with no driver named (tests/kernels/test_verdicts.py has the rules)
AT_89 = {"sm89": "native", "sm90": "no-image", "ptx80": "jit", "sm80_ptx90": "native", "multi": "native",
         "sm90a": "no-image", "cudart13": "native"}


def test_json_contract_for_compiled_fixtures(kernel_libs, tmp_path):
    paths = [str(kernel_libs[n]) for n in AT_89]
    proc = run(["kernels", "--cc", "8.9", "--json", "--no-env", *paths], tmp_path)
    assert proc.returncode == 4, proc.stderr          # two of them cannot run on sm_89
    doc = json.loads(proc.stdout)
    assert set(doc) == {"gpu", "binaries", "verdict", "remedies"}
    assert doc["gpu"] == {"name": "compute capability 8.9", "cc": "8.9", "driver": None, "driver_cuda": None}
    by_name = {}
    for b in doc["binaries"]:
        assert set(b) == {"path", "sass", "ptx", "verdict", "reason"}
        assert all(a.startswith("sm_") for a in b["sass"]) and all(a.startswith("compute_") for a in b["ptx"])
        by_name[next(n for n in AT_89 if b["path"] == str(kernel_libs[n]))] = b
    assert {n: b["verdict"] for n, b in by_name.items()} == AT_89
    assert by_name["sm80_ptx90"]["sass"] == ["sm_80"] and by_name["sm80_ptx90"]["ptx"] == ["compute_90"]
    assert doc["verdict"] == "no-image" and doc["remedies"]


def test_jit_only_exits_0(kernel_libs, tmp_path):
    proc = run(["kernels", "--gpu", "H200", "--driver", "580.65.06", "--no-env", str(kernel_libs["ptx80"])], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "kernels: jit" in proc.stdout and "warm the JIT cache once per node" in proc.stdout


def test_cuda13_torch_on_a_575_driver(cuda13_site, tmp_path):
    """The field report's L40S nodes (575.57.08, CUDA 12.9) and the registry's torch==2.13.0 (CUDA 13)."""
    env = {"PYTHONPATH": f"{cuda13_site}{os.pathsep}{ROOT}"}
    proc = run(["kernels", "--gpu", "L40S", "--driver", "575.57.08", "--json"], tmp_path, env)
    assert proc.returncode == 4, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "runtime-newer-than-driver"
    bad = {os.path.relpath(b["path"], cuda13_site): b for b in doc["binaries"] if b["path"].startswith(str(cuda13_site))}
    assert bad["torch/lib/libtorch_cuda.so"]["verdict"] == "runtime-newer-than-driver"
    assert bad["nvidia/cu13/lib/libcudart.so.13"]["verdict"] == "runtime-newer-than-driver"
    assert "CUDA 13.0" in bad["torch/lib/libtorch_cuda.so"]["reason"]
    assert any("torch build that matches this driver" in r and "cu129" in r for r in doc["remedies"])
    assert any("driver >= 580" in r for r in doc["remedies"])
    human = run(["kernels", "--gpu", "L40S", "--driver", "575.57.08"], tmp_path, env)
    assert human.returncode == 4
    assert "runtime-newer-than-driver" in human.stdout and "cu129" in human.stdout
    # the same environment on a 580 driver runs natively
    ok = run(["kernels", "--gpu", "L40S", "--driver", "580.65.06", "--json"], tmp_path, env)
    assert json.loads(ok.stdout)["verdict"] == "native" and ok.returncode == 0


def test_fingerprint_file_names_the_gpu(kernel_libs, tmp_path):
    fp = ROOT / "tests" / "fixtures" / "l40s-node.fingerprint.json"
    proc = run(["kernels", "--fingerprint", str(fp), "--json", "--no-env", str(kernel_libs["ptx80"])], tmp_path)
    doc = json.loads(proc.stdout)
    assert doc["gpu"]["cc"] == "8.9" and doc["gpu"]["driver"] == json.loads(fp.read_text())["driver_version"]


@pytest.mark.parametrize("args, message", [
    (["--gpu", "Z9000"], "unknown GPU model"),
    (["--cc", "nine"], "not a compute capability"),
    (["--cc", "8.9", "/nonexistent/lib.so"], "no such file"),
])
def test_usage_errors_are_one_line(tmp_path, args, message):
    proc = run(["kernels", *args], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_not_a_binary_is_a_usage_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    proc = run(["kernels", "--cc", "8.9", str(f)], tmp_path)
    assert proc.returncode == 2 and "not an ELF file" in proc.stderr


def test_no_gpu_here_asks_for_one(tmp_path):
    proc = run(["kernels"], tmp_path, {"GPUPROBE_FAKE_NVML": "nolib"})
    assert proc.returncode == 2 and "--gpu MODEL" in proc.stderr
