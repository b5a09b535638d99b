"""Result files: one JSON document per run, written atomically.

Layout (schema 1)::

    {
      "schema": 1, "run_id": "...", "tool": {"name": "gpuprobe", "version": "0.1.0"},
      "started_at": ISO-8601 UTC, "finished_at": ISO-8601 UTC | null, "complete": bool,
      "provenance": {"kind": see gpuprobe.store.provenance, "command": [...], "source": ..., "note": ...},
      "fingerprint": {... see gpuprobe.node.fingerprint.Fingerprint ...},
      "config": {"device": ..., "stages": [...], "timeouts": {...}, "environment": {...}},
      "stages": [StageResult, ...],
      "summary": {"status": worst status, "exit_code": int}
    }

The file is rewritten after every stage, so a run that is killed keeps the stages it
finished (``complete`` stays false). Files are named ``<run_id>.result.json``.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from gpuprobe import atomic, exitcodes
from gpuprobe.store.provenance import PROBED

SCHEMA_VERSION = 1
SUFFIX = ".result.json"

PASS, FAIL, CRASH, HANG, SLOW, UNKILLABLE, SKIP = "pass", "fail", "crash", "hang", "slow", "hang-unkillable", "skip"
STATUSES = (PASS, FAIL, CRASH, HANG, SLOW, UNKILLABLE, SKIP)
# worst first: what a run's summary status is
SEVERITY = (UNKILLABLE, HANG, SLOW, CRASH, FAIL, PASS, SKIP)


class ResultFileError(exitcodes.UsageProblem, ValueError):
    """A result file that cannot be read (corrupt, partial, or not ours)."""


@dataclass
class Mark:
    name: str
    t: float                 # seconds since the stage started
    data: dict = field(default_factory=dict)


@dataclass
class StageResult:
    stage: str
    status: str
    gpu: int | None = None
    device: str | None = None
    reason: str | None = None          # why: skip reason, exception, signal, "no mark for 12 s"
    started_at: str | None = None
    duration_s: float | None = None
    marks: list[Mark] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    error: dict | None = None          # {"type", "message", "traceback"}
    evidence: dict | None = None       # stacks, process and GPU snapshots (hang, slow, crash)
    signatures: list[dict] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)  # the stage's own log events (bounded)
    provenance: str = PROBED           # gpuprobe.store.provenance: the loader resolves drill and simulated

    @property
    def last_mark(self) -> str | None:
        return self.marks[-1].name if self.marks else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["last_mark"] = self.last_mark
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StageResult":
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["marks"] = [Mark(**m) for m in d.get("marks") or []]
        return cls(**fields)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id(hostname: str | None = None) -> str:
    """Sortable by time, unique across nodes writing into one folder."""
    import secrets   # here, not at the top: preflight reads results and never names a run

    # the host is a file name's part: a hostname holding "/" or control characters must not escape it
    host = re.sub(r"[^A-Za-z0-9_-]+", "_", (hostname or os.uname().nodename).split(".")[0]) or "host"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{host}-{secrets.token_hex(3)}"


def worst_status(statuses: list[str]) -> str:
    present = set(statuses)
    for status in SEVERITY:
        if status in present:
            return status
    return SKIP


def exit_code_for(statuses: list[str]) -> int:
    """3 for any hang/slow/unkillable, else 1 for any fail/crash, else 0."""
    present = set(statuses)
    if present & {HANG, SLOW, UNKILLABLE}:
        return exitcodes.HANG
    if present & {FAIL, CRASH}:
        return exitcodes.FAILED
    return exitcodes.OK


def summarise(stages: list[StageResult]) -> dict:
    statuses = [s.status for s in stages]
    return {"status": worst_status(statuses), "exit_code": exit_code_for(statuses),
            "counts": {s: statuses.count(s) for s in STATUSES if s in statuses}}


# -- files ------------------------------------------------------------------------
def write_atomic(path: Path, data: dict | str) -> Path:
    """Write a result (a dict, checked and dumped by :func:`gpuprobe.store.record.dump_record`)
    or text so readers see the old file or the new one.

    A dict that the loader would refuse (NaN in a duration, a GPU index SQLite cannot hold)
    raises :class:`gpuprobe.store.record.RecordError` and nothing is written.
    """
    if not isinstance(data, str):
        from gpuprobe.store.record import dump_record

        data = dump_record(data)
    return atomic.write_atomic(path, data)


def read_result(path: Path) -> dict:
    """A result file's document, through the validating loader (:func:`gpuprobe.store.record.load_record`);
    ``RecordError`` (a ResultFileError) says in one line what is wrong."""
    from gpuprobe.store.record import load_record

    return load_record(path).doc


def iter_result_files(folder: Path) -> Iterator[Path]:
    """Every ``*.result.json`` name under ``folder`` (recursively, never following links), in
    name order; nothing is opened, so read each through the loader (:func:`read_result`)."""
    from gpuprobe.store.runs import result_files

    yield from sorted(p for _, p in result_files(Path(folder)))


def find_run(folder: Path, ref: str) -> Path:
    """A run by path, run id (or unique prefix of one), or ``latest`` (the newest file that
    loads): :func:`gpuprobe.store.runs.find` for one folder, as a path."""
    from gpuprobe.store import runs

    try:
        return runs.find([Path(folder)], ref).path
    except runs.RunNotFound as exc:
        raise FileNotFoundError(str(exc)) from None
