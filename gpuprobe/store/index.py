"""A per-folder index of result files, so the matrix and preflight never re-read 100k files.

The index is a derived cache of the result files, never evidence of its own: one SQLite
file per results folder, on local disk per user and node (:mod:`gpuprobe.store.indexdir`
says where; never in the results folder, which on a cluster is a network filesystem), and
sound or rebuilt (:mod:`gpuprobe.store.indexdb`). When no place is usable it is a
throw-away file (no cache, still correct).

Each result file contributes one ``files`` row keyed by its path relative to the folder, with
the ``(mtime_ns, size)`` it had when it was read, and one ``stage_runs`` row per stage it
holds, keyed by ``(path, seq)`` (a run killed half-way, ``complete: false``, still counts the
stages it wrote). A refresh lists the folders (os.scandir), stats the files of the folders
whose mtime changed (all of them every FULL_CHECK_S for matrix) and re-reads the ones whose
``(mtime_ns, size)`` changed. A file that cannot be used (not JSON, wrong types, a FIFO, too
big, numbers SQLite cannot hold, ...) is remembered with its reason, listed by every refresh
(``RefreshStats.skipped``) and never fatal.

Exact under any number of processes: the slow part (reading and converting files) runs
outside the lock, but which files are new, changed or gone is decided again under the
write lock (``BEGIN IMMEDIATE``) against what the index holds then, each file's rows are
replaced in the same transaction as its ``files`` row, and the primary key on
``(path, seq)`` makes a second copy of a file's stages impossible. The same transaction raises
the index's generation and logs which matrix cells it touched (:mod:`gpuprobe.store.indexlog`),
so a kept matrix answer recomputes only those.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from gpuprobe import exitcodes
from gpuprobe.store import indexdb, indexlog
from gpuprobe.store.indexdb import IndexLocked
from gpuprobe.store.indexscan import folder_of, load, scan, sql_value, storable
from gpuprobe.store.results import ResultFileError

log = logging.getLogger(__name__)

INDEX_SCHEMA = 7              # PRAGMA user_version, and part of the file name (7: change log, per-cell answers)
BUSY_TIMEOUT_S = 30.0         # matrix: how long to wait for another process's write
PREFLIGHT_WAIT_S = 1.0        # preflight: its budget for a locked index
DIRECT_LIMIT = 2000           # ... after which it reads at most this many files directly, else answers 75
CHUNK = 2000                  # files converted per write transaction (bounded memory, short locks)
# matrix: every file is stat-ed at least this often; in between, a folder whose mtime did not
# change is trusted (an in-place edit, which gpuprobe never does, shows within this time)
FULL_CHECK_S = 300.0
STACK_FIELDS = ("gpu_model", "arch", "driver", "cuda", "torch", "dflex")
STAGE_COLUMNS = ("run_id", "stage", "gpu", "status", "duration_s", "at", "provenance", "hostname", "stack_id",
                 "gpu_model", "reason", "last_mark", "cpu_pct", "signatures")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, generations TEXT, data TEXT);
CREATE TABLE IF NOT EXISTS files (
  path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, error TEXT,
  run_id TEXT, started_at TEXT, complete INTEGER, provenance TEXT, hostname TEXT, stack_id TEXT, dir TEXT);
CREATE INDEX IF NOT EXISTS files_dir ON files(dir);
CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, mtime_ns INTEGER);
CREATE TABLE IF NOT EXISTS stacks (
  stack_id TEXT PRIMARY KEY, gpu_model TEXT, arch TEXT, driver TEXT, cuda TEXT, torch TEXT, dflex TEXT,
  facts TEXT);
CREATE TABLE IF NOT EXISTS stage_runs (
  path TEXT NOT NULL, seq INTEGER NOT NULL,
  run_id TEXT, stage TEXT, gpu INTEGER, status TEXT, duration_s REAL, at TEXT,
  provenance TEXT, hostname TEXT, stack_id TEXT, gpu_model TEXT, reason TEXT, last_mark TEXT,
  cpu_pct REAL, signatures TEXT, PRIMARY KEY (path, seq));
CREATE INDEX IF NOT EXISTS files_skipped ON files(path) WHERE error IS NOT NULL;
-- one per matrix view, so that one cell is computed from its own rows alone: they cover the
-- counts, the median and the newest runs of a cell (matrixcells), and the row's label
CREATE INDEX IF NOT EXISTS stage_runs_stack ON stage_runs(stack_id, stage, provenance, status, duration_s, at);
CREATE INDEX IF NOT EXISTS stage_runs_model ON stage_runs(gpu_model, stage, provenance, status, duration_s, at);
CREATE INDEX IF NOT EXISTS stage_runs_host ON stage_runs(hostname, stage, provenance, status, duration_s, at,
  gpu_model);
-- the newest runs of a cell by a seek (a node's cells are small enough to sort)
CREATE INDEX IF NOT EXISTS stage_runs_stack_at ON stage_runs(stack_id, stage, provenance, at, run_id);
CREATE INDEX IF NOT EXISTS stage_runs_model_at ON stage_runs(gpu_model, stage, provenance, at, run_id);
-- and the few rows with signatures (known issues matched), per view
CREATE INDEX IF NOT EXISTS stage_runs_stack_sig ON stage_runs(stack_id, stage, provenance, signatures)
  WHERE signatures IS NOT NULL;
CREATE INDEX IF NOT EXISTS stage_runs_model_sig ON stage_runs(gpu_model, stage, provenance, signatures)
  WHERE signatures IS NOT NULL;
CREATE INDEX IF NOT EXISTS stage_runs_host_sig ON stage_runs(hostname, stage, provenance, signatures)
  WHERE signatures IS NOT NULL;
""" + indexlog.DDL


class IndexBusy(exitcodes.UsageProblem):
    """Preflight could not answer within its budget: the index stayed locked and the folder
    is too big to read directly in that time. Exit 75: retry (or elsewhere)."""

    exit_code = exitcodes.TEMPFAIL


@dataclass
class RefreshStats:
    folder: Path
    index_path: Path | None          # None: a throw-away index (no cache could be written)
    files: int = 0
    read: int = 0                    # files (re-)read in this refresh
    removed: int = 0
    quick: bool = False              # skipped the file scan: no folder changed since last time
    unreadable: list[tuple[str, str]] = field(default_factory=list)   # (relative path, reason)
    note: str | None = None          # how this answer was reached when not through the cache

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Every file the index could not use, as ``--json`` lists them."""
        return [{"file": str(self.folder / p), "reason": r} for p, r in self.unreadable]


def normalise_time(value: object) -> str | None:
    """Any ISO-8601 time (``Z``, offsets, date only) as sortable UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stack_of(fp: dict) -> dict[str, str]:
    """The stack key of a fingerprint dict (same fields as ``Fingerprint.stack_key``)."""
    from gpuprobe.node.fingerprint import Fingerprint

    return Fingerprint.from_dict(fp).stack_key()


def stack_id(key: dict[str, str]) -> str:
    return " | ".join(str(key.get(k, "-")) for k in STACK_FIELDS)


def stack_facts(fp: dict) -> dict:
    """What ``matrix --compare`` sets side by side: the fingerprint minus per-node identity."""
    gpus = [g for g in fp.get("gpus") or [] if isinstance(g, dict)]
    gpu0 = gpus[0] if gpus else {}
    torch = fp.get("torch") or {}
    return {
        "gpu_name": gpu0.get("name"), "gpu_count": len(gpus),
        "compute_capability": gpu0.get("compute_capability"), "memory_total_bytes": gpu0.get("memory_total_bytes"),
        "pci_device_id": gpu0.get("pci_device_id"), "driver": fp.get("driver_version"),
        "cuda_driver": fp.get("cuda_driver_version"), "torch": torch.get("version"), "torch_cuda_build": torch.get("cuda"),
        "dflex": (fp.get("dflex") or {}).get("version"), "python": fp.get("python"), "os": fp.get("os"),
        "kernel": fp.get("kernel"), "cpu_model": fp.get("cpu_model"), "cpu_count": fp.get("cpu_count"),
        "ram_bytes": fp.get("ram_bytes"),
    }


def provenance_of(doc: dict, stage: dict | None = None) -> str:
    """The stage's provenance, else the run's, as the loader resolved them
    (gpuprobe.store.record: a drill is a drill whatever the file claimed)."""
    if stage is not None and stage.get("provenance"):
        return stage["provenance"]
    return (doc.get("provenance") or {}).get("kind") or "probed"


def extract(doc: dict) -> tuple[dict, list[tuple], dict]:
    """(file facts, stage rows, stack row) from one result document."""
    fp = doc.get("fingerprint") or {}
    key = stack_of(fp)
    sid = stack_id(key)
    run_at = normalise_time(doc.get("started_at"))
    host = fp.get("hostname") or "?"
    rows = []
    for st in doc.get("stages") or []:
        if not isinstance(st, dict) or not st.get("stage"):
            continue
        marks = st.get("marks") or []
        last_mark = st.get("last_mark") or (marks[-1].get("name") if marks and isinstance(marks[-1], dict) else None)
        process = (st.get("evidence") or {}).get("process") or {}
        cpu = process.get("cpu_percent_total")
        sigs = [{k: s.get(k) for k in ("id", "title", "explanation", "remedy")}
                for s in st.get("signatures") or [] if isinstance(s, dict)]
        dur = st.get("duration_s")
        rows.append((doc.get("run_id"), st["stage"], st.get("gpu"), st.get("status") or "?",
                     float(dur) if isinstance(dur, (int, float)) else None,
                     normalise_time(st.get("started_at")) or run_at, provenance_of(doc, st), host, sid,
                     key["gpu_model"], (st.get("reason") or "")[:300] or None, last_mark,
                     float(cpu) if isinstance(cpu, (int, float)) else None,
                     json.dumps(sigs) if sigs else None))
    facts = {"run_id": doc.get("run_id"), "started_at": run_at, "complete": 1 if doc.get("complete") else 0,
             "provenance": provenance_of(doc), "hostname": host, "stack_id": sid}
    stack_row = {"stack_id": sid, **key, "facts": json.dumps(stack_facts(fp))}
    return facts, rows, stack_row


def index_paths(folder: Path) -> Iterator[Path]:
    """Where the index of ``folder`` may live, best first (local disk only)."""
    from gpuprobe.store import indexdir

    return indexdir.index_paths(folder, INDEX_SCHEMA)


# -- one file -----------------------------------------------------------------
def convert(path: Path) -> tuple[str | None, tuple]:
    """``(None, (facts, rows, stack))`` for a usable file, else ``(reason, ())``."""
    try:
        facts, rows, stack = extract(load(path))
    except ResultFileError as exc:
        return str(exc).replace(f"{path}: ", "", 1)[:300], ()
    except Exception as exc:  # noqa: BLE001 - untrusted content: any failure to convert it means a malformed file
        return f"malformed result: {type(exc).__name__}: {exc}"[:300], ()
    if storable([*facts.values(), *stack.values(), *(v for row in rows for v in row)]):
        return None, (facts, rows, stack)
    try:  # what SQLite could not store, or would store as something else: which value, and why
        for name, value in facts.items():
            sql_value(name, value)
        for i, row in enumerate(rows):
            for name, value in zip(STAGE_COLUMNS, row):
                sql_value(f"stage {i} {name}", value)
        for name, value in stack.items():
            sql_value(f"stack {name}", value)
    except ValueError as exc:
        return f"malformed result: {exc}"[:300], ()
    return None, (facts, rows, stack)


# -- the index ----------------------------------------------------------------------
class ResultIndex:
    """The index of one results folder. ``with ResultIndex(folder) as idx: idx.refresh()``.

    ``wait_s``: how long to wait for another process holding the index; past it,
    :class:`IndexLocked` (see :func:`open_index` for what readers do then).
    """

    def __init__(self, folder: Path, cache: bool = True, wait_s: float = BUSY_TIMEOUT_S):
        self.folder = Path(folder).resolve()
        self.wait_s = wait_s
        self.path: Path | None = None
        self._ino: int | None = None
        self._throwaway: Path | None = None
        self.conn = self._open(cache)

    # -- opening ------------------------------------------------------------------
    def _open(self, cache: bool) -> sqlite3.Connection:
        for path in index_paths(self.folder) if cache and self.folder.is_dir() else []:
            try:
                conn = indexdb.open_db(path, _DDL, INDEX_SCHEMA, str(self.folder), self.wait_s)
            except IndexLocked:
                raise
            except (OSError, sqlite3.Error, indexdb.IndexCorrupt) as exc:  # read-only, full, still bad: next place
                log.info("index %s not usable here: %s", path, exc)
                continue
            self.path, self._ino = path, indexdb.file_id(path)
            return conn
        import tempfile

        self._throwaway = Path(tempfile.mkdtemp(prefix="gpuprobe-index-")) / "index.sqlite"
        return indexdb.open_db(self._throwaway, _DDL, INDEX_SCHEMA, str(self.folder), self.wait_s, check=False)

    def close(self) -> None:
        self.conn.close()
        if self._throwaway is not None:
            import shutil

            shutil.rmtree(self._throwaway.parent, ignore_errors=True)

    def __enter__(self) -> "ResultIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_file(self) -> Path:
        """The SQLite file (for ATTACH), cache or throw-away."""
        return self.path or self._throwaway  # type: ignore[return-value]

    # -- refreshing ---------------------------------------------------------------
    def refresh(self, quick: bool = False, full: bool = False) -> RefreshStats:
        """Bring the index up to date with the folder.

        A folder whose mtime did not change since its files were indexed has had no file
        added, removed or replaced (atomic rename changes it; an in-place edit does not), so
        its files are trusted without a stat. ``quick`` (preflight): trust them always, and
        skip everything when no folder changed. Otherwise (matrix) every file is stat-ed
        when the last such check is older than FULL_CHECK_S, or with ``full``.
        A corrupt index met here is rebuilt once, with a warning.
        """
        try:
            return self._refresh(quick, full)
        except sqlite3.DatabaseError as exc:
            if indexdb.is_busy(exc):
                raise IndexLocked(self.path, self.wait_s) from None
            if self.path is None or not indexdb.is_corrupt(exc):
                raise
            self.conn.close()
            self.conn = indexdb.rebuild(self.path, self._ino, _DDL, INDEX_SCHEMA, str(self.folder), self.wait_s, exc)
            self._ino = indexdb.file_id(self.path)
            return self._refresh(quick, full)

    def _refresh(self, quick: bool, full: bool) -> RefreshStats:
        stats = RefreshStats(self.folder, self.path)
        if quick and self._dirs_unchanged():
            stats.quick = True
        else:
            if not quick and not full:
                row = self.conn.execute("SELECT value FROM meta WHERE key='full_at'").fetchone()
                full = not row or time.time() - float(row[0]) > FULL_CHECK_S
            self._full_refresh(stats, full)
        stats.files = self.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        stats.unreadable = self.conn.execute(
            "SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path").fetchall()
        return stats

    def _dirs_unchanged(self) -> bool:
        known = self.conn.execute("SELECT path, mtime_ns FROM dirs").fetchall()
        if not known:
            return False
        for rel, mtime in known:
            try:
                if mtime < 0 or os.stat(self.folder / rel).st_mtime_ns != mtime:
                    return False
            except OSError:
                return False
        return True

    def _stamps(self, dirs: list[str] | None = None) -> dict[str, tuple[int, int]]:
        """What the index holds: every file's stamp, or those of the files in ``dirs``."""
        if dirs is None:
            rows = self.conn.execute("SELECT path, mtime_ns, size FROM files")
        else:
            rows = (r for d in dirs for r in self.conn.execute(
                "SELECT path, mtime_ns, size FROM files WHERE dir=?", (d,)))
        return {p: (m, s) for p, m, s in rows}

    def _full_refresh(self, stats: RefreshStats, full: bool) -> None:
        known_dirs = dict(self.conn.execute("SELECT path, mtime_ns FROM dirs").fetchall())
        seen, dirs, trusted = scan(self.folder, None if full else known_dirs) if self.folder.is_dir() else ({}, {}, set())
        # the files of trusted folders are as indexed; those of changed (or vanished) ones are compared
        looked = None if full else [d for d in dirs if d not in trusted] + [d for d in known_dirs if d not in dirs]
        known = self._stamps(looked)
        todo = sorted(p for p, ms in seen.items() if known.get(p) != ms)
        gone = [p for p in known if p not in seen]
        if not todo and not gone and known_dirs == dirs:
            if full:
                self._note_full_check()
            return
        read = removed = 0
        # Files are read and converted outside the lock, a chunk at a time (memory stays
        # bounded, other processes wait for a commit, not for a cold read of the folder);
        # what to write is decided under it.
        for start in range(0, max(len(todo), 1), CHUNK):
            chunk = todo[start:start + CHUNK]
            converted = {rel: convert(self.folder / rel) for rel in chunk}
            last = start + CHUNK >= len(todo)
            r, g = self._write(seen, chunk, converted, (gone, dirs, full) if last else None)
            read, removed = read + r, removed + g
        stats.read, stats.removed = read, removed
        if self.path is not None:
            indexdb.mark_sound(self.path, self.conn)

    def _note_full_check(self) -> None:
        """Remember when every file was last stat-ed (a small write; skipped when busy)."""
        try:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('full_at', ?)", (repr(time.time()),))
        except sqlite3.OperationalError as exc:
            log.info("index %s: full check not noted: %s", self.path, exc)
            return
        if self.path is not None:
            indexdb.mark_sound(self.path, self.conn)

    def _write(self, seen: dict[str, tuple[int, int]], chunk: list[str], converted: dict,
               last: tuple[list[str], dict[str, int], bool] | None) -> tuple[int, int]:
        """One transaction: this chunk's files that are (still) new or changed, and, with the
        last chunk (``last``: files gone since the index last saw them, folder mtimes), the
        removals and the folder mtimes."""
        cur = self.conn
        cur.execute("BEGIN IMMEDIATE")  # the write lock: from here on, nobody else decides
        try:
            marks = ",".join("?" * len(chunk))
            known = {p: (m, s) for p, m, s in cur.execute(
                f"SELECT path, mtime_ns, size FROM files WHERE path IN ({marks})", chunk)} if chunk else {}
            changed = [p for p in chunk if known.get(p) != seen[p]]
            gone: list[str] = []
            touched: set[indexlog.Key] = set()   # the matrix cells these changes touch
            if last is not None:
                # still indexed and still absent: not a file another process added after our scan
                gone = [p for p in last[0] if not os.path.lexists(self.folder / p) and
                        cur.execute("SELECT 1 FROM files WHERE path=?", (p,)).fetchone()]
            for rel in gone:
                touched |= indexlog.keys_of_file(cur, rel)
                cur.execute("DELETE FROM stage_runs WHERE path=?", (rel,))
                cur.execute("DELETE FROM files WHERE path=?", (rel,))
            for rel in changed:
                if converted[rel][0] is not None and not os.path.lexists(self.folder / rel):
                    continue  # removed since our scan (a stale listing): not a file to report
                touched |= self._store(rel, seen[rel], *converted[rel])
            if last is not None:
                cur.execute("DELETE FROM dirs")
                cur.executemany("INSERT INTO dirs VALUES (?, ?)", last[1].items())
                if last[2]:
                    cur.execute("INSERT OR REPLACE INTO meta VALUES ('full_at', ?)", (repr(time.time()),))
            if changed or gone:  # a new generation: kept answers recompute the cells it touched
                indexlog.bump(cur, touched)
                # a stack no file points to any more (a rewritten or removed result) is no evidence
                cur.execute("DELETE FROM stacks WHERE stack_id NOT IN "
                            "(SELECT stack_id FROM files WHERE stack_id IS NOT NULL)")
            cur.execute("COMMIT")
        except BaseException:
            if not cur.in_transaction:
                raise
            cur.execute("ROLLBACK")
            raise
        return len(changed), len(gone)

    def _store(self, rel: str, stamp: tuple[int, int], error: str | None, parts: tuple) -> set[indexlog.Key]:
        """Replace the file's rows; the cell keys of the rows removed and added."""
        cur = self.conn
        touched = indexlog.keys_of_file(cur, rel)
        cur.execute("DELETE FROM stage_runs WHERE path=?", (rel,))
        if error is not None:
            cur.execute("INSERT OR REPLACE INTO files (path, mtime_ns, size, error, dir) VALUES (?,?,?,?,?)",
                        (rel, stamp[0], stamp[1], error, folder_of(rel)))
            return touched
        facts, rows, stack = parts
        cur.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,NULL,?,?,?,?,?,?,?)",
                    (rel, stamp[0], stamp[1], facts["run_id"], facts["started_at"], facts["complete"],
                     facts["provenance"], facts["hostname"], facts["stack_id"], folder_of(rel)))
        # plain INSERT: the rows were just deleted, so a duplicate is a bug the key must catch
        cur.executemany("INSERT INTO stage_runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [(rel, seq, *r) for seq, r in enumerate(rows)])
        cur.execute("INSERT OR REPLACE INTO stacks VALUES (:stack_id,:gpu_model,:arch,:driver,:cuda,:torch,:dflex,:facts)",
                    stack)
        return touched | indexlog.keys_of_rows(rows)


# -- what readers call ------------------------------------------------------------
def open_index(folder: Path, cache: bool = True, quick: bool = False, wait_s: float = BUSY_TIMEOUT_S,
               direct_limit: int | None = None) -> tuple[ResultIndex, RefreshStats]:
    """The refreshed index of ``folder``, and what the refresh found.

    When the cached index stays locked past ``wait_s`` (another process holds it), the
    files are read directly into a throw-away index, with one warning line saying so; when
    there are more than ``direct_limit`` of them (preflight, which has a budget), it raises
    :class:`IndexBusy` instead (exit 75). An index that can be read but not written (a
    read-only cache folder) is also replaced by a throw-away one.
    """
    try:
        idx = ResultIndex(folder, cache=cache, wait_s=wait_s)
    except IndexLocked as exc:
        locked = exc
    else:
        try:
            return idx, idx.refresh(quick=quick)
        except IndexLocked as exc:
            idx.close()
            locked = exc
        except (sqlite3.OperationalError, indexdb.IndexCorrupt) as exc:  # read-only; bad even when rebuilt
            idx.close()
            log.info("index %s: %s; using a throw-away index", idx.path, exc)
            idx = ResultIndex(folder, cache=False)
            return idx, idx.refresh()
        except BaseException:
            idx.close()
            raise
    n = len(scan(Path(folder).resolve())[0])
    if direct_limit is not None and n > direct_limit:
        raise IndexBusy(f"{locked} (another process holds it), and {n} result files are more than "
                        f"{direct_limit} to read directly within the budget: answering 75, retry")
    note = f"{locked} (another process holds it): read the {n} result files directly"
    log.warning("%s", note)
    idx = ResultIndex(folder, cache=False)
    stats = idx.refresh()
    stats.note = note
    return idx, stats


def skipped_files(stats: Iterable[RefreshStats]) -> list[dict[str, str]]:
    """``[{"file", "reason"}]`` over several folders, for ``--json`` output."""
    return [entry for s in stats for entry in s.skipped]


def describe_unreadable(stats: list[RefreshStats], limit: int = 5) -> str | None:
    """ "skipped 2 unreadable files: a.result.json (not valid JSON ...), ..." or None."""
    bad = [(s.folder / p, e) for s in stats for p, e in s.unreadable]
    if not bad:
        return None
    names = "; ".join(f"{p.name} ({e})" for p, e in bad[:limit])
    more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"skipped {len(bad)} unreadable file{'s' if len(bad) != 1 else ''}: {names}{more}"
