"""Verdicts for real nvcc-built libraries, for compute capability 8.0, 8.9 and 9.0, with and without a driver.

The expected table is NVIDIA's compatibility rules applied by hand to what each build carries:
SASS sm_XY runs on X.Y and later minors of major X (sm_XYa on X.Y only); PTX compute_XY is
JIT-compiled on any GPU of capability X.Y or above; nvcc 13.0 writes PTX ISA 9.0, which a
CUDA 12.9 driver (575) cannot compile and a CUDA 13.0 driver (580) can.
"""

from __future__ import annotations

import pytest

from gpuprobe.kernels import check
from gpuprobe.kernels.discover import GIVEN, Candidate
from gpuprobe.kernels.scan import read_summary
from gpuprobe.kernels.verdict import Target, judge

NATIVE, JIT, NO_IMAGE, RUNTIME, PTX_NEWER = "native", "jit", "no-image", "runtime-newer-than-driver", "ptx-newer-than-driver"

# build -> verdict for cc 8.0, 8.9, 9.0 when the driver is not known (architecture only)
BY_ARCH = {
    #             8.0       8.9       9.0
    "sm89":       (NO_IMAGE, NATIVE,   NO_IMAGE),
    "sm90":       (NO_IMAGE, NO_IMAGE, NATIVE),
    "ptx80":      (JIT,      JIT,      JIT),
    "sm80_ptx90": (NATIVE,   NATIVE,   JIT),
    "multi":      (NO_IMAGE, NATIVE,   JIT),     # sm_75 + sm_86 SASS, compute_86 PTX
    "sm90a":      (NO_IMAGE, NO_IMAGE, NATIVE),
    "cudart13":   (NATIVE,   NATIVE,   NATIVE),  # sm_80, sm_89, sm_90 SASS
}
CCS = ((8, 0), (8, 9), (9, 0))


def _verdict(path, cc, driver=None, driver_cuda=None, runtime=None):
    s = read_summary(str(path))
    return judge(Candidate(str(path), GIVEN, "test", runtime=runtime), s, Target("test", cc, driver, driver_cuda))


@pytest.mark.parametrize("name", sorted(BY_ARCH))
def test_every_verdict_by_architecture(kernel_libs, name):
    got = tuple(_verdict(kernel_libs[name], cc).verdict for cc in CCS)
    assert got == BY_ARCH[name]


@pytest.mark.parametrize("name", ["ptx80", "sm80_ptx90", "multi"])
def test_ptx_from_cuda13_is_too_new_for_a_12_9_driver(kernel_libs, name):
    for cc, expected in zip(CCS, BY_ARCH[name]):
        old = _verdict(kernel_libs[name], cc, "575.57.08", "12.9")
        new = _verdict(kernel_libs[name], cc, "580.65.06", "13.0")
        assert old.verdict == (PTX_NEWER if expected == JIT else expected), (cc, old.reason)
        assert new.verdict == expected, (cc, new.reason)
    old = _verdict(kernel_libs["ptx80"], (8, 9), "575.57.08", "12.9")
    assert "PTX ISA 9.0" in old.reason and "up to 8.8" in old.reason


def test_jit_reason_names_the_work_and_the_cache(kernel_libs, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_CACHE_PATH", str(tmp_path / "nvcache"))
    monkeypatch.setenv("CUDA_CACHE_MAXSIZE", str(256 << 20))
    monkeypatch.setenv("GPUPROBE_KERNELS_CACHE", str(tmp_path / "scan.json"))
    report = check.check(Target("L40S", (8, 9), "580.65.06", "13.0"), [str(kernel_libs["ptx80"])], include_env=False)
    (b,) = report.binaries
    assert b.verdict == JIT and report.verdict == JIT
    assert "compute_80 PTX (ISA 9.0)" in b.reason and "1 PTX image" in b.reason
    assert str(tmp_path / "nvcache") in b.reason and "limit 256.0 MiB" in b.reason and "writable" in b.reason
    assert any("warm the JIT cache once per node" in r for r in report.remedies)
    assert any("CUDA_CACHE_MAXSIZE" in r for r in report.remedies)


def test_runtime_newer_than_the_named_driver(kernel_libs, tmp_path, monkeypatch):
    """libcudart13 links libcudart.so.13 (DT_NEEDED): CUDA 13 needs a 580 driver, 575 has CUDA 12.9."""
    monkeypatch.setenv("GPUPROBE_KERNELS_CACHE", str(tmp_path / "scan.json"))
    lib = str(kernel_libs["cudart13"])
    on_575 = check.check(check.target_from(gpu="L40S", driver="575.57.08"), [lib], include_env=False)
    (b,) = on_575.binaries
    assert b.verdict == RUNTIME and on_575.verdict == RUNTIME
    assert "CUDA 13" in b.reason and "12.9" in b.reason and ">= 580" in b.reason
    on_580 = check.check(check.target_from(gpu="L40S", driver="580.65.06"), [lib], include_env=False)
    assert on_580.binaries[0].verdict == NATIVE
    # the same library without a driver named: architecture only
    assert check.check(check.target_from(cc="8.9"), [lib], include_env=False).binaries[0].verdict == NATIVE


def test_stack_verdict_is_the_worst(kernel_libs, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPROBE_KERNELS_CACHE", str(tmp_path / "scan.json"))
    libs = [str(kernel_libs[n]) for n in ("sm89", "ptx80", "sm90")]
    r = check.check(check.target_from(cc="8.9"), libs, include_env=False)
    assert sorted(b.verdict for b in r.binaries) == [JIT, NATIVE, NO_IMAGE]
    assert r.verdict == NO_IMAGE
    assert any("rebuild it with -gencode arch=compute_89,code=sm_89" in x for x in r.remedies)


def test_scan_cache_is_keyed_by_path_size_and_mtime(kernel_libs, tmp_path, monkeypatch):
    import os
    import shutil

    monkeypatch.setenv("GPUPROBE_KERNELS_CACHE", str(tmp_path / "scan.json"))
    lib = tmp_path / "libk.so"
    shutil.copy2(kernel_libs["sm89"], lib)
    t = check.target_from(cc="8.9")
    first = check.check(t, [str(lib)], include_env=False)
    again = check.check(t, [str(lib)], include_env=False)
    assert (first.scanned, again.scanned, again.cache_hits) == (1, 0, 1)
    assert again.binaries[0].verdict == NATIVE
    shutil.copy2(kernel_libs["sm90"], lib)          # new content: new size and mtime
    os.utime(lib, ns=(1, 1))
    changed = check.check(t, [str(lib)], include_env=False)
    assert changed.scanned == 1 and changed.binaries[0].verdict == NO_IMAGE


def test_named_targets():
    assert check.target_from(gpu="L40S", driver="575.57.08").to_contract() == {
        "name": "L40S", "cc": "8.9", "driver": "575.57.08", "driver_cuda": "12.9"}
    assert check.target_from(gpu="NVIDIA H200").cc == (9, 0)
    assert check.target_from(gpu="A100").cc == (8, 0)
    with pytest.raises(check.CheckError, match="unknown GPU model"):
        check.target_from(gpu="Z9000")
    with pytest.raises(check.CheckError, match="not a compute capability"):
        check.target_from(cc="eight")
    fp = {"gpus": [{"name": "NVIDIA L40S", "compute_capability": "8.9"}], "driver_version": "575.57.08",
          "cuda_driver_version": "12.9"}
    assert check.target_from(fingerprint=fp).to_contract()["driver_cuda"] == "12.9"
    assert check.target_from(fingerprint=fp, driver="580.65.06").driver_cuda == "13.0"


def test_cuda_wheel_runtime_from_its_folder_or_its_wheel_name(tmp_path):
    """The layout torch 2.14.1+cu130's wheels install: nvidia/cu13/lib/*, nvidia/cudnn/lib/* from nvidia-cudnn-cu13."""
    from gpuprobe.kernels import discover

    site = tmp_path / "site-packages"
    (site / "nvidia_cudnn_cu13-9.24.0.43.dist-info").mkdir(parents=True)
    (site / "nvidia_cuda_runtime-13.0.96.dist-info").mkdir()
    runtimes, wheels = discover.cudart_versions(site), discover.wheel_majors(site)
    assert runtimes == {13: "13.0"} and wheels == {"cudnn": 13}
    c = discover.classify(str(site / "nvidia" / "cudnn" / "lib" / "libcudnn_ops.so.9"), site, None, "13.0", runtimes, wheels)
    assert (c.role, c.owner, c.runtime, c.in_stack) == ("cuda-wheel", "cudnn", "13.0", True)
    c = discover.classify(str(site / "nvidia" / "cu13" / "lib" / "libcublasLt.so.13"), site, None, None, runtimes, wheels)
    assert (c.owner, c.runtime, c.in_stack) == ("cu13", "13.0", False)   # a CPU torch never loads them
