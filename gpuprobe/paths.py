"""Where results go: ``--results``, else ``$GPUPROBE_RESULTS``, else the checkout's
``reports/``, else the user data folder.

Never relative to the current directory: Hydra and job scripts change it, and a result
written into whatever folder a job happened to start in is a result lost.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpuprobe.exitcodes import UsageProblem

ENV = "GPUPROBE_RESULTS"


class ResultsDirError(UsageProblem, OSError):
    """The results folder cannot be created or written."""


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


def resolve_results_dir(option: str | os.PathLike | None = None) -> ResultsDir:
    if option:
        return ResultsDir(Path(option).expanduser().resolve(), "--results")
    if os.environ.get(ENV):
        return ResultsDir(Path(os.environ[ENV]).expanduser().resolve(), f"${ENV}")
    root = checkout_root()
    if root is not None:
        return ResultsDir(root / "reports", "checkout")
    import platformdirs  # only here: preflight on a checkout never pays for it

    return ResultsDir(platformdirs.user_data_path("gpuprobe") / "results", "user data folder")


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
