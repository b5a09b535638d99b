"""The result index: warm refreshes read nothing, changes are picked up, broken caches rebuilt."""

from __future__ import annotations

import os
from datetime import timedelta

from gpuprobe.store import index as ix
from gpuprobe.store import matrix as mx
from result_factory import T0, make_result


def _refresh(folder, **kw):
    with ix.ResultIndex(folder) as idx:
        return idx.refresh(**kw)


def test_warm_refresh_reads_only_changed_files(tmp_path):
    paths = [make_result(tmp_path, "l40s", f"n{i}", {"buffer": "hang"}, at=T0 + timedelta(hours=i)) for i in range(3)]
    first = _refresh(tmp_path)
    assert (first.files, first.read) == (3, 3) and first.index_path is not None
    assert tmp_path not in first.index_path.parents  # never inside the results folder
    assert _refresh(tmp_path).read == 0
    make_result(tmp_path, "l40s", "n0", {"buffer": "pass"}, run_id=paths[0].name.split(".")[0])  # rewritten
    paths[1].unlink()
    stats = _refresh(tmp_path)
    assert (stats.files, stats.read, stats.removed) == (2, 1, 1)
    cell = next(r for r in mx.build([tmp_path])["rows"])["cells"]["buffer"]
    assert cell["summary"] == "hang 1/2, pass 1/2"


def test_quick_refresh_trusts_folder_mtimes_but_sees_new_files(tmp_path):
    make_result(tmp_path / "a", "h200", "h1", {"cuda": "pass"})
    _refresh(tmp_path)
    # pretend the folders settled long ago so their mtimes are trusted
    for d in (tmp_path, tmp_path / "a"):
        os.utime(d, ns=(10**18, 10**18))
    _refresh(tmp_path)
    assert _refresh(tmp_path, quick=True).quick
    make_result(tmp_path / "a", "h200", "h2", {"cuda": "pass"})  # atomic rename changes a's mtime
    stats = _refresh(tmp_path, quick=True)
    assert not stats.quick and stats.files == 2


def test_an_unusable_index_place_falls_to_the_next(tmp_path, monkeypatch):
    make_result(tmp_path / "ro", "l40s", "n1", {"buffer": "hang"})
    cache = tmp_path / "cache" / "idx.sqlite"
    cache.parent.mkdir()
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    # the first place cannot hold a file (a file is in the way of its folder), as on a read-only mount
    monkeypatch.setattr(ix, "index_paths", lambda folder: iter([blocked / "index.sqlite", cache]))
    stats = _refresh(tmp_path / "ro")
    assert stats.index_path == cache and cache.exists()
    monkeypatch.setattr(ix, "index_paths", lambda folder: iter([blocked / "index.sqlite"]))
    stats = _refresh(tmp_path / "ro")
    assert stats.index_path is None and stats.files == 1  # no cache at all: still answers
    m = mx.build([tmp_path / "ro"])
    assert m["rows"][0]["cells"]["buffer"]["summary"] == "hang 1/1"


def test_unreadable_files_are_remembered_until_they_change(tmp_path):
    bad = tmp_path / "x.result.json"
    bad.write_text("{not json")
    assert [p for p, _ in _refresh(tmp_path).unreadable] == ["x.result.json"]
    assert _refresh(tmp_path).read == 0 and _refresh(tmp_path).unreadable
    make_result(tmp_path, "h200", "h1", {"cuda": "pass"}, run_id="x")
    stats = _refresh(tmp_path)
    assert stats.unreadable == [] and stats.files == 1


def test_time_normalisation():
    assert ix.normalise_time("2025-11-09") == "2025-11-09T00:00:00.000000Z"
    assert ix.normalise_time("2025-11-09T12:00:00+01:00") == "2025-11-09T11:00:00.000000Z"
    assert ix.normalise_time("nonsense") is None


def test_kept_answers_follow_changes(tmp_path):
    other = tmp_path.parent / (tmp_path.name + "-other")  # a sibling, not inside tmp_path
    make_result(tmp_path, "l40s", "n1", {"buffer": "hang"})
    assert mx.build([tmp_path])["rows"][0]["cells"]["buffer"]["summary"] == "hang 1/1"
    assert mx.build([tmp_path])["rows"][0]["cells"]["buffer"]["summary"] == "hang 1/1"  # from the kept answer
    make_result(tmp_path, "l40s", "n2", {"buffer": "pass"}, at=T0 + timedelta(hours=1))
    assert mx.build([tmp_path])["rows"][0]["cells"]["buffer"]["summary"] == "hang 1/2, pass 1/2"
    make_result(other, "l40s", "n3", {"buffer": "pass"})
    assert mx.build([tmp_path, other])["rows"][0]["cells"]["buffer"]["runs"] == 3
    make_result(other, "l40s", "n4", {"buffer": "pass"}, at=T0 + timedelta(hours=2))
    assert mx.build([tmp_path, other])["rows"][0]["cells"]["buffer"]["runs"] == 4


def test_compare_forgets_the_stack_of_a_rewritten_result(tmp_path):
    from gpuprobe.store import compare as matrix_compare

    make_result(tmp_path, "l40s", "n1", {"buffer": "hang"})
    path = make_result(tmp_path, "h200", "h1", {"buffer": "pass"}, torch="2.5.0+cu124")
    matrix_compare.compare([tmp_path], "L40S", "H200")  # index the first version
    make_result(tmp_path, "h200", "h1", {"buffer": "pass"}, torch="2.13.0+cu128", run_id=path.name.split(".")[0])
    text = str(matrix_compare.compare([tmp_path], "L40S", "H200"))
    assert "2.5.0+cu124" not in text  # only what some result file still says is evidence


def test_unchanged_folders_are_trusted_between_full_checks(tmp_path, monkeypatch):
    """A folder whose mtime did not change has no new, removed or replaced file: its files
    are not stat-ed, except by the full check every FULL_CHECK_S (an in-place edit, which
    gpuprobe never does, shows then)."""
    a = make_result(tmp_path / "a", "l40s", "n1", {"buffer": "hang"})
    b = make_result(tmp_path / "b", "h200", "h1", {"buffer": "pass"})
    for d in (tmp_path, tmp_path / "a", tmp_path / "b"):
        os.utime(d, ns=(10**18, 10**18))  # settled long ago
    assert _refresh(tmp_path, full=True).read == 2   # notes the settled mtimes
    b.write_text(b.read_text().replace('"pass"', '"fail"'))  # in place: b's mtime stays
    os.utime(b, ns=(2 * 10**18, 2 * 10**18))
    make_result(tmp_path / "a", "l40s", "n2", {"buffer": "hang"}, at=T0 + timedelta(hours=1))  # a changes
    known = dict(ix.ResultIndex(tmp_path).conn.execute("SELECT path, mtime_ns FROM dirs").fetchall())
    assert ix.scan(tmp_path, known)[2] == {".", "b"}  # only a's files are looked at
    stats = _refresh(tmp_path)
    assert (stats.files, stats.read) == (3, 1)
    monkeypatch.setattr(ix, "FULL_CHECK_S", 0.0)  # the full check is due
    assert _refresh(tmp_path).read == 1 and a.exists()
    rows = mx.build([tmp_path], view="model")["rows"]
    assert {r["id"]: r["cells"]["buffer"]["summary"] for r in rows} == {"H200": "fail 1/1", "L40S": "hang 2/2"}
