"""Writing the result file when its folder cannot take it: disk full, folder deleted, read-only.

The verdict of a stage that took ten minutes to hang is worth more than the folder: the
result goes to the first fallback folder that takes it, and the command says where in
one line. The run goes on; its exit code stays the stages'.

Fallback folders, in order: ``$GPUPROBE_FALLBACK_DIR``, the user state folder
(``~/.local/state/gpuprobe/fallback``), ``<tmp>/gpuprobe-fallback-<uid>``,
``/dev/shm/gpuprobe-fallback-<uid>`` (memory: when every disk is full).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpuprobe.store.results import write_atomic

log = logging.getLogger(__name__)
ENV = "GPUPROBE_FALLBACK_DIR"


def folders() -> list[Path]:
    out = [Path(os.environ[ENV]).expanduser()] if os.environ.get(ENV) else []
    try:
        import platformdirs

        out.append(platformdirs.user_state_path("gpuprobe") / "fallback")
    except ImportError:  # a light install without platformdirs still has the others
        pass
    uid = os.getuid()
    out.append(Path(tempfile.gettempdir()) / f"gpuprobe-fallback-{uid}")
    out.append(Path("/dev/shm") / f"gpuprobe-fallback-{uid}")
    return out


@dataclass
class ResultWriter:
    """Writes one run's result file; after the first failure in its folder, to a fallback."""

    path: Path
    problem: str | None = None     # why the results folder did not take it (first failure)

    def write(self, doc: dict) -> Path | None:
        """Write ``doc``; the path it went to, or None when no folder took it."""
        try:
            return write_atomic(self.path, doc)
        except OSError as exc:
            if self.problem is None:
                self.problem = f"{self.path.parent}: {exc.strerror or exc}"
        for folder in folders():
            target = folder / self.path.name
            try:
                folder.mkdir(parents=True, exist_ok=True)
                write_atomic(target, doc)
            except OSError:
                continue
            if target != self.path:
                # info, not warning: the command says it once, in one line, after the verdict
                log.info("results folder %s: the result went to %s", self.problem, target)
                self.path = target   # later saves go straight there
            return target
        log.error("results folder %s, and no fallback folder took the result either", self.problem)
        return None

    def message(self) -> str | None:
        """The one line that says where the result went, when it did not go where asked."""
        if self.problem is None:
            return None
        if self.path.parent.is_dir() and self.path.is_file():
            return f"results folder {self.problem}; the result was written to {self.path} instead"
        return f"results folder {self.problem}; no fallback folder took the result (verdict above only)"
