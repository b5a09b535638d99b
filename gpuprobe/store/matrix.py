"""The compatibility matrix: what works where, summarised from the result index.

Rows are a grouping of the runs (``stack``: GPU model, arch, driver, CUDA, torch, dflex;
``model``: the GPU model; ``node``: the host), columns are stages, and a cell summarises
the runs of that row and stage: counts by status ("hang 3/3"), the latest status, the
last time and the median duration, the latest run ids and hosts, and the known-issue
signatures their evidence matched. The aggregation runs inside SQLite over the per-folder
indexes (:mod:`gpuprobe.store.index`), one cell at a time, and answers are kept in the index
and brought up to date by recomputing only the cells a change touched
(:mod:`gpuprobe.store.matrixcells`), so 100k result files stay interactive as results arrive.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpuprobe.store import matrixcells as mc
from gpuprobe.store import provenance as prov
from gpuprobe.store.index import (_DDL, BUSY_TIMEOUT_S, STACK_FIELDS, RefreshStats, describe_unreadable,
                                  normalise_time, open_index, skipped_files)
from gpuprobe.store.matrixcells import LABEL_SEP, LATEST_RUNS, cell_summary  # noqa: F401 - importable from here as before
from gpuprobe.store.results import utc_now
from gpuprobe.run.stages import STAGE_NAMES, STATIC_STAGES

log = logging.getLogger(__name__)

VIEWS = ("stack", "model", "node")
OBSERVED_STAGES = ("job",)   # stages of the user's own jobs (gpuprobe attach / watch)
PROVENANCES = prov.PROVENANCES
MAX_FOLDERS = 9          # SQLite attaches at most 10 databases; one slot stays free


class MatrixError(ValueError):
    """Bad matrix input (unknown view, too many folders, bad date): a usage error."""


@dataclass
class MatrixFilter:
    models: tuple[str, ...] = ()          # GPU models, case-insensitive ("L40S")
    stages: tuple[str, ...] = ()          # columns to keep; empty: all
    since: str | None = None              # ISO date or time; runs at or after it
    provenance: tuple[str, ...] = ()      # empty: evidence only (no drills, no simulations); ("all",): everything
    hosts: tuple[str, ...] = ()

    def sql(self) -> tuple[str, list]:
        where, args = [], []
        if self.models:
            where.append(f"lower(gpu_model) IN ({','.join('?' * len(self.models))})")
            args += [m.lower() for m in self.models]
        if self.stages:
            where.append(f"stage IN ({','.join('?' * len(self.stages))})")
            args += list(self.stages)
        if self.since:
            since = normalise_time(self.since)
            if since is None:
                raise MatrixError(f"--since {self.since!r} is not an ISO date like 2025-11-01 or 2025-11-01T12:00")
            where.append("at >= ?")
            args.append(since)
        if prov.ALL in self.provenance:
            pass
        elif self.provenance:
            bad = set(self.provenance) - set(PROVENANCES)
            if bad:
                raise MatrixError(f"unknown provenance {', '.join(sorted(bad))} "
                                  f"(known: {', '.join(PROVENANCES + (prov.ALL,))})")
            where.append(f"provenance IN ({','.join('?' * len(self.provenance))})")
            args += list(self.provenance)
        else:   # the default: drills and simulations test gpuprobe, not the nodes
            where.append(f"provenance NOT IN ({','.join('?' * len(prov.EXERCISES))})")
            args += list(prov.EXERCISES)
        if self.hosts:
            where.append(f"hostname IN ({','.join('?' * len(self.hosts))})")
            args += list(self.hosts)
        return (" WHERE " + " AND ".join(where)) if where else "", args


@dataclass
class Evidence:
    """Open indexes over one or more results folders, refreshed, queryable as one."""

    folders: list[Path]
    stats: list[RefreshStats] = field(default_factory=list)
    conn: sqlite3.Connection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @property
    def unreadable_message(self) -> str | None:
        return describe_unreadable(self.stats)


def open_evidence(folders: list[Path], cache: bool = True, quick: bool = False, wait_s: float = BUSY_TIMEOUT_S,
                  direct_limit: int | None = None) -> Evidence:
    """Refresh each folder's index and attach them all to one in-memory connection.

    The union views ``runs`` and ``stacks`` cover every folder; ``quick`` trusts folder
    mtimes (preflight) instead of stat-ing every file (matrix). ``wait_s`` and
    ``direct_limit``: what to do when an index is locked (:func:`open_index`).
    """
    folders = list(dict.fromkeys(Path(f).expanduser().resolve() for f in folders))
    if len(folders) > MAX_FOLDERS:
        raise MatrixError(f"at most {MAX_FOLDERS} results folders at once, got {len(folders)}")
    ev = Evidence(folders)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    with ExitStack() as stack:
        for i, folder in enumerate(folders):
            idx, stats = open_index(folder, cache=cache, quick=quick, wait_s=wait_s, direct_limit=direct_limit)
            stack.enter_context(idx)
            ev.stats.append(stats)
            conn.execute(f"ATTACH DATABASE ? AS i{i}", (str(idx.db_file),))
            if idx.path is None:  # throw-away index: copy it before the file goes
                conn.execute(f"CREATE TEMP TABLE t{i}_runs AS SELECT * FROM i{i}.stage_runs")
                mc.index_copy(conn, f"t{i}_runs", _DDL)
                conn.execute(f"CREATE TEMP TABLE t{i}_stacks AS SELECT * FROM i{i}.stacks")
                conn.execute(f"DETACH DATABASE i{i}")
    parts_runs, parts_stacks = [], []
    for i, s in enumerate(ev.stats):
        src = f"i{i}" if s.index_path is not None else None
        parts_runs.append(f"SELECT * FROM {src}.stage_runs" if src else f"SELECT * FROM temp.t{i}_runs")
        parts_stacks.append(f"SELECT * FROM {src}.stacks" if src else f"SELECT * FROM temp.t{i}_stacks")
    if not parts_runs:
        raise MatrixError("no results folder given")
    conn.execute("CREATE TEMP VIEW runs AS " + " UNION ALL ".join(parts_runs))
    conn.execute("CREATE TEMP VIEW stacks AS " + " UNION ALL ".join(parts_stacks))
    ev.conn = conn
    return ev


def _stack_labels(conn: sqlite3.Connection) -> dict[str, dict]:
    out = {}
    for row in conn.execute(f"SELECT stack_id, {', '.join(STACK_FIELDS)}, facts FROM stacks"):
        out[row[0]] = {**dict(zip(STACK_FIELDS, row[1:-1])), "facts": json.loads(row[-1] or "{}")}
    return out


def _row_id(gid: str | None) -> str | None:
    """A row's id: its group value, with its exercise if any ("H200 (simulated)")."""
    if gid is None:
        return None
    base, _, exercise = gid.partition(LABEL_SEP)
    return f"{base} ({exercise})" if exercise else base


def _row_key(view: str, gid: str | None, stacks: dict[str, dict], conn: sqlite3.Connection) -> dict:
    base, _, exercise = (gid or "").partition(LABEL_SEP)
    key = _row_label(view, base if gid is not None else None, stacks, conn)
    if exercise:
        key["provenance"] = exercise
    return key


def _row_label(view: str, gid: str, stacks: dict[str, dict], conn: sqlite3.Connection) -> dict:
    if view == "stack":
        s = stacks.get(gid) or {}
        return {k: s.get(k, "-") for k in STACK_FIELDS}
    if view == "model":
        return {"gpu_model": gid}
    models = [r[0] for r in conn.execute("SELECT DISTINCT gpu_model FROM runs WHERE hostname=? ORDER BY 1", (gid,))]
    return {"hostname": gid, "gpu_model": ", ".join(models)}


def build(folders: list[Path], view: str = "stack", flt: MatrixFilter | None = None, cache: bool = True) -> dict:
    """The matrix as one JSON-ready dict; every renderer starts from it."""
    flt = flt or MatrixFilter()
    if view not in VIEWS:
        raise MatrixError(f"unknown view {view!r} (known: {', '.join(VIEWS)})")
    known = STATIC_STAGES + STAGE_NAMES + OBSERVED_STAGES
    unknown = set(flt.stages) - set(known)
    if unknown:
        raise MatrixError(f"unknown stage {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    ev = open_evidence(folders, cache=cache)
    try:
        assert ev.conn is not None
        where, args = flt.sql()
        stacks: dict[str, dict] = {}

        def label_of(gid: str | None) -> dict:
            if view == "stack" and not stacks:
                stacks.update(_stack_labels(ev.conn))
            return _row_key(view, gid, stacks, ev.conn)

        # one read transaction: the answer is the indexes' state at the generations it is kept under
        ev.conn.execute("BEGIN")
        try:
            # the user's jobs (attach/watch) and static checks (gpuprobe kernels --save) get a column once
            # some exist; asked per GPU model (every run's is in stacks), a seek into the model index each
            present = {s for s in STATIC_STAGES + OBSERVED_STAGES if ev.conn.execute(
                "SELECT 1 FROM runs WHERE gpu_model IN (SELECT gpu_model FROM stacks) AND stage=? LIMIT 1",
                (s,)).fetchone()}
            cells, labels, kept = mc.answer(ev.conn, view, where, args, _answer_key(ev, view, flt),
                                            len(ev.stats), label_of)
        finally:
            ev.conn.execute("COMMIT")
        if kept is not None:
            mc.keep(ev.conn, kept, ev.stats[0].index_path)
        stages = [s for s in known if (not flt.stages or s in flt.stages)
                  and (s not in OBSERVED_STAGES + STATIC_STAGES or s in present)]
        rows = [{"id": _row_id(gid), "key": dict(labels[gid]), "cells": {s: cells.get((gid, s)) for s in stages}}
                for gid in sorted(labels, key=str)]
    finally:
        ev.close()
    columns = _columns(view) + (["provenance"] if any("provenance" in r["key"] for r in rows) else [])
    for r in rows:
        if "provenance" in columns:
            r["key"].setdefault("provenance", "-")
    return {
        "view": view, "stages": stages, "columns": columns, "rows": rows,
        "filters": {k: v for k, v in asdict(flt).items() if v},
        "sources": [{"folder": str(s.folder), "files": s.files, "read": s.read,
                     "index": str(s.index_path) if s.index_path else None} for s in ev.stats],
        "skipped": skipped_files(ev.stats),
        "skipped_message": ev.unreadable_message, "generated_at": utc_now(),
    }


def _answer_key(ev: Evidence, view: str, flt: MatrixFilter) -> str | None:
    """What a kept answer is for (the indexes' epochs and generations are kept beside it)."""
    if any(s.index_path is None for s in ev.stats):
        return None  # a throw-away index: nothing to keep the answer in
    return json.dumps({"view": view, "filters": asdict(flt), "folders": [str(f) for f in ev.folders]},
                      sort_keys=True)


def _columns(view: str) -> list[str]:
    return {"stack": list(STACK_FIELDS), "model": ["gpu_model"], "node": ["hostname", "gpu_model"]}[view]
