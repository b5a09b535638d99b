"""Which matrix cells each change of an index touched, so that a kept matrix answer is brought
up to date by recomputing those cells only (:mod:`gpuprobe.store.matrixcells`).

Every write transaction of the index that adds, replaces or removes a file's stage rows
raises the index's ``generation`` by one and records, in the same transaction, the cell keys
``(stack_id, gpu_model, hostname, stage)`` of the rows it removed and of the rows it added.
Any view's cell is a grouping of these keys (plus the provenance label, which only splits a
cell further), so "the cells of view V touched between generations S and G" is a lookup here.
Being written in the same transaction as the rows, the log is exact under any number of
concurrent writers: a reader's snapshot never sees rows without their log entries.

The log keeps the last KEEP_GENERATIONS generations; an answer older than that is recomputed
from scratch.
"""

from __future__ import annotations

import sqlite3

KEEP_GENERATIONS = 512

DDL = """
CREATE TABLE IF NOT EXISTS changes (generation INTEGER NOT NULL, stack_id TEXT, gpu_model TEXT, hostname TEXT,
  stage TEXT);
CREATE INDEX IF NOT EXISTS changes_generation ON changes(generation);
"""

Key = tuple  # (stack_id, gpu_model, hostname, stage)


def keys_of_file(cur: sqlite3.Connection, rel: str) -> set[Key]:
    """The cell keys of the stage rows the index holds for file ``rel`` (before they go)."""
    return set(cur.execute("SELECT DISTINCT stack_id, gpu_model, hostname, stage FROM stage_runs WHERE path=?",
                           (rel,)))


def keys_of_rows(rows: list[tuple]) -> set[Key]:
    """The cell keys of new stage rows (index.STAGE_COLUMNS order: stage 1, hostname 7,
    stack_id 8, gpu_model 9)."""
    return {(r[8], r[9], r[7], r[1]) for r in rows}


def bump(cur: sqlite3.Connection, touched: set[Key]) -> int:
    """Inside the writer's transaction: the next generation, with the keys it touched."""
    cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    gen = int(cur.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    cur.executemany("INSERT INTO changes VALUES (?, ?, ?, ?, ?)", [(gen, *k) for k in touched])
    cur.execute("DELETE FROM changes WHERE generation <= ?", (gen - KEEP_GENERATIONS,))
    return gen


def covers(since: int, now: int) -> bool:
    """Whether the log still holds every generation in (since, now]."""
    return now - KEEP_GENERATIONS <= since <= now
