"""The index's SQLite file: create it, recognise it, check it, rebuild it when it is not sound.

The file is only a cache of the result files, so anything wrong with it is answered by
starting again (with one warning line), never by an error:

* it carries ``PRAGMA application_id`` (gpuprobe's) and ``user_version`` (the schema), and
  records the results folder it was built for: a file that says otherwise is foreign;
* ``PRAGMA quick_check`` runs whenever the file is not the one this code last checked or
  wrote (its inode, size and mtime are kept beside it, in ``<file>.ok``), so garbage
  written into it by anything else is found on the next open without paying the check on
  every warm start;
* SQLite's own "malformed" / "not a database" errors met later rebuild it too (the caller
  catches :class:`sqlite3.DatabaseError` and calls :func:`rebuild`).

Journal mode is WAL: readers never wait for a writer, and writers wait for each other
(``BEGIN IMMEDIATE``) at most ``wait_s`` seconds, after which :class:`IndexLocked` says so.
WAL needs shared memory between the processes, which is why the file is on local disk.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

APP_ID = 0x67707262  # "gprb"


class IndexCorrupt(Exception):
    """The file is not a sound index of this folder and schema (the message says why)."""

    ino: int | None = None  # the file judged, so that only that one is deleted


class IndexLocked(Exception):
    """Another process held the index past our wait."""

    def __init__(self, path: Path | None, waited_s: float):
        super().__init__(f"index {path} stayed locked past {waited_s:g} s")
        self.path, self.waited_s = path, waited_s


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(
        w in str(exc) for w in ("locked", "busy"))


def is_corrupt(exc: BaseException) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB arrive as a plain DatabaseError (busy, read-only, disk
    full are OperationalError, and constraint failures IntegrityError: not corruption)."""
    return type(exc) is sqlite3.DatabaseError


def _statements(ddl: str) -> list[str]:
    # executescript() would commit the transaction the DDL must run in
    return [s.strip() for s in ddl.split(";") if s.strip()]


def file_id(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _stamp(path: Path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns}"


def _ok_file(path: Path) -> Path:
    return path.with_name(path.name + ".ok")


def mark_sound(path: Path, conn: sqlite3.Connection, schema: str = "main") -> None:
    """After our own write: copy the WAL into the file and remember the file as checked, so
    the next open does not check it again (every writer calls it: the refresh, the matrix
    keeping an answer). ``schema``: the name the file is attached as on ``conn``."""
    try:
        conn.execute(f"PRAGMA {schema}.wal_checkpoint(PASSIVE)")
        stamp = _stamp(path)
        if stamp:
            tmp = _ok_file(path).with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(stamp)
            os.replace(tmp, _ok_file(path))
    except (OSError, sqlite3.Error) as exc:  # only a shortcut: the next open checks instead
        log.info("index %s: not marked as checked: %s", path, exc)


def _checked_before(path: Path) -> bool:
    try:
        return _ok_file(path).read_text() == _stamp(path)
    except OSError:
        return False


def _create(conn: sqlite3.Connection, ddl: str, schema: int, folder: str) -> None:
    conn.execute("PRAGMA journal_mode=WAL")  # outside a transaction, as SQLite requires
    conn.execute("BEGIN IMMEDIATE")  # before the try: a busy BEGIN has nothing to roll back
    try:
        # another process may have created it while we waited for the lock
        if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
            if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise IndexCorrupt("is not a gpuprobe index (it has tables of something else)")
            for statement in _statements(ddl):
                conn.execute(statement)
            # epoch: which file this is, so that an answer kept for several folders never takes a
            # rebuilt index's generation numbers (they restart at 0) for the old file's
            conn.execute("INSERT INTO meta VALUES ('folder', ?), ('generation', '0'), ('epoch', ?)",
                         (folder, secrets.token_hex(8)))
            conn.execute(f"PRAGMA application_id={APP_ID}")
            conn.execute(f"PRAGMA user_version={int(schema)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _header(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(application_id, user_version)`` read in one transaction. Read one after the other,
    they could straddle another process's creation of the file (id 0, then the schema
    version): a sound index judged foreign, and deleted under the process that made it."""
    conn.execute("BEGIN")
    try:
        return (conn.execute("PRAGMA application_id").fetchone()[0],
                conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.execute("COMMIT")


def _open_checked(path: Path, ddl: str, schema: int, folder: str, wait_s: float, check: bool) -> sqlite3.Connection:
    ino = file_id(path)
    conn = sqlite3.connect(str(path), timeout=wait_s, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")  # a lost index is rebuilt from the files
        app, version = _header(conn)
        if app == 0 and version == 0:
            _create(conn, ddl, schema, folder)
            app, version = _header(conn)
        if app != APP_ID:
            raise IndexCorrupt(f"is not a gpuprobe index (application id {app:#x})")
        if version != schema:
            raise IndexCorrupt(f"has schema {version}, not {schema}")
        row = conn.execute("SELECT value FROM meta WHERE key='folder'").fetchone()
        if not row or row[0] != folder:
            raise IndexCorrupt(f"was built for another folder ({row[0] if row else 'none'})")
        if check and not _checked_before(path):
            result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if result != "ok":
                raise IndexCorrupt(f"failed its integrity check ({result})")
            mark_sound(path, conn)
        return conn
    except sqlite3.DatabaseError as exc:
        conn.close()
        if is_busy(exc):
            raise IndexLocked(path, wait_s) from None
        if is_corrupt(exc):
            bad = IndexCorrupt(f"is corrupt ({exc})")
            bad.ino = ino
            raise bad from None
        raise
    except IndexCorrupt as exc:
        conn.close()
        exc.ino = ino
        raise
    except BaseException:
        conn.close()
        raise


def open_db(path: Path, ddl: str, schema: int, folder: str, wait_s: float, check: bool = True) -> sqlite3.Connection:
    """Open the index at ``path``, creating it, or rebuilding it (one warning) when it is
    corrupt or foreign. Raises IndexLocked, or sqlite3/OSError when the place is unusable."""
    try:
        return _open_checked(path, ddl, schema, folder, wait_s, check)
    except IndexCorrupt as exc:
        log.warning("index %s %s; rebuilding it from the result files", path, exc)
        ino = exc.ino
    remove(path, ino)
    return _open_checked(path, ddl, schema, folder, wait_s, check)


def remove(path: Path, ino: int | None) -> None:
    """Delete the index file ``ino`` (the one judged bad) and its companions. Serialised by a
    lock file, so two processes that found it bad at once do not delete each other's fresh
    one: the second sees another inode than the one it judged and keeps it (its own open
    checks that one)."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            now = file_id(path)
            if now is not None and ino is not None and now != ino:
                return  # already replaced by another process
            for suffix in ("", "-wal", "-shm", ".ok"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def rebuild(path: Path, ino: int | None, ddl: str, schema: int, folder: str, wait_s: float,
            why: BaseException) -> sqlite3.Connection:
    """A corruption met after opening (a query hit a bad page): warn, start again."""
    log.warning("index %s is corrupt (%s); rebuilding it from the result files", path, why)
    remove(path, ino)
    return _open_checked(path, ddl, schema, folder, wait_s, True)
