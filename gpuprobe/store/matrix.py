"""The compatibility matrix: what works where, summarised from the result index.

Rows are a grouping of the runs (``stack``: GPU model, arch, driver, CUDA, torch, dflex;
``model``: the GPU model; ``node``: the host), columns are stages, and a cell summarises
the runs of that row and stage: counts by status ("hang 3/3"), the latest status, the
last time and the median duration, the latest run ids and hosts, and the known-issue
signatures their evidence matched. The aggregation runs inside SQLite over the per-folder
indexes (:mod:`gpuprobe.store.index`), so 100k result files stay interactive.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpuprobe.store import provenance as prov
from gpuprobe.store.index import (BUSY_TIMEOUT_S, STACK_FIELDS, RefreshStats, describe_unreadable, normalise_time,
                                  open_index, skipped_files)
from gpuprobe.store.indexdb import mark_sound
from gpuprobe.store.results import SEVERITY, utc_now
from gpuprobe.run.stages import STAGE_NAMES, STATIC_STAGES

log = logging.getLogger(__name__)

VIEWS = ("stack", "model", "node")
OBSERVED_STAGES = ("job",)   # stages of the user's own jobs (gpuprobe attach / watch)
PROVENANCES = prov.PROVENANCES
# A row is split by exercise: drills and simulations never share a row (or its counts) with
# evidence, and their row key says which they are, so every view labels them.
LABEL_SEP = "\x1f"
_LABEL_SQL = (f"CASE WHEN provenance IN ({','.join(repr(p) for p in prov.EXERCISES)}) "
              f"THEN '{LABEL_SEP}' || provenance ELSE '' END")
MAX_FOLDERS = 9          # SQLite attaches at most 10 databases; one slot stays free
LATEST_RUNS = 3          # run ids kept per cell
_GROUP = {"stack": "stack_id", "model": "gpu_model", "node": "hostname"}


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


def cell_summary(counts: dict[str, int]) -> str:
    """ "hang 3/3"; mixed cells list every status, worst first: "hang 2/5, pass 3/5"."""
    total = sum(counts.values())
    order = [s for s in SEVERITY if s in counts] + sorted(s for s in counts if s not in SEVERITY)
    return ", ".join(f"{s} {counts[s]}/{total}" for s in order)


def _stack_labels(conn: sqlite3.Connection) -> dict[str, dict]:
    out = {}
    for row in conn.execute(f"SELECT stack_id, {', '.join(STACK_FIELDS)}, facts FROM stacks"):
        out[row[0]] = {**dict(zip(STACK_FIELDS, row[1:-1])), "facts": json.loads(row[-1] or "{}")}
    return out


def query_cells(conn: sqlite3.Connection, view: str, flt: MatrixFilter) -> dict[tuple[str, str], dict]:
    """(row id, stage) -> cell dict, aggregated inside SQLite."""
    if view not in VIEWS:
        raise MatrixError(f"unknown view {view!r} (known: {', '.join(VIEWS)})")
    g = _GROUP[view]
    where, args = flt.sql()
    base = f"SELECT {g} || {_LABEL_SQL} AS g, * FROM runs{where}"
    cells: dict[tuple[str, str], dict] = {}
    for gid, stage, status, n in conn.execute(
            f"SELECT g, stage, status, COUNT(*) FROM ({base}) GROUP BY g, stage, status", args):
        cell = cells.setdefault((gid, stage), {"runs": 0, "counts": {}, "median_duration_s": None,
                                               "last_at": None, "status": None, "latest": [], "signatures": []})
        cell["counts"][status] = n
        cell["runs"] += n
    med: dict[tuple[str, str], list[float]] = defaultdict(list)
    for gid, stage, dur in conn.execute(
            f"SELECT g, stage, duration_s FROM (SELECT g, stage, duration_s,"
            f" ROW_NUMBER() OVER (PARTITION BY g, stage ORDER BY duration_s) AS rn,"
            f" COUNT(*) OVER (PARTITION BY g, stage) AS c FROM ({base}) WHERE duration_s IS NOT NULL)"
            f" WHERE rn IN ((c + 1) / 2, (c + 2) / 2)", args):
        med[(gid, stage)].append(dur)
    for key, values in med.items():
        if key in cells:
            cells[key]["median_duration_s"] = round(sum(values) / len(values), 3)
    for gid, stage, status, at, run_id, host in conn.execute(
            f"SELECT g, stage, status, at, run_id, hostname FROM (SELECT g, stage, status, at, run_id, hostname,"
            f" ROW_NUMBER() OVER (PARTITION BY g, stage ORDER BY at DESC, run_id DESC) AS rn FROM ({base}))"
            f" WHERE rn <= {LATEST_RUNS} ORDER BY g, stage, rn", args):
        cell = cells[(gid, stage)]
        if cell["status"] is None:
            cell["status"], cell["last_at"] = status, at
        cell["latest"].append({"run_id": run_id, "host": host, "status": status, "at": at})
    for gid, stage, sigs, n in conn.execute(
            f"SELECT g, stage, signatures, COUNT(*) FROM ({base}) WHERE signatures IS NOT NULL"
            f" GROUP BY g, stage, signatures", args):
        seen = {s["id"] for s in cells[(gid, stage)]["signatures"]}
        for sig in json.loads(sigs):
            if sig.get("id") not in seen:
                cells[(gid, stage)]["signatures"].append({**sig, "runs": n})
                seen.add(sig.get("id"))
    for cell in cells.values():
        cell["summary"] = cell_summary(cell["counts"])
    return cells


def _row(view: str, gid: str, stages: list[str], cells: dict, stacks: dict[str, dict],
         conn: sqlite3.Connection) -> dict:
    """A row: its id (with its exercise, if any: "H200 (simulated)"), key and cells."""
    base, _, exercise = gid.partition(LABEL_SEP)
    key = _row_label(view, base, stacks, conn)
    if exercise:
        key["provenance"] = exercise
    return {"id": f"{base} ({exercise})" if exercise else base, "key": key,
            "cells": {s: cells.get((gid, s)) for s in stages}}


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
    known = STATIC_STAGES + STAGE_NAMES + OBSERVED_STAGES
    unknown = set(flt.stages) - set(known)
    if unknown:
        raise MatrixError(f"unknown stage {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    ev = open_evidence(folders, cache=cache)
    try:
        assert ev.conn is not None
        # the user's jobs (attach/watch) and static checks (gpuprobe kernels --save) get a column once some exist
        present = {s for s in STATIC_STAGES + OBSERVED_STAGES
                   if ev.conn.execute("SELECT 1 FROM runs WHERE stage=? LIMIT 1", (s,)).fetchone()}
        stages = [s for s in known if (not flt.stages or s in flt.stages)
                  and (s not in OBSERVED_STAGES + STATIC_STAGES or s in present)]
        key = _answer_key(ev, view, flt)
        cached = _stored_answer(ev.conn, key) if key else None
        if cached is not None:
            rows = json.loads(cached)
        else:
            cells = query_cells(ev.conn, view, flt)
            stacks = _stack_labels(ev.conn)
            row_ids = sorted({gid for gid, _ in cells}, key=lambda r: str(r))
            rows = [_row(view, gid, stages, cells, stacks, ev.conn) for gid in row_ids]
            if key:
                _store_answer(ev.conn, key, json.dumps(rows), ev.stats[0].index_path)
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


# Aggregating 350k stage rows takes seconds in SQLite on a small machine, so the rows of
# an answer are kept in the first folder's index until any folder's index changes (the
# key holds every folder's generation). A warm run over unchanged results is then a
# stat of every file plus one lookup.
MAX_ANSWERS = 64


def _answer_key(ev: Evidence, view: str, flt: MatrixFilter) -> str | None:
    if any(s.index_path is None for s in ev.stats):
        return None  # a throw-away index: nothing to keep the answer in
    assert ev.conn is not None
    gens = [ev.conn.execute(f"SELECT value FROM i{i}.meta WHERE key='generation'").fetchone()[0]
            for i in range(len(ev.stats))]
    return json.dumps({"view": view, "filters": asdict(flt), "folders": [str(f) for f in ev.folders],
                       "generations": gens}, sort_keys=True)


def _stored_answer(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT data FROM i0.answers WHERE key=?", (key,)).fetchone()
    return row[0] if row else None


def _store_answer(conn: sqlite3.Connection, key: str, data: str, index_path: Path | None = None) -> None:
    try:
        conn.execute("INSERT OR REPLACE INTO i0.answers VALUES (?, 0, ?)", (key, data))
        conn.execute(f"DELETE FROM i0.answers WHERE rowid NOT IN (SELECT rowid FROM i0.answers"
                     f" ORDER BY rowid DESC LIMIT {MAX_ANSWERS})")
    except sqlite3.OperationalError as exc:  # read-only or busy: the answer is only a shortcut
        log.info("answer not kept: %s", exc)
        return
    if index_path is not None:  # our own write: the next open need not check the file again
        mark_sound(index_path, conn, "i0")


def _columns(view: str) -> list[str]:
    return {"stack": list(STACK_FIELDS), "model": ["gpu_model"], "node": ["hostname", "gpu_model"]}[view]
