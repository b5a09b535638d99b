"""Where results go, and where evidence is read from.

Written to: ``--results``, else ``$GPUPROBE_RESULTS``, else the user data folder
(``$XDG_DATA_HOME/gpuprobe/results``, i.e. ``~/.local/share/gpuprobe/results``). Never the
checkout: its ``reports/`` is tracked, and a run (or a fire drill) writing there dirtied the
git tree and became evidence for that checkout's own tests and trainer.

Read from: the folders given (``--results``, ``$GPUPROBE_RESULTS``), which must exist; else
the user data folder plus the checkout's ``reports/``, whose shipped field reports stay
evidence (read, never written).

Never relative to the current directory: Hydra and job scripts change it, and a result
written into whatever folder a job happened to start in is a result lost.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpuprobe.exitcodes import UsageProblem

ENV = "GPUPROBE_RESULTS"


class ResultsDirError(UsageProblem, OSError):
    """The results folder cannot be created or written."""


class ResultsDirMissing(UsageProblem, FileNotFoundError):
    """A results folder to read from, named by the user, is not there: exit 2, naming it."""


@dataclass(frozen=True)
class ResultsDir:
    path: Path
    source: str   # "--results", "$GPUPROBE_RESULTS", "checkout", "user data folder"


def package_root() -> Path:
    """The folder holding the ``gpuprobe`` package (a checkout, or site-packages)."""
    return Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    """The source checkout this package runs from, when it does (editable installs).

    The one place that finds it: found from the package's location, never the current
    directory.
    """
    root = package_root()
    if (root / "setup.cfg").is_file() and (root / "gpuprobe").is_dir():
        return root
    return None


def user_results_dir() -> Path:
    """The user data folder for results: platformdirs' answer, without its import on Linux
    (preflight's start-up is a budget)."""
    if sys.platform.startswith("linux"):
        base = os.environ.get("XDG_DATA_HOME", "").strip() or os.path.expanduser("~/.local/share")
        return Path(base) / "gpuprobe" / "results"
    import platformdirs

    return platformdirs.user_data_path("gpuprobe") / "results"


def resolve_results_dir(option: str | os.PathLike | None = None) -> ResultsDir:
    """Where a run's results are written (and the first folder evidence is read from)."""
    if option:
        return ResultsDir(Path(option).expanduser().resolve(), "--results")
    if os.environ.get(ENV):
        return ResultsDir(Path(os.environ[ENV]).expanduser().resolve(), f"${ENV}")
    return ResultsDir(user_results_dir(), "user data folder")


def shipped_reports() -> Path | None:
    """The checkout's ``reports/`` (field reports shipped with the code), when there is one."""
    root = checkout_root()
    folder = root / "reports" if root is not None else None
    return folder if folder is not None and folder.is_dir() else None


def evidence_dirs(options: list | tuple = ()) -> list[ResultsDir]:
    """The folders readers take evidence from (matrix, preflight, show, report, the trainer's gate).

    Folders the user named must exist: a typo in ``--results`` must not read as "no
    evidence". The default folders may not exist yet (nothing run here so far).
    """
    named = [resolve_results_dir(o) for o in options if o] or (
        [resolve_results_dir(None)] if os.environ.get(ENV) else [])
    for folder in named:
        if not folder.path.is_dir():
            what = "is not a folder" if folder.path.exists() else "does not exist"
            raise ResultsDirMissing(f"results folder {folder.path} (from {folder.source}) {what}")
    if named:
        return named
    out = [resolve_results_dir(None)]
    shipped = shipped_reports()
    if shipped is not None and shipped != out[0].path:
        out.append(ResultsDir(shipped, "checkout (shipped field reports)"))
    return out


def ensure_writable(results: ResultsDir) -> Path:
    """Create the folder and prove we can write into it, or raise ResultsDirError."""
    try:
        results.path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results.path, prefix=".gpuprobe-write-test-"):
            pass
    except OSError as exc:
        raise ResultsDirError(
            f"results folder {results.path} (from {results.source}) is not writable: {exc.strerror or exc}"
        ) from None
    return results.path
