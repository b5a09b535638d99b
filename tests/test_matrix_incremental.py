"""A kept matrix answer brought up to date cell by cell equals the answer computed from scratch.

After each add, replacement and removal of result files, every view under several filters is
built twice: from the index's kept answer (recomputing only the cells the change touched) and
with ``cache=False`` (a throw-away index, everything computed), and the two must agree.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpuprobe.store import indexlog
from gpuprobe.store import matrix as mx
from gpuprobe.store import matrixcells as mc
from result_factory import T0, make_result

FILTERS = (mx.MatrixFilter(),   # the default: evidence only
           mx.MatrixFilter(models=("l40s", "H200"), since="2026-11-01T13:00", provenance=("all",)))


def _answer(data: dict) -> dict:
    return {k: data[k] for k in ("view", "stages", "columns", "rows", "skipped")}


def _assert_same(folders: list) -> None:
    for view in mx.VIEWS:
        for flt in FILTERS:
            kept = mx.build(folders, view=view, flt=flt)
            assert _answer(kept) == _answer(mx.build(folders, view=view, flt=flt, cache=False)), (view, flt)


def _seed(folder, n: int = 6) -> list:
    paths = []
    for i in range(n):
        scenario, host = ("l40s", f"l40s-n{i % 3}") if i % 2 else ("h200", f"h200-n{i % 3}")
        stages = {"cuda": "pass", "buffer": ("hang", "pass", "slow")[i % 3], "train": "pass"}
        paths.append(make_result(folder, scenario, host, stages, at=T0 + timedelta(hours=i),
                                 durations={"buffer": 1.0 + i, "cuda": 0.5 * i}))
    return paths


def test_incremental_answer_equals_a_fresh_one_after_adds_replacements_removals(tmp_path):
    paths = _seed(tmp_path)
    _assert_same([tmp_path])                       # computed from scratch, kept
    _assert_same([tmp_path])                       # from the kept answers
    # add: a new run in an existing cell, and one on a new stack (a new row)
    make_result(tmp_path, "l40s", "l40s-n1", {"buffer": "fail"}, at=T0 + timedelta(hours=9))
    make_result(tmp_path, "h200", "h200-n9", {"cuda": "pass"}, at=T0 + timedelta(hours=10), torch="2.5.0+cu124")
    _assert_same([tmp_path])
    # replace: the same run id, now another host, stack, status and duration
    make_result(tmp_path, "l40s", "l40s-n7", {"buffer": "pass", "cuda": "fail"}, at=T0 + timedelta(hours=11),
                run_id=paths[0].name.split(".")[0], durations={"buffer": 99.0}, torch="2.5.0+cu124")
    _assert_same([tmp_path])
    # exercises: a drill and a simulation get rows of their own (shown with --provenance all)
    make_result(tmp_path, "l40s", "l40s-n1", {"buffer": "hang"}, at=T0 + timedelta(hours=12), provenance="drill")
    make_result(tmp_path, "h200", "h200-n1", {"cuda": "fail"}, at=T0 + timedelta(hours=13), simulated=True)
    _assert_same([tmp_path])
    # remove: a row's only run, and a run of a shared cell
    for p in tmp_path.glob("*h200-n9*"):
        p.unlink()
    paths[3].unlink()
    _assert_same([tmp_path])
    # a hostile file and its repair
    bad = tmp_path / "bad.result.json"
    bad.write_text("{not json")
    _assert_same([tmp_path])
    bad.unlink()
    make_result(tmp_path, "h200", "h200-n2", {"buffer": "pass"}, at=T0 + timedelta(hours=14), run_id="bad")
    _assert_same([tmp_path])


def test_only_the_touched_cells_are_recomputed(tmp_path, monkeypatch):
    _seed(tmp_path)
    mx.build([tmp_path])                          # the kept answer
    calls = []
    real = mc.compute_pair
    monkeypatch.setattr(mc, "compute_pair", lambda *a: calls.append(a[4:]) or real(*a))
    mx.build([tmp_path])
    assert calls == []                            # nothing changed: the kept answer as it is
    make_result(tmp_path, "l40s", "l40s-n1", {"buffer": "fail"}, at=T0 + timedelta(hours=9))
    data = mx.build([tmp_path])
    stack = next(r["id"] for r in data["rows"] if r["id"].startswith("L40S"))
    assert calls == [(stack, "buffer")]           # one new file, one stage: one cell
    assert next(r for r in data["rows"] if r["id"] == stack)["cells"]["buffer"]["counts"] == {
        "fail": 1, "hang": 1, "pass": 1, "slow": 1}


def test_several_folders_and_answers_older_than_the_log(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    _seed(a, 4)
    _seed(b, 3)
    _assert_same([a, b])
    make_result(b, "h200", "h200-n4", {"buffer": "hang"}, at=T0 + timedelta(hours=20))
    _assert_same([a, b])
    # the log keeps one generation: two changes later, the kept answer is recomputed whole
    monkeypatch.setattr(indexlog, "KEEP_GENERATIONS", 1)
    make_result(a, "l40s", "l40s-n4", {"buffer": "pass"}, at=T0 + timedelta(hours=21))
    mx.build([a])
    make_result(a, "l40s", "l40s-n5", {"buffer": "slow"}, at=T0 + timedelta(hours=22))
    _assert_same([a, b])


@pytest.mark.parametrize("view", mx.VIEWS)
def test_a_cell_median_and_newest_runs(tmp_path, view):
    for i, d in enumerate((5.0, 1.0, 3.0, 2.0)):
        make_result(tmp_path, "l40s", "l40s-n1", {"buffer": "pass"}, at=T0 + timedelta(hours=i), durations={"buffer": d})
    mx.build([tmp_path], view=view)
    make_result(tmp_path, "l40s", "l40s-n1", {"buffer": "pass"}, at=T0 + timedelta(hours=9), durations={"buffer": 4.0})
    cell = mx.build([tmp_path], view=view)["rows"][0]["cells"]["buffer"]
    assert cell["median_duration_s"] == 3.0 and cell["runs"] == 5
    assert [r["at"][:13] for r in cell["latest"]] == ["2026-11-01T21", "2026-11-01T15", "2026-11-01T14"]
