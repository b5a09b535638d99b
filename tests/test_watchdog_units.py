"""Units of the engine, without starting a stage: the watchdog's hang/slow classification, the
event tail, the order of the stack-dump fallbacks, the stage plan and its requirements, the
live line and the next step after a verdict."""

from __future__ import annotations

import json
import sys
import types

import pytest

from gpuprobe.cli.console import LiveProgress
from gpuprobe.cli.nextstep import next_step, progress
from gpuprobe.run import evidence, stages
from gpuprobe.run.watchdog import EventTail, Supervision, classify_timeout
from gpuprobe.store.results import FAIL, HANG, PASS, SKIP, SLOW, StageResult


def sup(marks: list[tuple[str, float, dict]], started: float = 100.0, ended: float = 110.0) -> Supervision:
    return Supervision("timeout", None, [{"ev": "mark", "name": n, "t": t, "data": d} for n, t, d in marks],
                       started=started, ended=ended)


# -- classification -------------------------------------------------------------------------
def test_no_mark_at_all_is_a_hang():
    status, detail = classify_timeout(sup([]), stall_window=5)
    assert status == HANG and detail["quiet_for_s"] == 10.0 and detail["marks_in_window"] == 0


def test_quiet_longer_than_the_window_is_a_hang():
    status, detail = classify_timeout(sup([("buffer.fill", 101.0, {})]), stall_window=5)
    assert status == HANG and detail["quiet_for_s"] == 9.0


def test_marks_inside_the_window_are_slow_with_rate_and_eta():
    marks = [("buffer.sample", 100.0 + i, {"done": 10 * i, "total": 1000}) for i in range(1, 10)]
    status, detail = classify_timeout(sup(marks), stall_window=5)
    assert status == SLOW
    assert detail["rate_per_s"] == 10.0 and detail["done"] == 90 and detail["total"] == 1000
    assert detail["eta_s"] == 91.0                       # (1000 - 90) / 10 per s
    assert detail["estimated_total_s"] == 100.0          # 9 s in, 91 s to go
    assert detail["marks_in_window"] == 5


def test_marks_without_done_total_give_marks_per_second():
    marks = [("sim.step", 105.0 + i, {}) for i in range(5)]
    status, detail = classify_timeout(sup(marks), stall_window=5)
    assert status == SLOW and "eta_s" not in detail and detail["marks_per_s"] == 1.0


def test_the_window_edge_is_not_yet_a_hang():
    status, _ = classify_timeout(sup([("x", 105.0, {})]), stall_window=5)   # quiet exactly 5 s
    assert status == SLOW


# -- the event tail ---------------------------------------------------------------------------
def test_event_tail_reads_whole_lines_only(tmp_path):
    path = tmp_path / "ev.jsonl"
    tail = EventTail(path)
    assert tail.read() == []                                   # no file yet
    with open(path, "w") as fh:
        fh.write(json.dumps({"ev": "start"}) + "\n" + '{"ev": "mark", "na')
    assert tail.read() == [{"ev": "start"}]                    # the half line waits
    with open(path, "a") as fh:
        fh.write('me": "a"}\n' + "{torn by a crash\n" + json.dumps({"ev": "result"}) + "\n")
    assert tail.read() == [{"ev": "mark", "name": "a"}, {"ev": "result"}]   # the torn line is dropped
    assert tail.read() == []


# -- stack dumps: native py-spy, then plain py-spy, then faulthandler --------------------------
def _fake_dumps(monkeypatch, outcomes: dict[str, dict]) -> list[str]:
    calls: list[str] = []

    def pyspy(pid, native, timeout, tree):
        method = "py-spy --native" if native else "py-spy"
        calls.append(method)
        return {"method": method, **outcomes[method]}

    def faulthandler(pid, stacks_file):
        calls.append("faulthandler")
        return {"method": "faulthandler", **outcomes["faulthandler"]}

    monkeypatch.setattr(evidence, "pyspy_dump", pyspy)
    monkeypatch.setattr(evidence, "faulthandler_dump", faulthandler)
    return calls


OK = {"ok": True, "text": "Thread 1\n"}
NO = {"ok": False, "error": "Permission denied (ptrace)"}


def test_native_stacks_first(monkeypatch):
    calls = _fake_dumps(monkeypatch, {"py-spy --native": OK, "py-spy": OK, "faulthandler": OK})
    out = evidence.collect_stacks(1, None, [1])
    assert calls == ["py-spy --native"] and out["method"] == "py-spy --native"


def test_plain_pyspy_when_native_fails_then_faulthandler(monkeypatch):
    calls = _fake_dumps(monkeypatch, {"py-spy --native": NO, "py-spy": OK, "faulthandler": OK})
    assert evidence.collect_stacks(1, None, [1])["method"] == "py-spy" and calls == ["py-spy --native", "py-spy"]
    calls = _fake_dumps(monkeypatch, {"py-spy --native": NO, "py-spy": NO, "faulthandler": OK})
    out = evidence.collect_stacks(1, None, [1])
    assert calls == ["py-spy --native", "py-spy", "faulthandler"] and out["method"] == "faulthandler"
    assert [a["method"] for a in out["attempts"]] == calls and "text" not in out["attempts"][0]


def test_missing_pyspy_goes_straight_to_faulthandler(monkeypatch):
    missing = {"ok": False, "error": "py-spy not found (not on PATH; GPUPROBE_PYSPY unset)"}
    calls = _fake_dumps(monkeypatch, {"py-spy --native": missing, "py-spy": OK, "faulthandler": NO})
    out = evidence.collect_stacks(1, None, [1])
    assert calls == ["py-spy --native", "faulthandler"] and out["method"] is None and out["text"] == ""


def test_gpuprobe_pyspy_none_means_no_pyspy(monkeypatch):
    monkeypatch.setenv("GPUPROBE_PYSPY", "none")
    assert evidence.find_pyspy() is None
    monkeypatch.setenv("GPUPROBE_PYSPY", "/opt/py-spy")
    assert evidence.find_pyspy() == "/opt/py-spy"


# -- the plan -----------------------------------------------------------------------------
def test_plan_fixes_timeout_and_stall_window_once():
    planned = stages.plan("buffer")
    assert [s.name for s in planned] == ["nvml", "cuda", "alloc", "sim", "buffer"]
    assert [(s.timeout_s, s.stall_window_s) for s in planned] == [(30, 10), (120, 10), (120, 10), (600, 10), (600, 10)]
    assert {(s.timeout_s, s.stall_window_s) for s in stages.plan(timeout=4)} == {(4, 2)}
    assert {s.stall_window_s for s in stages.plan(timeout=4, stall_window=1.5)} == {1.5}
    assert [s.name for s in stages.plan("alloc", only=True)] == ["alloc"]
    assert [s.name for s in stages.plan(names=["train", "cuda"])] == ["cuda", "train"]   # table order
    assert stages.STAGES[0].stall_window_s is None          # the table itself is not changed
    with pytest.raises(KeyError):
        stages.plan("warp")


def test_requirements_are_transitive_and_leave_unrelated_stages_alone():
    assert stages.required_by("train") == {"buffer", "alloc", "cuda", "nvml"}
    assert "sim" not in stages.required_by("buffer") and "sim" not in stages.required_by("train")
    assert stages.required_by("nvml") == set()


def test_a_failed_sim_blocks_nothing_a_hung_buffer_blocks_train(tmp_path):
    from gpuprobe.run.runner import RunConfig, Runner

    runner = Runner(RunConfig(stages=stages.plan(), results_dir=tmp_path, device="cpu"))
    runner.stages = [StageResult("nvml", SKIP), StageResult("cuda", SKIP), StageResult("alloc", PASS),
                     StageResult("sim", FAIL)]
    assert runner._blocker(stages.BY_NAME["buffer"], None) is None
    runner.stages.append(StageResult("buffer", HANG))
    assert runner._blocker(stages.BY_NAME["train"], None).stage == "buffer"


# -- the live line ---------------------------------------------------------------------------
class _Console:
    is_terminal = True
    width = 120


def test_live_line_ticks_and_names_the_fork_server_preload(monkeypatch):
    clock = types.SimpleNamespace(now=1000.0)
    monkeypatch.setattr("gpuprobe.cli.console.time.monotonic", lambda: clock.now)
    live = LiveProgress(_Console(), stages.plan("buffer", timeout=60, stall_window=5))
    live.live = object()     # as on a terminal: no plain lines
    live.event("alloc", None, {"ev": "mark", "name": "preload.import_torch"})
    assert live.ticker().startswith("[3/5] preload 0.0 s | preload.import_torch 0.0 s ago")
    clock.now += 2.0
    live.event("alloc", None, {"ev": "mark", "name": "alloc.alloc@64MiB"})
    clock.now += 1.5
    assert live.ticker() == ("[3/5] alloc 3.5 s | alloc.alloc@64MiB 1.5 s ago | stall in 3.5 s | timeout in 56 s")
    clock.now += 6.0                                        # quiet past the window: it still ticks
    assert "quiet 2.5 s past the stall window" in live.ticker() and "timeout in 50 s" in live.ticker()


# -- what next ------------------------------------------------------------------------------
def test_next_step_is_the_remedy_else_a_command():
    hang = {"stage": "buffer", "status": "hang", "data": {"timeout_s": 60}, "signatures": []}
    assert "gpuprobe run --only --stage buffer --timeout 120" in next_step(hang, "RUN1")
    assert "gpuprobe report RUN1" in next_step(hang, "RUN1")
    hang["signatures"] = [{"id": "buffer-host-storage", "remedy": "Keep the storage on the device."}]
    assert next_step(hang) == "[buffer-host-storage] Keep the storage on the device."
    assert next_step({"stage": "alloc", "status": "pass"}) is None


def test_slow_prints_rate_and_eta():
    slow = {"stage": "buffer", "status": "slow", "signatures": [],
            "data": {"timeout_s": 4, "progress_mark": "buffer.sample", "rate_per_s": 12.5, "done": 40, "total": 1000,
                     "eta_s": 76.8, "estimated_total_s": 80.0}}
    assert progress(slow) == "rate 12.5/s at buffer.sample, 40 of 1000 done; ETA 76.8 s more, about 80 s in all"
    assert "--timeout 120" in next_step(slow)               # 1.5 x the estimated total
