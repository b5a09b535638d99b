"""The trainer's checkpoint set, each file written atomically.

Files in a run directory, and nothing else named *.pt:
  init_policy.pt        after the models are built, before any update
  best_policy.pt        whenever the mean return over the last 100 episodes improves
  latest_checkpoint.pt  every save interval and on SIGTERM; what `general.checkpoint=` resumes
                        (with the replay buffer's episodes unless general.checkpoint_buffer=false)
  final_policy.pt       at the end of a run, with final_policy.buffer (the replay buffer)

Every file holds tensors and plain data only (the RNG states too), so that loading never needs
to unpickle code: load_checkpoint uses torch's weights-only loader (gpuprobe_pwm.safe_load).
"""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpuprobe_pwm.safe_load import TRAINER_GLOBALS, CheckpointError, safe_torch_load
from gpuprobe_pwm.upstream_format import is_upstream_checkpoint

log = logging.getLogger(__name__)

INIT = "init_policy.pt"
BEST = "best_policy.pt"
LATEST = "latest_checkpoint.pt"
FINAL = "final_policy.pt"
FINAL_BUFFER = "final_policy.buffer"
CHECKPOINT_FILES = (INIT, BEST, LATEST, FINAL, FINAL_BUFFER)


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is; NFS and some filesystems refuse
    # opening a directory, which is harmless to skip.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) for a temporary path in the same directory, fsync it, then os.replace it
    over `path`. If write fails, `path` keeps its old content and the temporary file is removed."""
    path = Path(path).resolve()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: Path) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
    return atomic_write(path, write)


def _numpy_state_plain() -> dict[str, Any]:
    # np.random.get_state() holds an ndarray, which would need numpy's reconstruction functions on
    # the loader's allowlist; a tensor and scalars need nothing.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: Any) -> None:
    if isinstance(state, dict):
        keys = np.asarray(state["keys"].cpu().numpy(), dtype=np.uint32)
        np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))
    else:  # a checkpoint written before the plain form: get_state()'s own tuple
        np.random.set_state(state)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": _numpy_state_plain(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    _set_numpy_state(state["numpy"])
    python = state["python"]
    # A weights-only load gives back lists where random.getstate() had tuples.
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, device: str | torch.device) -> dict[str, Any]:
    """A checkpoint this trainer wrote (general.checkpoint), loaded without unpickling code.

    Raises CheckpointError with a one-line message for a missing, damaged or refused file."""
    path = Path(path).expanduser().resolve()
    if is_upstream_checkpoint(path):
        raise CheckpointError(f"checkpoint (general.checkpoint) {path} was written by upstream PWM (PWM.save), not by "
                              "this trainer: gpuprobe_pwm.upstream.load_upstream_checkpoint reads it")
    # TRAINER_GLOBALS: numpy's array reconstruction, for files written before the RNG state was
    # stored as plain data. Nothing else beyond tensors and plain containers is accepted.
    state = safe_torch_load(path, map_location=device, allow=TRAINER_GLOBALS,
                            what="checkpoint (general.checkpoint)")
    if not isinstance(state, dict) or "rng" not in state or "actor" not in state:
        raise CheckpointError(f"checkpoint (general.checkpoint) {path} is not a checkpoint this trainer wrote "
                              "(no actor/rng entries)")
    return state


class CheckpointSet:
    """Writes the fixed set of checkpoint files of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).resolve()

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def save(self, name: str, state: dict[str, Any]) -> Path:
        if name not in CHECKPOINT_FILES:
            raise ValueError(f"{name!r} is not one of the checkpoint files {CHECKPOINT_FILES}")
        path = atomic_torch_save(state, self.path(name))
        log.info("saved %s (iteration %s)", path, state.get("iteration"))
        return path

    def save_buffer(self, buffer: Any) -> Path:
        """gpuprobe_pwm.buffer.Buffer.save is itself atomic (temporary file, fsync, os.replace)."""
        path = self.path(FINAL_BUFFER)
        buffer.save(path)
        log.info("saved %s", path)
        return path
