"""Reading a results folder for the index: listing it, and loading one file, hostile ones included.

Whatever a folder holds (a FIFO or a device named like a result, a link loop, a 200,000-deep
document, a number SQLite cannot store) costs one skipped file with its reason, never a
hang or a crash of the reader.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from gpuprobe.store.results import SUFFIX

log = logging.getLogger(__name__)

INT64 = (-(1 << 63), (1 << 63) - 1)
# A folder modified this recently may still change within the same mtime tick (1 s on
# some NFS servers): its mtime is not trusted for the quick "nothing changed" check.
MTIME_SETTLE_NS = 2_000_000_000


def load(path: Path) -> dict:
    """The one place the index reads a result file: the run record's validating loader
    (:func:`gpuprobe.store.record.load_record`: nothing blocks on a FIFO or runs away on a
    device or a huge file; wrong types, depth, numbers, schema). ``RecordError`` (a
    ResultFileError) says in one line why a file is skipped."""
    from gpuprobe.store.record import load_record

    return load_record(path).doc


def sql_value(where: str, value: object) -> None:
    """Raise ValueError unless SQLite can hold ``value`` as it is (the file is then skipped)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError(f"{where}: an integer out of SQLite's 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: a non-finite number ({value})")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: text that is not valid Unicode (a lone surrogate)") from None
    else:
        raise ValueError(f"{where}: a {type(value).__name__} where text or a number belongs")


def storable(values: list) -> bool:
    """The fast check of every value at once (the slow one, value by value, names the bad one)."""
    text = []
    for v in values:
        t = type(v)
        if t is str:
            text.append(v)
        elif t is int:
            if not INT64[0] <= v <= INT64[1]:
                return False
        elif t is float:
            if not math.isfinite(v):
                return False
        elif v is not None and t is not bool:
            return False
    try:
        "".join(text).encode("utf-8")  # a lone surrogate cannot be encoded
    except UnicodeEncodeError:
        return False
    return True


def scan(folder: Path, trust: dict[str, int] | None = None
         ) -> tuple[dict[str, tuple[int, int]], dict[str, int], set[str]]:
    """Every entry named like a result file (relative path -> (mtime_ns, size)), every
    folder's mtime, and the folders whose files were not looked at.

    Entries that are not regular files are listed too, so that they are reported as skipped
    rather than silently left out. ``trust``: folder -> the mtime it had when its files were
    last indexed; a folder whose mtime is still that one has had no file added, removed or
    replaced (gpuprobe writes by rename), so its files are not stat-ed (it is still listed,
    for its subfolders).
    """
    files: dict[str, tuple[int, int]] = {}
    dirs: dict[str, int] = {}
    trusted: set[str] = set()
    now = time.time_ns()
    stack = [""]
    while stack:
        rel = stack.pop()
        here = folder / rel if rel else folder
        key = rel or "."
        try:
            mtime = os.stat(here).st_mtime_ns  # before listing: a later change shows next time
            dirs[key] = mtime if now - mtime > MTIME_SETTLE_NS else -1
            skip = trust is not None and dirs[key] >= 0 and trust.get(key) == dirs[key]
            if skip:
                trusted.add(key)
            with os.scandir(here) as it:
                for entry in it:
                    name = entry.name
                    if name.startswith("."):
                        continue  # temporary files of atomic writers
                    if name.endswith(SUFFIX):
                        if skip:
                            continue  # the common case on a warm run: before any other work per entry
                        sub = f"{rel}/{name}" if rel else name
                        try:
                            st = entry.stat()
                        except OSError:
                            try:  # a dangling or looping link: skipped with its reason
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                continue  # renamed away between listing and stat
                        files[sub] = (st.st_mtime_ns, st.st_size)
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append(f"{rel}/{name}" if rel else name)
        except OSError as exc:
            log.warning("cannot list %s: %s", here, exc.strerror or exc)
    return files, dirs, trusted


def folder_of(rel: str) -> str:
    """The ``dirs`` key of the folder holding ``rel``."""
    return rel.rsplit("/", 1)[0] if "/" in rel else "."
