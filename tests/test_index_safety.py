"""The index is a local, exact, self-healing cache: concurrent readers count every run once,
a corrupt or foreign index is rebuilt with a warning, a locked index never holds preflight,
and hostile files are skipped with their reason."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gpuprobe import exitcodes
from gpuprobe.store import index as ix
from gpuprobe.store import indexdb, indexdir, indexscan, record
from gpuprobe.store import matrix as mx
from result_factory import T0, field_report, make_result

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
INDEX_ENV = indexdir.ENV


def _refresh(folder, **kw):
    with ix.ResultIndex(folder, **kw) as idx:
        return idx.refresh()


def _folder_of(n: int, folder: Path) -> int:
    """``n`` result files with 1-3 stages each; the number of stage runs they hold."""
    stages = 0
    for i in range(n):
        names = ("cuda", "buffer", "train")[: 1 + i % 3]
        make_result(folder / f"d{i % 4}", "l40s" if i % 2 else "h200", f"n{i % 7}",
                    {s: ("hang" if (s == "buffer" and i % 5 == 0) else "pass") for s in names},
                    at=T0 + timedelta(minutes=i))
        stages += len(names)
    return stages


# -- where it lives -------------------------------------------------------------------
def test_the_index_lives_on_local_disk_per_node_never_in_the_results_folder(tmp_path, monkeypatch):
    make_result(tmp_path / "res", "l40s", "n1", {"buffer": "hang"})
    monkeypatch.setenv(indexdir.ENV, str(tmp_path / "cache"))
    stats = _refresh(tmp_path / "res")
    assert stats.index_path.parent == tmp_path / "cache" / indexdir.node_name()
    assert not any(p.name.endswith(".sqlite") for p in (tmp_path / "res").rglob("*"))
    # a network filesystem is never used, whatever the override says
    monkeypatch.setattr(indexdir, "fs_type", lambda path: "nfs4")
    stats = _refresh(tmp_path / "res")
    assert stats.index_path is None and stats.files == 1  # a throw-away index: still the right answer


def test_mount_table_lookup_picks_the_deepest_mount(monkeypatch, tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nsrv:/home /home nfs4 rw 0 0\ntmpfs /home/x/tmp tmpfs rw 0 0\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(mounts if f == "/proc/self/mounts" else f, *a, **k))
    assert indexdir.fs_type(Path("/home/u/.cache")) == "nfs4"
    assert indexdir.fs_type(Path("/home/x/tmp/a")) == "tmpfs"
    assert indexdir.fs_type(Path("/homes")) == "ext4"


# -- concurrent readers ------------------------------------------------------------------
# Each process imports everything, says it is ready, then waits for the go file: the
# refreshes of all of them start together on the fresh index.
LAUNCHER = """
import os, sys, time
import gpuprobe.store.matrix, gpuprobe.cli.matrix
from gpuprobe.cli.main import main
go, ready = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
main(sys.argv[3:])
"""


@pytest.fixture(scope="module")
def folder_300(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results300")
    return folder, _folder_of(300, folder)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("procs", [2, 8, 32])
def test_concurrent_matrix_on_a_fresh_index_counts_every_run_once(folder_300, tmp_path, procs):
    folder, expected = folder_300
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env.update({"PYTHONPATH": str(ROOT), INDEX_ENV: str(tmp_path / "fresh-cache")})  # a fresh index
    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", LAUNCHER, str(go), str(tmp_path / f"ready{i}"), "matrix",
                                  "--results", str(folder), "--json"], env=env, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(procs)]
    try:
        deadline = time.monotonic() + 300
        while sum((tmp_path / f"ready{i}").exists() for i in range(procs)) < procs and time.monotonic() < deadline:
            assert all(c.poll() is None for c in children), [c.communicate() for c in children if c.poll() is not None]
            time.sleep(0.05)
        go.touch()
        outs = [c.communicate(timeout=300) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
    indexes = set()
    for c, (out, err) in zip(children, outs):
        assert c.returncode == 0, err
        data = json.loads(out)
        runs = sum(cell["runs"] for row in data["rows"] for cell in row["cells"].values() if cell)
        assert (runs, data["sources"][0]["files"], data["skipped"]) == (expected, 300, [])
        if data["sources"][0]["index"] is None:
            # On a loaded machine another process may hold the index past the 30 s wait: this one
            # then reads the files directly (open_index), says so, and still counts each run once.
            assert "read the 300 result files directly" in err, err
        else:
            indexes.add(data["sources"][0]["index"])
    assert len(indexes) == 1, indexes  # the one that built the index, at least, answered from it
    db = Path(indexes.pop())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM stage_runs").fetchone()[0] == expected
        assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 300


WRITER = """
import sys
from datetime import timedelta
from pathlib import Path
from result_factory import T0, make_result
folder, w, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    make_result(folder / f"w{w}", "l40s", f"w{w}", {"cuda": "pass", "buffer": "pass"}, at=T0 + timedelta(minutes=i))
"""
READER = """
import json, sys
from gpuprobe.cli.main import main
for _ in range(int(sys.argv[2])):
    try:
        main(["matrix", "--results", sys.argv[1], "--json"])
    except SystemExit as exc:
        assert exc.code == 0, exc.code
"""


@pytest.mark.timeout(600)
def test_writers_and_readers_at_once_never_overcount(tmp_path):
    """8 processes write runs (2 stages each) while 4 read the matrix 3 times each: no answer
    counts more than every run written, and once the writers are done it is exact."""
    folder = tmp_path / "res"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env.update({"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", INDEX_ENV: str(tmp_path / "cache")})
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(w), "15"], env=env, cwd=ROOT,
                                stderr=subprocess.PIPE, text=True) for w in range(8)]
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(folder), "3"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for w in writers:
        assert w.wait(timeout=300) == 0, w.stderr.read()
    answers = []
    for r in readers:
        out, err = r.communicate(timeout=300)
        assert r.returncode == 0, err
        answers += _json_docs(out)
    assert len(answers) == 12
    for data in answers:
        runs = sum(c["runs"] for row in data["rows"] for c in row["cells"].values() if c)
        assert runs <= 2 * 8 * 15 and not data["skipped"], runs
    final = mx.build([folder])
    assert sum(c["runs"] for row in final["rows"] for c in row["cells"].values() if c) == 2 * 8 * 15
    assert final["sources"][0]["files"] == 8 * 15


def _json_docs(text: str) -> list[dict]:
    """The JSON documents printed one after another."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


def test_a_refresh_decides_under_the_lock_what_another_one_already_wrote(tmp_path):
    """Two refreshes that both saw the same new files before either wrote: the second
    writes nothing (the old code inserted every stage again)."""
    expected = _folder_of(6, tmp_path)
    with ix.ResultIndex(tmp_path) as a, ix.ResultIndex(tmp_path) as b:
        seen, _, _ = ix.scan(a.folder)
        todo = sorted(seen)
        converted = {rel: ix.convert(a.folder / rel) for rel in todo}
        assert b.refresh().read == 6                      # b indexes them first
        assert a._write(seen, todo, converted, None) == (0, 0)  # a, late, finds nothing new
        assert a.conn.execute("SELECT COUNT(*) FROM stage_runs").fetchone()[0] == expected


def test_a_stale_listing_never_removes_what_another_process_added(tmp_path, monkeypatch):
    """A refresh whose scan predates another process's changes: it neither removes the file
    that process added and indexed, nor reports the file that process saw removed."""
    paths = [make_result(tmp_path, "h200", f"n{i}", {"cuda": "pass"}) for i in range(3)]
    _refresh(tmp_path)
    stale = ix.scan(tmp_path)
    paths[0].unlink()
    make_result(tmp_path, "h200", "n9", {"cuda": "pass"})
    assert _refresh(tmp_path).files == 3  # the other process: one gone, one new
    monkeypatch.setattr(ix, "scan", lambda folder, trust=None: stale)
    stats = _refresh(tmp_path)
    assert (stats.files, stats.unreadable) == (3, [])
    monkeypatch.undo()
    assert sorted(p for p in ix.scan(tmp_path)[0]) == sorted(
        p for (p,) in sqlite3.connect(stats.index_path).execute("SELECT path FROM files"))


def test_an_index_created_by_another_process_while_we_look_is_never_judged_foreign(tmp_path, monkeypatch, caplog):
    """The race the 32-reader test once lost: a reader finds the file empty (application id
    0), another process finishes creating the index, and the reader's next look sees the
    schema version. Judged from two different moments, the header looked foreign, and the
    reader deleted the other process's sound index under it: that process then wrote its rows
    into an unlinked file and its matrix answered from the new, empty one (0 runs). The two
    header fields must come from one snapshot.

    Reproduced with real SQLite: the other process's creation (``_create`` on a connection of
    its own) is started just before the reader's second header read, in a thread, and given
    a second to finish."""
    import threading

    folder = tmp_path / "res"
    folder.mkdir()
    path = tmp_path / "index.sqlite"
    real_connect = sqlite3.connect
    started, other_done = threading.Event(), threading.Event()

    def other_process_creates() -> None:
        conn = real_connect(str(path), timeout=30, isolation_level=None)
        try:
            indexdb._create(conn, ix._DDL, ix.INDEX_SCHEMA, str(folder))
        finally:
            conn.close()
            other_done.set()

    def before_statement(sql: str) -> None:
        if sql.strip().upper() == "PRAGMA USER_VERSION" and not started.is_set():
            started.set()
            threading.Thread(target=other_process_creates, daemon=True).start()
            other_done.wait(1.0)  # the old code let it finish here; a snapshot holds it off

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        if not started.is_set():
            conn.set_trace_callback(before_statement)
        return conn

    monkeypatch.setattr(indexdb.sqlite3, "connect", connect)
    with caplog.at_level(logging.WARNING):
        conn = indexdb.open_db(path, ix._DDL, ix.INDEX_SCHEMA, str(folder), wait_s=30)
    conn.close()
    assert started.is_set() and other_done.wait(30)
    assert "rebuilding" not in caplog.text, caplog.text
    with real_connect(str(path)) as check:  # one index, created once, by whichever got the lock first
        assert check.execute("SELECT COUNT(*) FROM meta WHERE key='epoch'").fetchone()[0] == 1


# -- corrupt and foreign indexes -----------------------------------------------------------
def _garbage_past_the_header(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.seek(4096)  # page 1 (the header and schema) stays; every other page is garbage
        fh.write(os.urandom(size - 4096))


@pytest.mark.parametrize("damage", ["whole file", "past the header", "foreign database", "other folder's index"])
def test_a_corrupt_or_foreign_index_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    expected = _folder_of(40, tmp_path / "res")
    db = _refresh(tmp_path / "res").index_path
    if damage == "whole file":
        db.write_bytes(b"this is not sqlite" * 1000)
    elif damage == "past the header":
        _garbage_past_the_header(db)
    elif damage == "foreign database":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE files (path TEXT)")
    else:  # a copy of another folder's index put in its place
        _folder_of(3, tmp_path / "other")
        other = _refresh(tmp_path / "other").index_path
        db.write_bytes(other.read_bytes())
    with caplog.at_level(logging.WARNING):
        stats = _refresh(tmp_path / "res")
    assert any("rebuilding" in r.getMessage() and str(db) in r.getMessage() for r in caplog.records), caplog.text
    assert stats.files == 40 and stats.read == 40
    data = mx.build([tmp_path / "res"])
    assert sum(c["runs"] for r in data["rows"] for c in r["cells"].values() if c) == expected


def test_corruption_met_after_opening_is_rebuilt(tmp_path, caplog, monkeypatch):
    """The file passed its last check (as if the damage happened under a running reader):
    the refresh meets a malformed page and starts again."""
    _folder_of(40, tmp_path)
    db = _refresh(tmp_path).index_path
    _garbage_past_the_header(db)
    monkeypatch.setattr(indexdb, "_checked_before", lambda path: True)
    with caplog.at_level(logging.WARNING):
        stats = _refresh(tmp_path)
    assert "is corrupt" in caplog.text and stats.files == 40


def test_a_sound_index_is_not_checked_again_on_every_open(tmp_path, monkeypatch):
    _folder_of(3, tmp_path)
    mx.build([tmp_path])  # writes the index, then keeps its answer in it: both are our own writes
    found = []
    real = indexdb._checked_before
    monkeypatch.setattr(indexdb, "_checked_before", lambda path: found.append(real(path)) or found[-1])
    _refresh(tmp_path)  # warm: the file is the one the last refresh wrote and marked
    assert found == [True]


# -- a locked index and preflight ----------------------------------------------------------
def _hold_exclusive(db: Path) -> sqlite3.Connection:
    """Lock the index as another program could (no reader nor writer gets in)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("SELECT COUNT(*) FROM files").fetchone()
    return conn


def test_locked_index_preflight_reads_the_files_directly(tmp_path):
    field_report(tmp_path / "res")
    db = _refresh(tmp_path / "res").index_path
    holder = _hold_exclusive(db)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
        env.update({"PYTHONPATH": str(ROOT), INDEX_ENV: os.environ[INDEX_ENV]})
        # bounded far below the 30 s the old busy timeout held preflight for
        proc = subprocess.run([sys.executable, "-m", "gpuprobe", "preflight", "--results", str(tmp_path / "res"),
                               "--fingerprint", str(FIXTURES / "l40s-node.fingerprint.json"), "--stage", "buffer"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=25)
    finally:
        holder.close()
    assert proc.returncode == exitcodes.INCOMPATIBLE, proc.stderr  # the field report's buffer hangs, found anyway
    lines = [line for line in proc.stderr.splitlines() if "locked" in line]
    assert len(lines) == 1 and "read the 4 result files directly" in lines[0], proc.stderr


def test_locked_index_and_too_many_files_answers_75(tmp_path, monkeypatch):
    from gpuprobe.node import fingerprint
    from gpuprobe.store import preflight as pf

    field_report(tmp_path)
    db = _refresh(tmp_path).index_path
    monkeypatch.setattr(pf, "PREFLIGHT_WAIT_S", 0.05)
    monkeypatch.setattr(pf, "DIRECT_LIMIT", 3)  # the field report's 4 files are "too many" here
    holder = _hold_exclusive(db)
    try:
        with pytest.raises(ix.IndexBusy) as err:
            mx.open_evidence([tmp_path], quick=True, wait_s=0.05, direct_limit=3)
        verdict = pf.evaluate([tmp_path], fingerprint.load(FIXTURES / "l40s-node.fingerprint.json"), ["buffer"])
    finally:
        holder.close()
    assert err.value.exit_code == exitcodes.TEMPFAIL == 75
    assert "locked" in str(err.value) and "4 result files" in str(err.value) and "\n" not in str(err.value)
    assert (verdict.verdict, verdict.exit_code) == (pf.TRANSIENT, 75) and "answering 75" in verdict.reason


def test_a_writer_holding_the_lock_does_not_stop_readers(tmp_path):
    """WAL: with another process in a write transaction, an unchanged folder is answered
    from the index without waiting."""
    field_report(tmp_path)
    db = _refresh(tmp_path).index_path
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        idx, stats = ix.open_index(tmp_path, wait_s=0.05, direct_limit=0)
        idx.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert stats.index_path == db and stats.note is None and stats.files == 4


# -- hostile files -------------------------------------------------------------------------
def _hostile(folder: Path) -> set[str]:
    good = json.loads(make_result(folder, "l40s", "n1", {"cuda": "pass", "buffer": "hang"}).read_text())

    def variant(name: str, change) -> None:
        doc = json.loads(json.dumps(good))
        change(doc)
        (folder / f"{name}.result.json").write_text(json.dumps(doc))

    (folder / "notjson.result.json").write_text("{not json")
    (folder / "truncated.result.json").write_text(json.dumps(good)[:500])
    variant("hugeint", lambda d: d["stages"][0].update(gpu=99999999999999999999))
    variant("dictstatus", lambda d: d["stages"][0].update(status={"x": 1}))
    variant("dictreason", lambda d: d["stages"][1].update(reason={"x": 1}))
    variant("surrogate", lambda d: d["fingerprint"].update(hostname="\ud800"))
    variant("nan", lambda d: d["stages"][0].update(duration_s=float("nan")))
    (folder / "deep.result.json").write_text("[" * 200_000 + "]" * 200_000)
    (folder / "latin1.result.json").write_bytes(json.dumps(good, ensure_ascii=False).replace("n1", "n\u00e9").encode("latin-1"))
    (folder / "notours.result.json").write_text("[1, 2]")
    os.mkfifo(folder / "fifo.result.json")
    (folder / "dir.result.json").mkdir()
    os.symlink("loop.result.json", folder / "loop.result.json")
    os.symlink("/nonexistent", folder / "dangling.result.json")
    os.symlink("/dev/zero", folder / "device.result.json")
    with open(folder / "huge.result.json", "wb") as fh:  # sparse: over the cap without using the disk
        fh.truncate(record.MAX_BYTES + 1)
    return {p.name for p in folder.iterdir()} - {f"{good['run_id']}.result.json"}


@pytest.mark.timeout(60)
def test_hostile_files_are_skipped_with_their_reason(tmp_path):
    bad = _hostile(tmp_path)
    stats = _refresh(tmp_path)
    skipped = {Path(s["file"]).name: s["reason"] for s in stats.skipped}
    assert set(skipped) == bad
    assert all(r and "\n" not in r for r in skipped.values()), skipped
    assert "64-bit" in skipped["hugeint.result.json"] and "FIFO" in skipped["fifo.result.json"]
    assert "surrogate" in skipped["surrogate.result.json"] and "NaN" in skipped["nan.result.json"]
    assert "nested too deeply" in skipped["deep.result.json"] and "directory" in skipped["dir.result.json"]
    data = mx.build([tmp_path])
    assert [(r["key"]["gpu_model"], r["cells"]["buffer"]["summary"]) for r in data["rows"]] == [("L40S", "hang 1/1")]
    assert {Path(s["file"]).name for s in data["skipped"]} == bad
    assert _refresh(tmp_path).read == 0  # remembered: not read again until they change


def test_matrix_json_lists_skipped_files(tmp_path, gpuprobe_cli):
    bad = _hostile(tmp_path / "res")
    run = gpuprobe_cli(["matrix", "--json"], results=tmp_path / "res", timeout=60)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert {Path(s["file"]).name for s in data["skipped"]} == bad
    assert all(set(s) == {"file", "reason"} for s in data["skipped"])


def test_an_index_folder_planted_by_someone_else_is_not_used(tmp_path, monkeypatch):
    """In a shared /tmp, a link where our folder should be is refused: the answer comes from
    a throw-away index instead."""
    make_result(tmp_path / "res", "l40s", "n1", {"buffer": "hang"})
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "planted")
    monkeypatch.setenv(indexdir.ENV, str(tmp_path / "planted"))
    stats = _refresh(tmp_path / "res")
    assert stats.index_path is None and stats.files == 1
    assert not list((tmp_path / "elsewhere").rglob("*.sqlite"))
