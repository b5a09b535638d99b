"""Buffers that stall on purpose, for probing through ``--buffer-impl tests.stalling_buffers:Class``.

Each follows the interface in gpuprobe/probes/_buffer_impl.py and stalls in its own, named frames so
that a test can check that the stacks point at them.
"""

from __future__ import annotations

import threading
import time

import torch


class _Base:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, horizon: int = 16, batch_size: int = 256,
                 device: str = "cpu") -> None:
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.horizon, self.batch_size, self.device = horizon, batch_size, device
        self.rows = 0

    def add(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor) -> None:
        self.rows = min(self.capacity, self.rows + obs.shape[0] * obs.shape[1])

    def __len__(self) -> int:
        return self.rows

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, b = self.horizon, self.batch_size
        return torch.zeros(h + 1, b, self.obs_dim), torch.zeros(h, b, self.act_dim), torch.zeros(h, b, 1)


class DeadlockingBuffer(_Base):
    """The first sample starts a prefetch thread that deadlocks with the sampling thread."""

    _queue_lock = threading.Lock()
    _storage_lock = threading.Lock()

    def _prefetch_worker_deadlock(self) -> None:
        with self._storage_lock:
            time.sleep(0.05)
            with self._queue_lock:  # held by sample(): never granted
                pass

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._queue_lock:
            worker = threading.Thread(target=self._prefetch_worker_deadlock, name="stalling-prefetch", daemon=True)
            worker.start()
            time.sleep(0.05)
            with self._storage_lock:  # held by the worker: never granted
                return self._batch()


class BusySampleBuffer(_Base):
    """sample() spins in a Python loop holding the GIL: 100% CPU, no progress."""

    def _gather_rows_forever(self) -> None:
        n = 0
        while True:
            n += 1

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._gather_rows_forever()
        return self._batch()


class SlowSampleBuffer(_Base):
    """Every sample takes ``delay`` seconds of CPU work: slow, never stuck."""

    delay = 0.25

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        end = time.monotonic() + self.delay
        while time.monotonic() < end:  # busy, like host-storage gathers on a loaded node
            pass
        return self._batch()


# -- running gpuprobe as a user would, for the probe tests -----------------------------
def run_gpuprobe(args: list[str], results: str, failpoints: str = "", extra_env: dict | None = None,
                 timeout: float = 90) -> tuple[int, dict]:
    """``gpuprobe run ARGS --json`` in a subprocess (the real CLI, runner and children).

    Returns (exit code, result document).
    """
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "GPUPROBE_FAILPOINTS": failpoints, **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", "run", *args, "--results", results, "--json"],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON from gpuprobe (exit {proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}") from None
    return proc.returncode, doc


def stage(doc: dict, name: str) -> dict:
    return next(s for s in doc["stages"] if s["stage"] == name)


def mark_names(result: dict) -> list[str]:
    return [m["name"] for m in result["marks"]]
