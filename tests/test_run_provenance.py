"""Provenance stamped at run time: a fire drill is a ``drill``, a fake or emulated GPU is
``simulated``, and a verdict a failpoint caused says so."""

from __future__ import annotations

from gpuprobe.child.failpoints import parse
from gpuprobe.cli.nextstep import next_step
from gpuprobe.run.provenance import Provenance
from gpuprobe.store.provenance import DRILL, PROBED, SIMULATED
from gpuprobe.store.results import Mark, StageResult


def test_failpoint_hang_is_a_drill_and_says_so(gpuprobe_cli):
    # the nvml stage marks nvml.init before it touches NVML: no torch, no GPU needed
    run = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--timeout", "2", "--json"],
                       env={"GPUPROBE_FAILPOINTS": "nvml.init=hang", "GPUPROBE_PYSPY": "none"})
    assert run.returncode == 3, run.stderr
    doc = run.doc()
    stage = run.stage("nvml")
    assert doc["provenance"]["kind"] == DRILL and "GPUPROBE_FAILPOINTS=nvml.init=hang" in doc["provenance"]["note"]
    assert stage["status"] == "hang" and stage["provenance"] == DRILL
    assert "caused by the failpoint nvml.init=hang at nvml.init" in stage["reason"]
    assert stage["signatures"][0]["id"] == "failpoint-drill"
    assert "drill" in next_step(stage) and "unset GPUPROBE_FAILPOINTS" in next_step(stage)


def test_failpoint_that_never_fires_still_makes_a_drill(gpuprobe_cli):
    run = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--json"],
                       env={"GPUPROBE_FAILPOINTS": "train.build=raise", "GPUPROBE_FAKE_NVML": "h200"})
    assert run.returncode == 0, run.stderr
    stage = run.stage("nvml")
    assert run.doc()["provenance"]["kind"] == DRILL and stage["provenance"] == DRILL
    assert stage["status"] == "pass" and "failpoint" not in (stage["reason"] or "")


def test_fake_nvml_run_is_simulated_and_real_run_is_probed(gpuprobe_cli):
    fake = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--json"], env={"GPUPROBE_FAKE_NVML": "l40s"})
    assert fake.doc()["provenance"]["kind"] == SIMULATED and fake.stage("nvml")["provenance"] == SIMULATED
    real = gpuprobe_cli(["run", "--only", "--stage", "nvml", "--json"])
    assert real.doc()["provenance"]["kind"] == PROBED and real.stage("nvml")["provenance"] == PROBED


def _stage(name: str, status: str, marks: list[str], data: dict | None = None) -> StageResult:
    return StageResult(stage=name, status=status, reason="timed out", data=data or {},
                       marks=[Mark(m, float(i)) for i, m in enumerate(marks)])


def test_simulating_options_make_their_stages_simulated():
    prov = Provenance(options={"buffer": {"free_memory_gb": 48.0}, "train": {"free_memory_gb": 48.0}})
    assert prov.stage(_stage("buffer", "pass", [])) == SIMULATED
    assert prov.stage(_stage("alloc", "pass", [])) == PROBED
    assert prov.stage(_stage("alloc", "pass", [], {"emulation": {"model": "L40S"}})) == SIMULATED
    kind, note = prov.run([], ["alloc", "buffer"])
    assert kind == SIMULATED and "buffer.free_memory_gb" in note
    assert Provenance(options={"buffer": {"free_memory_gb": None}}).run([], ["buffer"]) == (PROBED, None)


def test_drill_outranks_simulation():
    prov = Provenance(parse("buffer.sample=delay:1"), "buffer.sample=delay:1", "h200", {"buffer": {"emulate_gpu": "H200"}})
    assert prov.stage(_stage("buffer", "pass", [])) == DRILL
    assert prov.run([], ["buffer"])[0] == DRILL


def test_only_the_failpoint_at_the_last_mark_explains_a_verdict():
    prov = Provenance(parse("alloc.alloc@64MiB=spawn;alloc.alloc@128MiB=sleep"), "x")
    spawned_only = _stage("alloc", "hang", ["alloc.host_memory", "alloc.alloc@64MiB"])
    prov.explain(spawned_only)   # spawn starts a grandchild and goes on: not the cause
    assert spawned_only.reason == "timed out" and not spawned_only.signatures
    hung = _stage("alloc", "hang", ["alloc.alloc@64MiB", "alloc.alloc@128MiB"])
    prov.explain(hung)
    assert "caused by the failpoint alloc.alloc@128MiB=sleep" in hung.reason
    passed = _stage("alloc", "pass", ["alloc.alloc@128MiB"])
    prov.explain(passed)   # a sleep with an end that passed: nothing to explain
    assert not passed.signatures
