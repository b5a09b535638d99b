"""Episode-aware replay buffer: samples time-major slices of H+1 steps that never cross episodes.

Same contract as PWM's (TD-MPC2's) torchrl Buffer, same storage rule, without torchrl:

* ``__init__`` allocates nothing; the first ``add()`` queries free device memory, decides
  where the storage lives (PWM's rule: on the device if 2.5 x its bytes fit in free memory,
  else on the host) and allocates it at full capacity. ``progress`` sees every stage, so
  a probe can say which one stalled.
* Storage is three flat ring tensors (obs, act, rew) of ``capacity`` rows. An episode of T
  steps occupies T+1 consecutive rows (ring order): row t holds obs[t], the action taken
  in obs[t] and its reward; the last row holds the final obs (its act/rew are NaN, as
  PWM's row-0 padding). ``capacity`` and ``len()`` count rows.
* A small episode table (start row and number of valid slice starts per live episode,
  plus their cumulative sum) makes sampling one vectorised draw: pick a global slice
  number uniformly, map it to (episode, start row) with ``searchsorted``, and gather
  the B windows of H+1 rows with one ``index_select`` (in chunks). Every valid slice is
  equally likely; overwritten episodes leave the table before their rows are reused.
* ``sample()`` returns time-major views of that one gathered block (a fresh tensor per call,
  never the storage), as PWM's torchrl Buffer returns permuted views.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpuprobe_pwm.checkpoint import atomic_write
from gpuprobe_pwm.storage import STORAGE_FACTOR, StorageDecision, StorageUnavailable, decide_storage

log = logging.getLogger(__name__)

__all__ = ["Buffer", "StorageDecision", "StorageUnavailable", "decide_storage", "STORAGE_FACTOR"]

Progress = Callable[[str, dict], None]
Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

_FLOAT_BYTES = 4
# Episode table: start row, valid-start count and start offset, int64 each, per episode.
_INDEX_BYTES_PER_EPISODE = 3 * 8
_SAVE_FORMAT = "pwm.buffer/1"
# ATen hands an op to the intra-op (OpenMP) pool once it spans more than GRAIN_SIZE elements
# (searchsorted: 200 queries). A sample is ~1 MB of small copies: the fan-out saves little,
# and whenever a pool thread is descheduled (a busy node, the trainer's own threads) each
# such op waits for a scheduler tick: 8-16 ms per sample instead of ~0.1 ms, measured on a
# loaded 2-core machine. So host sampling issues ops small enough to stay on the caller.
_ATEN_GRAIN_ELEMENTS = 32768
_SEARCHSORTED_CHUNK = 128
_GIB = 1024**3


@dataclass(frozen=True)
class _EpisodeIndex:
    """Immutable snapshot of the live episodes, swapped whole so samplers never see a half update."""

    offsets: torch.Tensor  # [E] int64: slice number u in episode e starts at row u + offsets[e]
    cum_starts: torch.Tensor  # [E] int64: inclusive cumulative count of valid slice starts
    total_starts: int


class Buffer:
    """Replay buffer of complete episodes; ``sample()`` returns obs [H+1,B,o], act [H,B,a], rew [H,B,1]."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        horizon: int = 16,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        storage: str = "auto",
        pin_memory: bool = False,
        prefetch: int = 0,
        progress: Progress | None = None,
        free_memory_bytes: int | None = None,
        seed: int | None = None,
    ) -> None:
        if capacity < horizon + 1:
            raise ValueError(f"capacity {capacity} cannot hold one slice of horizon+1={horizon + 1} rows")
        if storage not in ("auto", "cuda", "cpu"):
            raise ValueError(f"storage must be 'auto', 'cuda' or 'cpu', got {storage!r}")
        self.capacity = int(capacity)
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.horizon = int(horizon)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.storage = storage
        self.pin_memory = pin_memory
        self.prefetch = int(prefetch)
        self.free_memory_bytes = free_memory_bytes
        self.seed = seed
        self.decision: StorageDecision | None = None
        self.skipped_episodes = 0  # episodes shorter than the horizon: no slice fits, not stored
        self._progress = progress
        # One row per step: [obs | act | rew]. A sampled row is then ~3 cache lines in one
        # place instead of three scattered reads, which is most of a host sample's cost.
        self._row_width = self.obs_dim + self.act_dim + 1
        self._data: torch.Tensor | None = None
        self._episodes: deque[tuple[int, int]] = deque()  # (start row, rows), oldest first
        self._rows = 0  # live rows
        self._write = 0  # next row to write
        self._index: _EpisodeIndex | None = None
        self._lock = threading.Lock()  # writers vs. samplers (prefetch threads)
        self._generator: torch.Generator | None = None
        self._samples = 0
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._threads: list[threading.Thread] = []
        self._emit("construct", {"capacity": self.capacity, "bytes_needed": self.storage_bytes()})

    # -- sizes ---------------------------------------------------------------------------
    def storage_bytes(self) -> int:
        """Bytes of the full-capacity storage: float32 obs/act/rew rows plus the episode table."""
        row_bytes = _FLOAT_BYTES * (self.obs_dim + self.act_dim + 1)  # == _row_width
        max_episodes = self.capacity // (self.horizon + 1)
        ghost_rows = self.horizon  # see _allocate
        return (self.capacity + ghost_rows) * row_bytes + max_episodes * _INDEX_BYTES_PER_EPISODE

    def __len__(self) -> int:
        return self._rows

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def storage_device(self) -> torch.device | None:
        return None if self._data is None else self._data.device

    # -- progress ------------------------------------------------------------------------
    def _emit(self, event: str, data: dict) -> None:
        if self._progress is not None:
            self._progress(event, data)

    # -- first add: decide and allocate --------------------------------------------------
    def _query_free_memory(self) -> tuple[int | None, int | None, str]:
        if self.free_memory_bytes is not None:
            return int(self.free_memory_bytes), None, "given"
        wants_cuda = self.device.type == "cuda" or self.storage == "cuda"
        if wants_cuda and torch.cuda.is_available():
            cuda_dev = self.device if self.device.type == "cuda" else torch.device("cuda", 0)
            free, total = torch.cuda.mem_get_info(cuda_dev)
            return int(free), int(total), "cudaMemGetInfo"
        return None, None, "not queried"

    def _allocate(self) -> None:
        self._emit("mem_get_info.start", {"device": str(self.device)})
        free, total, source = self._query_free_memory()
        self._emit("mem_get_info", {"free_bytes": free, "total_bytes": total, "source": source})
        self.decision = decide_storage(
            self.storage, self.device, self.storage_bytes(), free, total, self.pin_memory
        )
        log.info("buffer storage: %s", self.decision.reason)
        self._emit("storage_decision", self.decision.to_dict())
        where = torch.device(self.decision.device)
        self._emit("alloc.start", {"bytes": self.decision.bytes_needed, "device": str(where)})
        # H ghost rows after the ring mirror its first H rows, so that a slice starting
        # near the end reads straight through: no modulo on the sampling path.
        self._data = torch.empty(
            (self.capacity + self.horizon, self._row_width),
            dtype=torch.float32,
            device=where,
            pin_memory=self.decision.pinned,
        )
        self._generator = self._make_generator(0)
        self._emit("alloc", {"bytes": self.decision.bytes_needed, "device": str(where)})

    def _make_generator(self, stream: int) -> torch.Generator:
        assert self._data is not None
        gen = torch.Generator(device=self._data.device)
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed + stream)
        return gen

    # -- add -----------------------------------------------------------------------------
    def add(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor) -> None:
        """Store N complete episodes: obs [T+1,N,o], act [T,N,a], rew [T,N] (or unbatched, no N)."""
        obs, act, rew = (torch.as_tensor(x, dtype=torch.float32) for x in (obs, act, rew))
        if obs.dim() == 2:
            obs, act, rew = obs.unsqueeze(1), act.unsqueeze(1), rew.unsqueeze(1)
        rew = rew.reshape(rew.shape[0], obs.shape[1]) if rew.dim() == 3 else rew
        steps, n = act.shape[0], obs.shape[1]
        expected = ((steps + 1, n, self.obs_dim), (steps, n, self.act_dim), (steps, n))
        if (tuple(obs.shape), tuple(act.shape), tuple(rew.shape)) != expected:
            raise ValueError(
                f"add() wants obs [T+1,N,{self.obs_dim}], act [T,N,{self.act_dim}], rew [T,N]; "
                f"got {tuple(obs.shape)}, {tuple(act.shape)}, {tuple(rew.shape)}"
            )
        rows = steps + 1
        if rows > self.capacity:
            raise ValueError(f"an episode of {rows} rows does not fit in capacity {self.capacity}")
        if steps < self.horizon:
            # No slice of H+1 rows fits: storing it would only displace useful data.
            self.skipped_episodes += n
            log.debug("skipping %d episodes of %d steps < horizon %d", n, steps, self.horizon)
            self._emit("fill", {"steps": len(self), "capacity": self.capacity})
            return
        # Only the newest episodes of an oversized batch survive the ring anyway.
        keep = min(n, self.capacity // rows)
        obs, act, rew = obs[:, n - keep :], act[:, n - keep :], rew[:, n - keep :]
        # Episode-major rows: [N, T+1, .]; the last row's act/rew are padding.
        nan = float("nan")
        act_rows = torch.cat((act, act.new_full((1, keep, self.act_dim), nan)), 0)
        rew_rows = torch.cat((rew, rew.new_full((1, keep), nan)), 0)
        block = torch.cat((obs, act_rows, rew_rows.unsqueeze(-1)), dim=-1)
        block = block.transpose(0, 1).reshape(keep * rows, self._row_width)
        if self._data is None:
            self._allocate()
        self._append(block, [rows] * keep)
        self._emit("fill", {"steps": len(self), "capacity": self.capacity})

    def _append(self, block: torch.Tensor, episode_rows: list[int]) -> None:
        """Write consecutive episodes' rows at the ring's write position and update the table."""
        total = sum(episode_rows)
        with self._lock:
            # Drop the oldest episodes whose rows the new ones will overwrite.
            while self._rows + total > self.capacity:
                _, old_rows = self._episodes.popleft()
                self._rows -= old_rows
            assert self._data is not None
            self._write_ring(self._data, block.to(self._data.device))
            self._data[self.capacity :] = self._data[: self.horizon]
            start = self._write
            for rows in episode_rows:
                self._episodes.append((start, rows))
                start = (start + rows) % self.capacity
            self._write = start
            self._rows += total
            self._index = self._build_index()

    def _write_ring(self, store: torch.Tensor, src: torch.Tensor) -> None:
        first = min(src.shape[0], self.capacity - self._write)
        store[self._write : self._write + first] = src[:first]
        if first < src.shape[0]:
            store[: src.shape[0] - first] = src[first:]

    def _build_index(self) -> _EpisodeIndex:
        assert self._data is not None
        starts = torch.tensor([s for s, _ in self._episodes], dtype=torch.int64)
        valid = torch.tensor([r - self.horizon for _, r in self._episodes], dtype=torch.int64)
        cum = valid.cumsum(0)
        dev = self._data.device
        return _EpisodeIndex(
            offsets=(starts - (cum - valid)).to(dev),
            cum_starts=cum.to(dev),
            total_starts=int(cum[-1]) if len(cum) else 0,
        )

    # -- sample --------------------------------------------------------------------------
    def _draw(self, batch_size: int, generator: torch.Generator) -> Sample:
        """One batch from storage, on the compute device. Safe to call from prefetch threads."""
        with self._lock:
            index = self._index
            if index is None or index.total_starts == 0:
                raise RuntimeError(
                    f"the buffer holds no slice of {self.horizon + 1} rows yet: add() episodes first"
                )
            assert self._data is not None
            dev = self._data.device
            u = torch.randint(index.total_starts, (batch_size,), generator=generator, device=dev)
            episode = self._episode_of(index.cum_starts, u)
            starts = (u + index.offsets[episode]) % self.capacity  # B values: cheap
            # Batch-major [B, H+1, row]: one index per slice, each a contiguous block of rows.
            block = self._gather(self._data, starts)
        # Time-major views of the one gathered block, as PWM's torchrl Buffer returns permuted
        # views: no second pass over the batch here. A consumer that needs contiguous memory
        # copies (the first Linear layer reads strided rows as they are).
        view = block.transpose(0, 1)
        o, a = self.obs_dim, self.obs_dim + self.act_dim
        return view[..., :o], view[:-1, :, o:a], view[:-1, :, a:]

    @staticmethod
    def _episode_of(cum_starts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Index of the episode holding global slice number u (see _ATEN_GRAIN_ELEMENTS)."""
        if u.device.type != "cpu" or u.numel() <= _SEARCHSORTED_CHUNK or torch.get_num_threads() == 1:
            return torch.searchsorted(cum_starts, u, right=True)
        return torch.cat(
            [torch.searchsorted(cum_starts, part, right=True) for part in u.split(_SEARCHSORTED_CHUNK)]
        )

    def _gather(self, store: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """[B, H+1, row]: the H+1 consecutive rows from each of ``starts``, on the compute device."""
        rows, width = self.horizon + 1, self._row_width
        # Overlapping windows: window s is rows s..s+H (the ghost rows keep the last in bounds),
        # so a slice is one index and one contiguous block copy, not H+1 row lookups.
        windows = store.as_strided((self.capacity, rows, width), (width, width, 1))
        if store.device.type != "cpu":
            return windows.index_select(0, starts).to(self.device)
        pinned = self.decision is not None and self.decision.pinned and self.device.type == "cuda"
        # Gathering straight into pinned memory lets the host-to-device copy run async.
        out = torch.empty((starts.numel(), rows, width), dtype=store.dtype, pin_memory=pinned)
        # Below the grain, ATen keeps each call on this thread; with one intra-op thread there is
        # no pool to wait for, so one call does it (saves ~0.025 ms of per-call overhead).
        if torch.get_num_threads() == 1:
            chunk = starts.numel()
        else:
            chunk = max(1, _ATEN_GRAIN_ELEMENTS // (rows * width))
        for begin in range(0, starts.numel(), chunk):
            torch.index_select(windows, 0, starts[begin : begin + chunk], out=out[begin : begin + chunk])
        return out if self.device.type == "cpu" else out.to(self.device, non_blocking=pinned)

    def sample(self, batch_size: int | None = None) -> Sample:
        """obs [H+1,B,o], act [H,B,a], rew [H,B,1] on ``device``; each column is one episode's slice.

        The three are strided views of one freshly gathered tensor (not of the storage), so
        writing to them never touches the buffer; ``.contiguous()`` them if an op needs it.
        """
        b = self.batch_size if batch_size is None else int(batch_size)
        if self.prefetch > 0 and b == self.batch_size:
            if not self._threads:
                self._start_prefetch()
            assert self._queue is not None
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise RuntimeError("a prefetch thread failed") from item
            out = item
        else:
            if self._generator is None:
                raise RuntimeError("the buffer is empty: add() episodes before sample()")
            out = self._draw(b, self._generator)
        self._samples += 1
        if self._progress is not None:
            if self._samples == 1:
                self._emit("first_sample", {"prefetch": self.prefetch})
            self._emit("sample", {"n": self._samples})
        return out

    # -- prefetch ------------------------------------------------------------------------
    def _start_prefetch(self) -> None:
        if self._data is None:
            raise RuntimeError("the buffer is empty: add() episodes before sample()")
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        ref = weakref.ref(self)  # threads must not keep the buffer alive, so __del__ can stop them
        for i in range(self.prefetch):
            thread = threading.Thread(
                target=_prefetch_worker,
                args=(ref, self._make_generator(i + 1), self._queue, self._stop),
                name=f"pwm-buffer-prefetch-{i}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop and join the prefetch threads (idempotent)."""
        if self._stop is not None:
            self._stop.set()
        for thread in self._threads:
            if thread is threading.current_thread():  # last reference dropped by a worker
                continue
            thread.join(timeout=5.0)
            if thread.is_alive():
                log.warning("prefetch thread %s did not stop within 5 s", thread.name)
        self._threads = []

    @property
    def prefetch_threads_alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def __del__(self) -> None:
        # getattr: __init__ may have failed before these were set.
        if getattr(self, "_threads", None):
            self.close()

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The live episodes (oldest first, on the host) and the config: what save() writes and
        what the trainer puts in latest_checkpoint.pt."""
        with self._lock:
            order = [(s, r) for s, r in self._episodes]
            data: dict[str, torch.Tensor] = {}
            if order:
                assert self._data is not None
                rows = torch.cat([(torch.arange(r) + s) % self.capacity for s, r in order])
                live = self._data.index_select(0, rows.to(self._data.device)).cpu()
                o, a = self.obs_dim, self.obs_dim + self.act_dim
                data = {"obs": live[:, :o], "act": live[:, o:a], "rew": live[:, a]}
        return {
            "format": _SAVE_FORMAT,
            "config": {
                "capacity": self.capacity,
                "obs_dim": self.obs_dim,
                "act_dim": self.act_dim,
                "horizon": self.horizon,
                "batch_size": self.batch_size,
            },
            "episode_rows": [r for _, r in order],
            **data,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refill this empty buffer with the episodes of ``state``; the newest win if they overflow."""
        if state.get("format") != _SAVE_FORMAT:
            raise ValueError(f"not a {_SAVE_FORMAT} state (format={state.get('format')!r})")
        if len(self):
            raise RuntimeError("load_state_dict() fills an empty buffer; this one holds episodes")
        saved = state["config"]
        if (saved["obs_dim"], saved["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"saved episodes have obs {saved['obs_dim']}/act {saved['act_dim']}, "
                f"this buffer obs {self.obs_dim}/act {self.act_dim}"
            )
        episode_rows = [int(r) for r in state["episode_rows"]]
        first = 0
        while episode_rows and sum(episode_rows) > self.capacity:  # a smaller buffer keeps the newest
            first += episode_rows.pop(0)
        if not episode_rows:
            return
        rew = state["rew"][first:].unsqueeze(1)
        block = torch.cat((state["obs"][first:], state["act"][first:], rew), dim=1)
        if self._data is None:
            self._allocate()
        self._append(block, episode_rows)
        self._emit("fill", {"steps": len(self), "capacity": self.capacity})

    def save(self, path: str | os.PathLike) -> None:
        """Write state_dict() atomically to ``path`` (the trainer's one atomic writer)."""
        path = Path(path)
        state = self.state_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **overrides: Any) -> Buffer:
        """A new Buffer holding the episodes saved at ``path``; ``overrides`` replace constructor args."""
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if state.get("format") != _SAVE_FORMAT:
            raise ValueError(f"{path}: not a {_SAVE_FORMAT} file (format={state.get('format')!r})")
        buf = cls(**{**state["config"], "device": device, **overrides})
        buf.load_state_dict(state)
        return buf


def _prefetch_worker(
    ref: weakref.ReferenceType[Buffer],
    generator: torch.Generator,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """Fill ``out`` with samples until ``stop`` is set or the buffer is garbage-collected."""
    while not stop.is_set():
        buf = ref()
        if buf is None:
            return
        try:
            item: Any = buf._draw(buf.batch_size, generator)
        except Exception as exc:  # handed to the consumer, which re-raises it in its thread
            item = exc
        del buf
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        if isinstance(item, Exception):
            return
