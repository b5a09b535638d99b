"""Reading .pt files without running code from them.

A .pt file is a pickle, and a pickle can name any importable callable (``os.system``) for the
loader to call. Every checkpoint this package reads goes through ``safe_torch_load``: torch's
weights-only unpickler (tensors, containers and plain scalars), plus an explicit allowlist of the
few classes a legitimate file needs. Anything else is refused with one line naming what the file
tried to import; nothing from the file runs.
"""
from __future__ import annotations

import contextlib
import logging
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line, fit to show as it is."""


class UnsafeCheckpoint(CheckpointError):
    """The file asks the unpickler for something outside the allowlist (code, most likely)."""


def _numpy_rng_globals() -> list[Any]:
    """What numpy.random.get_state() pickles to: the trainer's checkpoints before their RNG state
    was stored as plain data. numpy's array reconstruction builds arrays of plain dtypes only;
    nothing it names can run a command."""
    try:
        import numpy as np
        from numpy.core.multiarray import _reconstruct
    except ImportError:  # numpy 2 renamed numpy.core; files from it never held this form
        return []
    found: list[Any] = [_reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found.append(dtypes.UInt32DType)
    return found


# What this trainer's own checkpoints may hold beyond tensors and plain data.
TRAINER_GLOBALS: tuple[Any, ...] = tuple(_numpy_rng_globals())

# torch's words for a refusal (they vary between versions): a global outside the allowlist or a
# blocked module ("GLOBAL posix.system"), or a pickle instruction it does not accept.
_REFUSAL = re.compile(r"unsupported global|unsupported operand|is blocked|not an allowed global", re.IGNORECASE)


def _refusal_reason(message: str) -> str | None:
    """The line of torch's message that says what was refused, or None if nothing was."""
    for line in message.splitlines():
        if _REFUSAL.search(line):
            line = line.split("WeightsUnpickler error:", 1)[-1]
            return re.sub(r"\s+was not an allowed global by default.*", "", line).strip().rstrip(".")
    return None


def _first_line(message: str, fallback: str) -> str:
    for line in message.splitlines():
        if line.strip() and not line.startswith(("Weights only load failed", "Check the documentation")):
            return line.strip()
    return fallback


def safe_torch_load(path: str | Path, map_location: Any = "cpu", allow: Iterable[Any] = (),
                    what: str = "checkpoint", mmap: bool = False) -> Any:
    """torch.load(weights_only=True) with `allow` (classes, or (class, "module.Name") pairs that
    stand in for a class under another name) added to the allowlist for this call only.

    Raises CheckpointError (UnsafeCheckpoint for a refused global) with a one-line message."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist or is not a file")
    allow = list(allow)
    if allow and not hasattr(torch.serialization, "safe_globals"):
        # torch < 2.5 has weights-only loading but no per-call allowlist: load plain data only,
        # and say so where a stand-in class is the only way in.
        if any(isinstance(entry, tuple) for entry in allow):
            raise CheckpointError(f"{what} {path} needs torch >= 2.5 to load safely (torch.serialization."
                                  f"safe_globals); this is torch {torch.__version__}")
        allow = []
    allowlist = torch.serialization.safe_globals(allow) if allow else contextlib.nullcontext()
    try:
        with allowlist, warnings.catch_warnings():
            # A pickle of another protocol draws a UserWarning before the refusal: one line is enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch wraps every failure of the weights-only unpickler in UnpicklingError: a refused
        # global is a file that wants code run, anything else a damaged file.
        reason = _refusal_reason(str(exc))
        if reason is not None:
            raise UnsafeCheckpoint(f"refused {what} {path}: {reason}; only tensors and plain data are "
                                   "loaded, and nothing in the file ran") from None
        raise CheckpointError(f"cannot read {what} {path}: {_first_line(str(exc), 'damaged pickle')}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"cannot read {what} {path} (damaged, or not a torch file): "
                              f"{_first_line(str(exc), type(exc).__name__)}") from None
