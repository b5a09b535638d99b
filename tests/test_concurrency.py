"""Many writers, one results folder: nothing lost, nothing torn.

A sweep has every node write into one shared folder at once, and a run rewrites its
own file after every stage while `gpuprobe matrix` or a sweep may be reading it. These
tests start real processes (spawn: no state shared with pytest's) that meet at a
barrier, so their writes overlap, while a reader in this process keeps parsing every
file it sees. Each document carries a digest of its own content, so a file stitched
from two writers (not just a truncated one) is caught too.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import threading
import time
from pathlib import Path

import pytest

from gpuprobe.store.results import SUFFIX, ResultFileError, read_result, write_atomic

WRITERS = 32
REWRITES = 6            # each writer rewrites its own file, as a run does after every stage
SAME_PATH_WRITERS = 8
SAME_PATH_REWRITES = 25
PAYLOAD_CHARS = 64_000  # big enough that a non-atomic write would be visible half-done
JOIN_TIMEOUT_S = 120


def _document(writer: int, seq: int) -> dict:
    payload = f"{writer:03d}-{seq:03d}-" * (PAYLOAD_CHARS // 8)
    doc = {"schema": 1, "run_id": f"w{writer:03d}", "writer": writer, "seq": seq, "complete": False,
           "stages": [{"stage": "alloc", "status": "pass", "data": {"payload": payload}}]}
    doc["digest"] = _digest(doc)
    return doc


def _digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_own(folder: str, writer: int, barrier) -> None:
    barrier.wait(timeout=60)
    for seq in range(REWRITES):
        write_atomic(Path(folder) / f"w{writer:03d}{SUFFIX}", _document(writer, seq))


def _write_same(path: str, writer: int, barrier) -> None:
    barrier.wait(timeout=60)
    for seq in range(SAME_PATH_REWRITES):
        write_atomic(Path(path), _document(writer, seq))


class Reader(threading.Thread):
    """Reads every result file in a loop until told to stop; keeps what went wrong."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder = folder
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.folder.glob(f"*{SUFFIX}"):
                try:
                    doc = read_result(path)
                except ResultFileError as exc:
                    if path.exists():   # gone between glob and read is fine; half a file is not
                        self.problems.append(str(exc))
                    continue
                self.reads += 1
                if doc.get("digest") != _digest(doc):
                    self.problems.append(f"{path.name}: content does not match its digest (mixed writers)")


def _run_all(procs: list, reader: Reader) -> None:
    reader.start()
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    reader.stop.set()
    reader.join(timeout=30)
    assert not alive, f"{len(alive)} writer(s) still running after {JOIN_TIMEOUT_S} s"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def test_32_writers_one_folder_nothing_lost_or_torn(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_write_own, args=(str(tmp_path), i, barrier)) for i in range(WRITERS)]
    reader = Reader(tmp_path)
    _run_all(procs, reader)

    assert reader.problems == []
    assert reader.reads > 0, "the reader never overlapped the writers: the test proved nothing"
    files = sorted(tmp_path.glob(f"*{SUFFIX}"))
    assert len(files) == WRITERS
    for i, path in enumerate(files):
        doc = read_result(path)
        assert (doc["writer"], doc["seq"]) == (i, REWRITES - 1)   # the last rewrite won
        assert doc["digest"] == _digest(doc)
    assert list(tmp_path.glob("*.tmp")) == [], "temporary files left behind"


def test_rewrites_of_one_path_never_leave_a_torn_file(tmp_path: Path) -> None:
    target = tmp_path / f"run{SUFFIX}"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(SAME_PATH_WRITERS)
    procs = [ctx.Process(target=_write_same, args=(str(target), i, barrier)) for i in range(SAME_PATH_WRITERS)]
    reader = Reader(tmp_path)
    _run_all(procs, reader)

    assert reader.problems == []
    assert reader.reads > 0
    doc = read_result(target)
    assert doc["digest"] == _digest(doc)
    assert doc["seq"] == SAME_PATH_REWRITES - 1   # some writer's last version, whole
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_reader_would_notice_a_torn_file(tmp_path: Path) -> None:
    """The checks above are only worth something if half a file is detected: it is."""
    path = tmp_path / f"torn{SUFFIX}"
    text = json.dumps(_document(1, 1))
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ResultFileError, match="corrupt or partial"):
        read_result(path)
    mixed = _document(1, 1)
    mixed["stages"] = _document(2, 1)["stages"]
    assert mixed["digest"] != _digest(mixed)
