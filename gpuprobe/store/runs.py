"""Finding one run in results folders (``show``, ``report``): by path, run id or ``latest``.

Every candidate is read through the validating loader, so a hostile file never answers for
a run: ``latest`` is the newest file that loads, and the files passed over on the way are
returned as skipped, each with its reason, for the command to warn about and list.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from gpuprobe.exitcodes import UsageProblem
from gpuprobe.store.record import RecordError, RunRecord, Skipped, load_record
from gpuprobe.store.results import SUFFIX

log = logging.getLogger(__name__)


class RunNotFound(UsageProblem, LookupError):
    """No such run (or no usable one) in the folders: one line (the CLI answers exit 1)."""


@dataclass
class Found:
    record: RunRecord
    path: Path
    skipped: list[Skipped] = field(default_factory=list)


def result_files(folder: Path) -> list[tuple[int, Path]]:
    """Every ``*.result.json`` under ``folder`` with its own (lstat) mtime; nothing is opened.

    Hidden names are left out (atomic writers' temporary files, the index's folder); so are
    symlinked folders, which could loop.
    """
    out: list[tuple[int, Path]] = []
    todo = [Path(folder)]
    while todo:
        here = todo.pop()
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError as exc:
            log.warning("cannot list %s: %s", here, exc.strerror or exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False) and not entry.name.endswith(SUFFIX):
                    todo.append(Path(entry.path))
                elif entry.name.endswith(SUFFIX):
                    out.append((entry.stat(follow_symlinks=False).st_mtime_ns, Path(entry.path)))
            except OSError:
                continue   # removed between listing and stat
    return out


def find(folders: list[Path], ref: str) -> Found:
    """The run ``ref`` names: a result file, a run id or a unique prefix of one, or ``latest``
    (the newest usable result over all the folders)."""
    candidate = Path(ref).expanduser()
    if ref != "latest" and (candidate.exists() or os.path.lexists(candidate)):
        return Found(_load(candidate), candidate)
    missing = [f for f in folders if not f.is_dir()]
    if missing and len(missing) == len(folders):
        raise RunNotFound(f"results folder {missing[0]} does not exist (see --results)")
    files = [fp for folder in folders for fp in result_files(folder)]
    if ref == "latest":
        return _latest(folders, files)
    matches = sorted({p for _, p in files if p.name[: -len(SUFFIX)].startswith(ref)})
    if not matches:
        raise RunNotFound(f"no run {ref!r} in {_names(folders)} (give a path, a run id or 'latest')")
    if len(matches) > 1 and len({p.name for p in matches}) > 1:
        raise RunNotFound(f"run id {ref!r} is ambiguous in {_names(folders)}: {', '.join(p.name for p in matches[:5])}")
    return Found(_load(matches[0]), matches[0])


def _latest(folders: list[Path], files: list[tuple[int, Path]]) -> Found:
    skipped: list[Skipped] = []
    for _, path in sorted(files, key=lambda fp: (fp[0], str(fp[1])), reverse=True):
        try:
            return Found(load_record(path), path, skipped)
        except RecordError as exc:
            skipped.append(Skipped(str(path), exc.reason))
    why = f"; {len(skipped)} unusable file{'s' if len(skipped) != 1 else ''} skipped" if skipped else ""
    error = RunNotFound(f"no usable result file in {_names(folders)}{why}")
    error.skipped = skipped   # type: ignore[attr-defined]
    raise error


def _load(path: Path) -> RunRecord:
    return load_record(path)   # a run asked for by name: its RecordError is the answer (exit 2)


def _names(folders: list[Path]) -> str:
    return ", ".join(str(f) for f in folders)
