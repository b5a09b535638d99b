"""Checks before launch: a bad request is one line and exit 2, and nothing is written.

The typed option schema, the more specific option winning, failpoint specs parsed in
the parent, finite timeouts, GPU indices that exist, and a device that cannot be used.
"""

from __future__ import annotations

import pytest

from gpuprobe.child.failpoints import parse as parse_failpoints
from gpuprobe.child.stage import StageContext
from gpuprobe.node.fingerprint import Fingerprint
from gpuprobe.run import checks, options, stages
from gpuprobe.run.optschema import SCHEMA

BASE = ["run", "--device", "cpu", "--only", "--stage", "alloc"]


@pytest.mark.parametrize("args, env, names", [
    (["--timeout", "nan"], {}, "--timeout"),
    (["--timeout", "inf"], {}, "--timeout"),
    (["--timeout", "0"], {}, "--timeout"),
    (["--timeout", "-1"], {}, "--timeout"),
    (["--stall-window", "nan"], {}, "--stall-window"),
    (["--set", "alloc.cpu_max_mb=64"], {}, "alloc.cpu_max_mb"),            # unknown key (a typo)
    (["--set", "capacty=1e5"], {}, "capacty"),                               # unknown global key
    (["--set", "alloc.cpu_max_mib=lots"], {}, "alloc.cpu_max_mib"),          # bad value
    (["--set", "buffer.fill=NaN"], {}, "buffer.fill"),                       # NaN never reaches a result
    (["--emulate-gpu", "A100"], {}, "--emulate-gpu A100"),                   # a flag's bad value names the flag
    ([], {"GPUPROBE_FAILPOINTS": "alloc.alloc@64MiB=hnag"}, "GPUPROBE_FAILPOINTS"),
    ([], {"GPUPROBE_FAILPOINTS": "alloc.alloc@64MiB=sleep:nan"}, "GPUPROBE_FAILPOINTS"),
    ([], {"GPUPROBE_FAILPOINTS": "alocc.alloc@64MiB=hang"}, "GPUPROBE_FAILPOINTS"),   # names no stage
    (["--gpus", "99999999999999999999"], {}, "--gpus"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(gpuprobe_cli, tmp_path, args, env, names):
    results = tmp_path / "never-created"
    run = gpuprobe_cli([*BASE, *args], env=env, results=results)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    assert names in lines[0] and "Traceback" not in run.stderr
    assert not results.exists(), "a refused run created its results folder"
    assert run.stdout == ""


def test_gpus_must_exist_on_this_node(gpuprobe_cli, tmp_path):
    results = tmp_path / "r"
    # the fake H200 node has one GPU, index 0: index 1 is refused, index 0 is not
    bad = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--gpus", "1", "--device", "cuda"],
                       env={"GPUPROBE_FAKE_NVML": "h200"}, results=results)
    assert bad.returncode == 2 and "no GPU 1 on this node (NVML sees GPU 0)" in bad.stderr
    assert not results.exists()
    good = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--gpus", "0", "--device", "cuda", "--json"],
                        env={"GPUPROBE_FAKE_NVML": "h200"}, results=results)
    assert good.returncode == 0, good.stderr
    assert good.doc()["config"]["gpus"] == [0] and good.doc()["provenance"]["kind"] == "simulated"


def test_device_cuda_without_cuda_is_an_error(gpuprobe_cli, tmp_path):
    results = tmp_path / "r"
    run = gpuprobe_cli(["run", "--device", "cuda", "--only", "--stage", "nvml"],
                       env={"GPUPROBE_FAKE_NVML": "nolib"}, results=results)
    assert run.returncode == 2 and "--device cuda: no usable CUDA here" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not results.exists()


# -- the checks, on fingerprints of nodes we do not have -------------------------------------
def _node(gpus: int, torch_cuda: str | None, simulated: str | None = None, torch: bool = True) -> Fingerprint:
    return Fingerprint(hostname="n1", os="linux", kernel="6", python="3.11", cpu_model="x", cpu_count=8, ram_bytes=1,
                       nvml={"available": gpus > 0, "reason": None if gpus else "no driver"}, driver_version=None,
                       cuda_driver_version=None, gpus=[{"index": i, "name": "NVIDIA L40S"} for i in range(gpus)],
                       torch={"version": "2.13.0" + ("" if torch_cuda else "+cpu"), "cuda": torch_cuda} if torch else None,
                       simulated=simulated)


ALLOC = stages.plan("alloc", only=True)
NVML = stages.plan("nvml", only=True)


def test_cpu_only_torch_on_a_gpu_node_is_refused():
    with pytest.raises(checks.CheckError, match=r"--device cuda: torch 2.13.0\+cpu is a CPU-only build"):
        checks.device("cuda", _node(2, None), ALLOC)
    with pytest.raises(checks.CheckError, match="this node has 2 GPU.* CPU-only build.*--device cpu"):
        checks.device("auto", _node(2, None), ALLOC)
    with pytest.raises(checks.CheckError, match="torch is not installed"):
        checks.device("cuda", _node(1, None, torch=False), ALLOC)
    checks.device("cuda", _node(1, "12.8"), ALLOC)      # a CUDA build: fine
    checks.device("cuda", _node(1, None), NVML)         # the nvml stage needs no torch
    checks.device("auto", _node(0, None), ALLOC)        # no GPU: auto means the CPU
    checks.device("auto", _node(1, None, simulated="h200"), ALLOC)   # a fake GPU: the stages skip, as before
    checks.device("cpu", _node(2, None), ALLOC)


def test_gpu_indices_are_checked_against_the_node():
    assert checks.gpus("0,1", _node(2, "12.8")) == [0, 1]
    assert checks.gpus("all", _node(2, "12.8")) == [0, 1]
    for bad in ("2", "99999999999999999999", "-1", "x", ""):
        with pytest.raises(checks.CheckError, match="--gpus"):
            checks.gpus(bad, _node(2, "12.8"))


# -- the options: typed, and the more specific one wins ---------------------------------------
def test_every_stage_has_a_schema():
    assert set(SCHEMA) == set(stages.STAGE_NAMES)


def test_values_are_typed():
    got = options.resolve(["buffer.capacity=1e5", "buffer.capacities=[1e3, 1e4]", "buffer.bisect=yes",
                           "sim.envs=pendulum,cartpole_swingup", "train.model_size=48m", "buffer.free_memory_gb=null"])
    assert got["buffer"] == {"capacity": 100000, "capacities": [1000, 10000], "bisect": True, "free_memory_gb": None}
    assert got["sim"] == {"envs": ["pendulum", "cartpole_swingup"]} and got["train"] == {"model_size": "48M"}


def test_stage_option_beats_global_and_set_beats_flag():
    # global first or last on the command line: the stage's own value wins either way
    for pairs in (["prefetch=2", "buffer.prefetch=8"], ["buffer.prefetch=8", "prefetch=2"]):
        got = options.resolve(pairs)
        assert got["buffer"]["prefetch"] == 8 and got["train"]["prefetch"] == 2
    got = options.resolve(["prefetch=2"], {"prefetch": 12, "storage": "cpu"})
    assert got["buffer"]["prefetch"] == 2 and got["train"]["prefetch"] == 2   # any --set beats the flag
    assert got["buffer"]["storage"] == "cpu"                                    # the flag, where nothing else says
    assert "prefetch" not in got.get("alloc", {})                               # a global key only where it exists


def test_child_reads_its_stage_over_the_global_entry():
    # a config written by hand may still carry a global "*" entry: the stage's own wins
    ctx = StageContext("buffer", {"options": {"*": {"prefetch": 2}, "buffer": {"prefetch": 8}}}, events=None,
                       failpoints=[])
    assert ctx.options["prefetch"] == 8


def test_failpoint_arguments_are_checked():
    assert [p.action for p in parse_failpoints("alloc.*=spawn,daemon,sleep:0.5;buffer.sample=exit:7")] == \
        ["spawn", "daemon", "sleep", "exit"]
    for bad in ("alloc.x=exit:300", "alloc.x=delay:inf", "alloc.x=raise:1", "nothing=hang", "alloc.x="):
        with pytest.raises(ValueError, match="GPUPROBE_FAILPOINTS"):
            parse_failpoints(bad)


def test_plan_keeps_the_checked_timeout():
    spec = stages.plan("alloc", only=True, timeout=5)[0]
    assert spec.timeout_s == 5 and spec.stall_window_s == 2.5
