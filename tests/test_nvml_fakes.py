"""The NVML wrapper against named driver scenarios: placeholders, never crashes."""

from __future__ import annotations

import pytest

from gpuprobe.node import fingerprint
from gpuprobe.node.nvml import NotAvailable, Nvml


def test_h200_scenario():
    with Nvml(scenario="h200") as nv:
        info = nv.device_info(0)
        assert info["name"] == "NVIDIA H200" and info["compute_capability"] == "9.0"
        assert info["memory_total_bytes"] > 140 * 10**9
        snap = nv.snapshot(0)
        assert snap["ecc_uncorrected_volatile"] == 0 and snap["processes"] == []


def test_l40s_fields_not_supported_become_placeholders():
    with Nvml(scenario="l40s") as nv:
        assert nv.driver_version() == "575.57.08" and nv.cuda_driver_version() == "12.9"
        snap = nv.snapshot(0)
        assert snap["ecc_uncorrected_volatile"] == {"not_available": "NVML: Not Supported"}


def test_lost_gpu_is_a_typed_not_available():
    with Nvml(scenario="lost") as nv:
        assert nv.device_count() == 1
        assert nv.device_info(0)["name"] == {"not_available": "NVML: GPU is lost"}
        assert isinstance(nv.call("nvmlDeviceGetName", nv.handle(0)), NotAvailable)


def test_no_library():
    nv = Nvml(scenario="nolib")
    why = nv.init()
    assert isinstance(why, NotAvailable) and "Library Not Found" in why.reason
    assert not nv.ok and isinstance(nv.device_count(), NotAvailable)


def test_unknown_scenario_names_the_source():
    with pytest.raises(ValueError, match="GPUPROBE_FAKE_NVML"):
        Nvml(scenario="a100")


def test_fingerprint_from_fake_knows_it_is_simulated():
    fp = fingerprint.take(Nvml(scenario="l40s").__enter__())
    assert fp.simulated == "l40s"
    key = fp.stack_key()
    assert key["gpu_model"] == "L40S" and key["driver"] == "575.57.08" and key["arch"] == "8.9"


def test_fingerprint_of_a_lost_gpu_has_a_model_placeholder():
    fp = fingerprint.take(Nvml(scenario="lost").__enter__())
    assert fp.gpu_model == "unknown GPU"
    assert fp.stack_key()["driver"] == "575.57.08"


def test_a_run_on_a_lost_gpu_prints_its_verdict(tmp_path):
    """The run view names a GPU whose name NVML could not read, instead of a traceback."""
    from conftest import run_gpuprobe

    r = run_gpuprobe(["run", "--only", "--stage", "nvml"], tmp_path, env={"GPUPROBE_FAKE_NVML": "lost"})
    assert "Traceback" not in r.stderr, r.stderr
    assert "GPU is lost" in r.stdout, r.stdout
    assert r.doc()["provenance"]["kind"] == "simulated"
