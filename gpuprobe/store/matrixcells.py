"""The matrix's cells, computed one cell at a time, and kept answers brought up to date by
recomputing only the cells that changed.

A cell is the runs of one row and stage: the rows of a view are ``stack_id``, ``gpu_model`` or
``hostname`` (split further by exercise: drills and simulations get rows of their own), so
every cell lies within one ``(group value, stage)`` pair, and the index has, per view, an
index on ``(group, stage, provenance, status, duration_s, at)`` and one on
``(group, stage, provenance, at, run_id)``. A pair's cells are then computed from that pair's
entries alone (counts by a scan in index order, the median by an ordered scan, the newest runs
by a seek), never from the whole folder.

A computed answer is kept in the first folder's index together with each folder's index
epoch and generation. When a folder changes, its change log (:mod:`gpuprobe.store.indexlog`)
names the ``(group, stage)`` pairs the change touched, and only those are recomputed; the
rest of the kept answer stands. All of it is read in one read transaction, so the answer is
exactly the index's state at the generations it is kept under.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Callable

from gpuprobe.store import indexlog
from gpuprobe.store import provenance as prov
from gpuprobe.store.indexdb import mark_sound
from gpuprobe.store.results import SEVERITY

log = logging.getLogger(__name__)

# A row is split by exercise: drills and simulations never share a row (or its counts) with
# evidence, and their row key says which they are, so every view labels them.
LABEL_SEP = "\x1f"
GROUP = {"stack": "stack_id", "model": "gpu_model", "node": "hostname"}
LATEST_RUNS = 3          # run ids kept per cell
MAX_ANSWERS = 64         # answers kept per index (views x filters x folder sets)

Cells = dict  # (row id, stage) -> cell dict


def cell_summary(counts: dict[str, int]) -> str:
    """ "hang 3/3"; mixed cells list every status, worst first: "hang 2/5, pass 3/5"."""
    total = sum(counts.values())
    order = [s for s in SEVERITY if s in counts] + sorted(s for s in counts if s not in SEVERITY)
    return ", ".join(f"{s} {counts[s]}/{total}" for s in order)


def base_of(gid: str | None) -> str | None:
    """The group value of a row id (the row id less its exercise label)."""
    return gid.partition(LABEL_SEP)[0] if gid is not None else None


def pairs_of(conn: sqlite3.Connection, view: str, where: str, args: list) -> list[tuple]:
    """Every ``(group value, stage)`` with a run the filter keeps."""
    return conn.execute(f"SELECT DISTINCT {GROUP[view]}, stage FROM runs{where}", args).fetchall()


def _label(provenance: str | None) -> str:
    """A row id's exercise label for runs of this provenance (LABEL_SQL, in Python)."""
    return LABEL_SEP + provenance if provenance in prov.EXERCISES else ""


def _in_label(label: str) -> tuple[str, list]:
    """The runs of one label, as conditions on ``provenance`` that the per-view index serves."""
    if label:
        return " AND provenance = ?", [label[len(LABEL_SEP):]]
    marks = ",".join("?" * len(prov.EXERCISES))
    return f" AND (provenance IS NULL OR provenance NOT IN ({marks}))", list(prov.EXERCISES)


def compute_pair(conn: sqlite3.Connection, view: str, where: str, args: list, value: str | None,
                 stage: str) -> Cells:
    """The cells of one ``(group value, stage)``: one per exercise label found there."""
    col = GROUP[view]
    cond = f"{where}{' AND' if where else ' WHERE'} {col} IS ? AND stage = ?"
    base = [*args, value, stage]
    # a NULL group value makes a NULL row id whatever the label: one cell, as the whole
    label_of = _label if value is not None else (lambda _p: "")
    cells: Cells = {}
    with_durations: dict[str, int] = {}
    provenances: dict[str, list] = {}
    # grouped in the index's own order (provenance, status): no sort, no expression per run
    for provenance, status, n, n_dur in conn.execute(
            f"SELECT provenance, status, COUNT(*), COUNT(duration_s) FROM runs{cond} GROUP BY provenance, status",
            base):
        label = label_of(provenance)
        cell = cells.setdefault(label, {"runs": 0, "counts": {}, "median_duration_s": None, "last_at": None,
                                        "status": None, "latest": [], "signatures": []})
        cell["counts"][status] = cell["counts"].get(status, 0) + n
        cell["runs"] += n
        with_durations[label] = with_durations.get(label, 0) + n_dur
        if provenance not in provenances.setdefault(label, []):
            provenances[label].append(provenance)
    for label, cell in cells.items():
        cell["counts"] = dict(sorted(cell["counts"].items()))
        extra, extra_args = _in_label(label) if value is not None else ("", [])
        in_cell, args_cell = cond + extra, [*base, *extra_args]
        n = with_durations[label]
        if n:  # the middle one or two durations, found by an ordered scan of the cell's entries
            mid = [r[0] for r in conn.execute(
                f"SELECT duration_s FROM runs{in_cell} AND duration_s IS NOT NULL ORDER BY duration_s"
                f" LIMIT {1 if n % 2 else 2} OFFSET {(n - 1) // 2}", args_cell)]
            cell["median_duration_s"] = round(sum(mid) / len(mid), 3)
        # the newest runs: per provenance, a seek into the (group, stage, provenance, at) index
        # for the LATEST_RUNS newest, then the newest of those
        newest = []
        for provenance in provenances[label]:
            newest += conn.execute(
                f"SELECT status, at, run_id, hostname FROM runs{cond} AND provenance IS ?"
                f" ORDER BY at DESC, run_id DESC, hostname DESC, status DESC LIMIT {LATEST_RUNS}",
                [*base, provenance]).fetchall()
        # SQLite's descending order, NULL last: (status, at, run_id, host) by at, run_id, host, status
        newest.sort(key=lambda r: [(v is not None, v or "") for v in (r[1], r[2], r[3], r[0])], reverse=True)
        for status, at, run_id, host in newest[:LATEST_RUNS]:
            if cell["status"] is None:
                cell["status"], cell["last_at"] = status, at
            cell["latest"].append({"run_id": run_id, "host": host, "status": status, "at": at})
    # signatures: runs counted per (label, signature list) across provenances, in the list's order
    signed: dict[tuple[str, str], int] = {}
    for provenance, sigs, n in conn.execute(
            f"SELECT provenance, signatures, COUNT(*) FROM runs{cond} AND signatures IS NOT NULL"
            f" GROUP BY provenance, signatures", base):
        signed[(label_of(provenance), sigs)] = signed.get((label_of(provenance), sigs), 0) + n
    for (label, sigs), n in sorted(signed.items()):
        cell = cells[label]
        seen = {s["id"] for s in cell["signatures"]}
        for sig in json.loads(sigs):
            if sig.get("id") not in seen:
                cell["signatures"].append({**sig, "runs": n})
                seen.add(sig.get("id"))
    out: Cells = {}
    for label, cell in cells.items():
        cell["summary"] = cell_summary(cell["counts"])
        out[(value + label if value is not None else None, stage)] = cell
    return out


# -- kept answers ---------------------------------------------------------------------
def stamps_of(conn: sqlite3.Connection, folders: int) -> list[list]:
    """``[epoch, generation]`` of each attached index ``i0``, ``i1``, ...: what an answer is kept under."""
    out = []
    for i in range(folders):
        meta = dict(conn.execute(f"SELECT key, value FROM i{i}.meta WHERE key IN ('epoch', 'generation')"))
        out.append([meta.get("epoch"), int(meta.get("generation") or 0)])
    return out


def touched_pairs(conn: sqlite3.Connection, view: str, kept: list[list], now: list[list]) -> set[tuple] | None:
    """The ``(group value, stage)`` pairs changed since ``kept``, or None when the change logs
    cannot say (another index file, or older than the logs keep)."""
    if len(kept) != len(now):
        return None
    col = GROUP[view]
    pairs: set[tuple] = set()
    for i, ((epoch0, gen0), (epoch, gen)) in enumerate(zip(kept, now)):
        if epoch0 != epoch or not indexlog.covers(gen0, gen):
            return None
        if gen0 != gen:
            pairs.update(conn.execute(f"SELECT DISTINCT {col}, stage FROM i{i}.changes"
                                      f" WHERE generation > ? AND generation <= ?", (gen0, gen)))
    return pairs


def answer(conn: sqlite3.Connection, view: str, where: str, args: list, key: str | None,
           folders: int, label_of: Callable[[str | None], dict]) -> tuple[Cells, dict, tuple | None]:
    """The cells and row labels (row id -> key dict) of the matrix, from the kept answer for
    ``key`` where there is one, with the changed cells recomputed, and what to keep
    (:func:`keep`, once the read transaction is over; None when the kept answer was current).
    ``key`` None: nothing is kept (a throw-away index), everything is computed."""
    stamps = stamps_of(conn, folders) if key else []
    kept = _load(conn, key) if key else None
    pairs = None
    if kept is not None:
        if kept[0] == stamps:
            return kept[1], kept[2], None
        pairs = touched_pairs(conn, view, kept[0], stamps)
    if pairs is None:
        cells, labels = {}, {}
        pairs = set(pairs_of(conn, view, where, args))
    else:
        cells = {k: c for k, c in kept[1].items() if (base_of(k[0]), k[1]) not in pairs}
        groups = {v for v, _ in pairs}
        labels = {g: lab for g, lab in kept[2].items() if base_of(g) not in groups}
    for value, stage in sorted(pairs, key=lambda p: (str(p[0]), p[1])):
        cells.update(compute_pair(conn, view, where, args, value, stage))
    rows = {gid for gid, _ in cells}
    labels = {g: lab for g, lab in labels.items() if g in rows}
    for gid in rows - labels.keys():
        labels[gid] = label_of(gid)
    return cells, labels, ((key, stamps, cells, labels) if key else None)


def _load(conn: sqlite3.Connection, key: str) -> tuple[list, Cells, dict] | None:
    row = conn.execute("SELECT generations, data FROM i0.answers WHERE key=?", (key,)).fetchone()
    if not row:
        return None
    data = json.loads(row[1])
    return (json.loads(row[0]), {(g, s): c for g, s, c in data["cells"]},
            {g: lab for g, lab in data["labels"]})


def keep(conn: sqlite3.Connection, kept: tuple, index_path: Path | None) -> None:
    """Write an answer (from :func:`answer`) into the first folder's index."""
    key, stamps, cells, labels = kept
    data = json.dumps({"cells": [[g, s, c] for (g, s), c in cells.items()],
                       "labels": [[g, lab] for g, lab in labels.items()]})
    try:
        conn.execute("INSERT OR REPLACE INTO i0.answers VALUES (?, ?, ?)", (key, json.dumps(stamps), data))
        conn.execute(f"DELETE FROM i0.answers WHERE rowid NOT IN (SELECT rowid FROM i0.answers"
                     f" ORDER BY rowid DESC LIMIT {MAX_ANSWERS})")
    except sqlite3.OperationalError as exc:  # read-only or busy: the answer is only a shortcut
        log.info("answer not kept: %s", exc)
        return
    if index_path is not None:  # our own write: the next open need not check the file again
        mark_sound(index_path, conn, "i0")


def index_copy(conn: sqlite3.Connection, table: str, ddl: str) -> None:
    """Give a temporary copy of ``stage_runs`` the index's own per-view indexes (from ``ddl``),
    so that its cells are computed as fast as from an index file."""
    for statement in ddl.split(";"):
        if "ON stage_runs(" in statement:
            conn.execute(statement.replace("stage_runs_", f"{table}_").replace("ON stage_runs(", f"ON {table}("))
