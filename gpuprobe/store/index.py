"""A per-folder index of result files, so the matrix and preflight never re-read 100k files.

The index is one SQLite file per results folder, ``<folder>/.gpuprobe-cache/index.sqlite``; when the
folder is read-only it lives in the user cache folder (platformdirs), and when that fails too,
in a temporary file that is removed afterwards (no cache, still correct).

Each result file contributes one ``files`` row keyed by its path relative to the folder, with
the ``(mtime_ns, size)`` it had when it was read, and one ``stage_runs`` row per finished stage
(a run killed half-way, ``complete: false``, still counts the stages it wrote). A refresh only
stats the files (os.scandir) and re-reads the ones whose ``(mtime_ns, size)`` changed.
Unreadable files are remembered with their error, reported by every refresh and never fatal.

Many writers: SQLite's own locking with a busy timeout; every refresh is one transaction of
idempotent ``INSERT OR REPLACE``s, so two processes refreshing at once write the same rows.
A corrupt index is deleted and rebuilt: it holds nothing the result files do not.
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
from typing import Iterator

from gpuprobe.store.results import SUFFIX, ResultFileError, read_result

log = logging.getLogger(__name__)

INDEX_NAME = ".gpuprobe-cache/index.sqlite"   # .gpuprobe-cache/ is git-ignored
INDEX_SCHEMA = "5"   # 5: provenance from the run record (drill, simulated resolved)
BUSY_TIMEOUT_S = 30.0
# A folder modified this recently may still change within the same mtime tick (1 s on
# some NFS servers): its mtime is not trusted for the quick "nothing changed" check.
MTIME_SETTLE_NS = 2_000_000_000
STACK_FIELDS = ("gpu_model", "arch", "driver", "cuda", "torch", "dflex")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, generation INTEGER, data TEXT);
CREATE TABLE IF NOT EXISTS files (
  path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, error TEXT,
  run_id TEXT, started_at TEXT, complete INTEGER, provenance TEXT, hostname TEXT, stack_id TEXT);
CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, mtime_ns INTEGER);
CREATE TABLE IF NOT EXISTS stacks (
  stack_id TEXT PRIMARY KEY, gpu_model TEXT, arch TEXT, driver TEXT, cuda TEXT, torch TEXT, dflex TEXT,
  facts TEXT);
CREATE TABLE IF NOT EXISTS stage_runs (
  path TEXT, run_id TEXT, stage TEXT, gpu INTEGER, status TEXT, duration_s REAL, at TEXT,
  provenance TEXT, hostname TEXT, stack_id TEXT, gpu_model TEXT, reason TEXT, last_mark TEXT,
  cpu_pct REAL, signatures TEXT);
CREATE INDEX IF NOT EXISTS stage_runs_path ON stage_runs(path);
CREATE INDEX IF NOT EXISTS stage_runs_stack ON stage_runs(stack_id, stage);
CREATE INDEX IF NOT EXISTS stage_runs_model ON stage_runs(gpu_model, stage);
"""


@dataclass
class RefreshStats:
    folder: Path
    index_path: Path | None          # None: a throw-away index (no cache could be written)
    files: int = 0
    read: int = 0                    # files (re-)read in this refresh
    removed: int = 0
    quick: bool = False              # skipped the file scan: no folder changed since last time
    unreadable: list[tuple[str, str]] = field(default_factory=list)   # (relative path, error)


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
    """Where the index may live, in order: beside the results, then the user cache folder
    (a read-only or foreign results folder). A generator: preflight, which finds the first
    usable, never imports what only the second needs."""
    yield folder / INDEX_NAME
    import hashlib

    import platformdirs

    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]
    yield platformdirs.user_cache_path("gpuprobe") / "index" / f"{digest}.sqlite"


class ResultIndex:
    """The index of one results folder. ``with ResultIndex(folder) as idx: idx.refresh()``."""

    def __init__(self, folder: Path, cache: bool = True):
        self.folder = Path(folder).resolve()
        self.path: Path | None = None
        self._throwaway: Path | None = None
        self.conn = self._open(cache)

    # -- opening ------------------------------------------------------------------
    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")  # a lost index is rebuilt from the files
        version = None
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            version = row[0] if row else None
        except sqlite3.OperationalError:
            pass  # new file: no tables yet
        if version != INDEX_SCHEMA:
            conn.executescript("DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS dirs; DROP TABLE IF EXISTS stacks;"
                               "DROP TABLE IF EXISTS stage_runs; DROP TABLE IF EXISTS meta;")
            conn.executescript(_DDL)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (INDEX_SCHEMA,))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('generation', '0')")
        return conn

    def _open(self, cache: bool) -> sqlite3.Connection:
        for path in index_paths(self.folder) if cache and self.folder.is_dir() else []:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = self._connect(path)
            except sqlite3.OperationalError as exc:  # read-only, locked past the timeout: next place
                log.info("index %s not usable here: %s", path, exc)
                continue
            except sqlite3.DatabaseError as exc:     # not a database (corrupt): it is only a cache
                log.warning("index %s is corrupt (%s); rebuilding it", path, exc)
                try:
                    path.unlink()
                    conn = self._connect(path)
                except (OSError, sqlite3.Error) as exc2:
                    log.info("index %s not usable here: %s", path, exc2)
                    continue
            except OSError as exc:
                log.info("index %s not usable here: %s", path, exc.strerror or exc)
                continue
            self.path = path
            return conn
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix="gpuprobe-index-", suffix=".sqlite")
        os.close(fd)
        self._throwaway = Path(tmp)
        return self._connect(self._throwaway)

    def close(self) -> None:
        self.conn.close()
        if self._throwaway is not None:
            self._throwaway.unlink(missing_ok=True)

    def __enter__(self) -> "ResultIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db_file(self) -> Path:
        """The SQLite file (for ATTACH), cache or throw-away."""
        return self.path or self._throwaway  # type: ignore[return-value]

    # -- refreshing ---------------------------------------------------------------
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

    def _scan(self) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """Every result file (relative path -> (mtime_ns, size)) and every folder's mtime."""
        files: dict[str, tuple[int, int]] = {}
        dirs: dict[str, int] = {}
        now = time.time_ns()
        stack = [""]
        while stack:
            rel = stack.pop()
            here = self.folder / rel if rel else self.folder
            try:
                mtime = os.stat(here).st_mtime_ns  # before listing: a later change shows next time
                dirs[rel or "."] = mtime if now - mtime > MTIME_SETTLE_NS else -1
                with os.scandir(here) as it:
                    for entry in it:
                        name = entry.name
                        if name.startswith("."):
                            continue  # temporary files of atomic writers, the index itself
                        sub = f"{rel}/{name}" if rel else name
                        if name.endswith(SUFFIX):
                            # every such name is a result to the loader, which refuses (and so
                            # lists) a folder, FIFO or symlink loop by that name: lstat, never follow
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                continue  # renamed away between listing and stat
                            files[sub] = (st.st_mtime_ns, st.st_size)
                        elif entry.is_dir(follow_symlinks=False):
                            stack.append(sub)
            except OSError as exc:
                log.warning("cannot list %s: %s", here, exc.strerror or exc)
        return files, dirs

    def refresh(self, quick: bool = False) -> RefreshStats:
        """Bring the index up to date with the folder.

        ``quick``: when no folder's mtime changed since the last refresh, trust the index
        without stat-ing every file (new or replaced files always change their folder's
        mtime with atomic rename; an in-place edit does not — ``gpuprobe matrix`` does the
        full check).
        """
        stats = RefreshStats(self.folder, self.path)
        if quick and self._dirs_unchanged():
            stats.quick = True
        else:
            self._full_refresh(stats)
        stats.files = self.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        stats.unreadable = self.conn.execute(
            "SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path").fetchall()
        return stats

    def _full_refresh(self, stats: RefreshStats) -> None:
        seen, dirs = self._scan() if self.folder.is_dir() else ({}, {})
        known = {p: (m, s) for p, m, s in self.conn.execute("SELECT path, mtime_ns, size FROM files")}
        changed = [p for p, ms in seen.items() if known.get(p) != ms]
        gone = [p for p in known if p not in seen]
        if not changed and not gone and self._same_dirs(dirs):
            return
        cur = self.conn
        cur.execute("BEGIN IMMEDIATE")
        try:
            for rel in gone:
                cur.execute("DELETE FROM stage_runs WHERE path=?", (rel,))
                cur.execute("DELETE FROM files WHERE path=?", (rel,))
            for rel in changed:
                self._index_file(rel, seen[rel], replace=rel in known)
            cur.execute("DELETE FROM dirs")
            cur.executemany("INSERT INTO dirs VALUES (?, ?)", dirs.items())
            if changed or gone:  # answers computed before this refresh are stale now
                cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                cur.execute("DELETE FROM answers")
                # a stack no file points to any more (a rewritten or removed result) is no evidence
                cur.execute("DELETE FROM stacks WHERE stack_id NOT IN "
                            "(SELECT stack_id FROM files WHERE stack_id IS NOT NULL)")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        stats.read, stats.removed = len(changed), len(gone)

    def _same_dirs(self, dirs: dict[str, int]) -> bool:
        return dict(self.conn.execute("SELECT path, mtime_ns FROM dirs").fetchall()) == dirs

    def _index_file(self, rel: str, stamp: tuple[int, int], replace: bool) -> None:
        cur = self.conn
        if replace:
            cur.execute("DELETE FROM stage_runs WHERE path=?", (rel,))
        try:
            doc = read_result(self.folder / rel)
            facts, rows, stack = extract(doc)
        except ResultFileError as exc:
            msg = str(exc).replace(str(self.folder / rel) + ": ", "")
            cur.execute("INSERT OR REPLACE INTO files (path, mtime_ns, size, error) VALUES (?,?,?,?)",
                        (rel, stamp[0], stamp[1], msg))
            return
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # valid JSON, wrong shapes inside
            cur.execute("INSERT OR REPLACE INTO files (path, mtime_ns, size, error) VALUES (?,?,?,?)",
                        (rel, stamp[0], stamp[1], f"malformed result: {type(exc).__name__}: {exc}"))
            return
        cur.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,NULL,?,?,?,?,?,?)",
                    (rel, stamp[0], stamp[1], facts["run_id"], facts["started_at"], facts["complete"],
                     facts["provenance"], facts["hostname"], facts["stack_id"]))
        cur.executemany("INSERT INTO stage_runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [(rel, *r) for r in rows])
        cur.execute("INSERT OR REPLACE INTO stacks VALUES (:stack_id,:gpu_model,:arch,:driver,:cuda,:torch,:dflex,:facts)",
                    stack)


def describe_unreadable(stats: list[RefreshStats], limit: int = 5) -> str | None:
    """ "skipped 2 unreadable files: a.result.json (not valid JSON ...), ..." or None."""
    bad = [(s.folder / p, e) for s in stats for p, e in s.unreadable]
    if not bad:
        return None
    names = "; ".join(f"{p.name} ({e})" for p, e in bad[:limit])
    more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"skipped {len(bad)} unreadable file{'s' if len(bad) != 1 else ''}: {names}{more}"
