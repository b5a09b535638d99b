"""general.pretrain: pretrain the world model on replay data this trainer collected in earlier runs,
then train online.

Upstream's general.pretrain reads offline data: a pickled TensorDict of trajectories, which is how
the paper's world models were pretrained (Hopper 50k, Ant 100k steps). That data is not published,
and unpickling a TensorDict would run code. This reads what this trainer writes instead:
  - a run's ``final_policy.buffer`` (the replay buffer at the end of the run), or
  - a ``latest_checkpoint.pt`` that carries its buffer (general.save_buffer, on by default).
Both are loaded weights-only (tensors and plain data; nothing in the file runs).

The steps are upstream's ``pretrain_wm``:
  1. every file's episodes go into the (empty) replay buffer, where online training adds to them;
  2. the observation and reward statistics are updated from those episodes;
  3. general.pretrain_steps world-model updates on buffer samples (upstream's pretraining loop
     normalises with the statistics of step 2 and does not update them from its batches);
  4. the world model counts as trained: no warm-up follows (upstream's wm_bootstrapped).
The data's env steps are not added to the run's env-step count, as the paper's curves do not count
the offline data. A SIGTERM during step 3 saves latest_checkpoint.pt (buffer included) with the
number of updates done; resuming it finishes the rest.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpuprobe_pwm.safe_load import CheckpointError, safe_torch_load
from gpuprobe_pwm.upstream_format import is_upstream_checkpoint

log = logging.getLogger(__name__)

BUFFER_FORMAT = "pwm.buffer/1"  # gpuprobe_pwm.buffer's save format
WHAT = "pretraining data (general.pretrain)"


@dataclass
class ReplayData:
    """The episodes of one or more replay files, in the buffer's save layout (rows of obs, act,
    rew; each episode of T steps is T+1 rows, the last one's act and rew NaN)."""

    state: dict[str, Any]
    files: list[str]

    @property
    def rows(self) -> int:
        return sum(self.state["episode_rows"])

    @property
    def episodes(self) -> int:
        return len(self.state["episode_rows"])

    @property
    def env_steps(self) -> int:
        return self.rows - self.episodes  # one extra row per episode holds its final observation


def read_replay_file(path: Path) -> dict[str, Any]:
    """The buffer state in ``path``: a buffer file, or a checkpoint of this trainer that carries one.
    Raises CheckpointError (one line) for anything else."""
    path = Path(path)
    if path.is_file() and is_upstream_checkpoint(path):
        raise CheckpointError(f"{WHAT} {path} is a checkpoint written by upstream PWM: it holds networks, not "
                              "episodes (load it with general.checkpoint=)")
    state = safe_torch_load(path, map_location="cpu", what=WHAT)
    if isinstance(state, dict) and state.get("format") != BUFFER_FORMAT and isinstance(state.get("buffer"), dict):
        state = state["buffer"]  # latest_checkpoint.pt
    if not isinstance(state, dict) or state.get("format") != BUFFER_FORMAT:
        raise CheckpointError(f"{WHAT} {path} holds no replay buffer: give a run's final_policy.buffer, or its "
                              "latest_checkpoint.pt written with general.save_buffer=true")
    return state


def read_replay(paths: Sequence[Path], obs_dim: int, act_dim: int) -> ReplayData:
    """Every file's episodes, oldest file first, checked against the env's obs and action widths."""
    parts = []
    for path in paths:
        state = read_replay_file(path)
        cfg = state["config"]
        if (cfg["obs_dim"], cfg["act_dim"]) != (obs_dim, act_dim):
            raise CheckpointError(f"{WHAT} {path} has obs {cfg['obs_dim']} / act {cfg['act_dim']}, this env "
                                  f"obs {obs_dim} / act {act_dim}: it was collected on another env")
        if state["episode_rows"]:
            parts.append(state)
    if not parts:
        raise CheckpointError(f"{WHAT}: no episodes in {', '.join(str(p) for p in paths)}")
    merged = {"format": BUFFER_FORMAT, "config": dict(parts[-1]["config"]),
              "episode_rows": [int(r) for s in parts for r in s["episode_rows"]]}
    for key in ("obs", "act", "rew"):
        merged[key] = torch.cat([s[key] for s in parts])
    return ReplayData(merged, [str(p) for p in paths])


@torch.no_grad()
def update_statistics(agent: Any, data: ReplayData) -> None:
    """Observation and reward statistics from the data, as upstream's pretrain_wm does before it
    trains. The rows that close an episode carry no reward (NaN) and are left out of the reward's."""
    agent.obs_rms.update(data.state["obs"].to(agent.obs_rms.device))
    rew = data.state["rew"]
    agent.rew_rms.update(rew[torch.isfinite(rew)].to(agent.rew_rms.device))


def pretrain_world_model(agent: Any, buffer: Any, steps: int, done: int = 0,
                         check_stop: Callable[[], None] = lambda: None,
                         progress: Callable[[int], None] = lambda n: None) -> tuple[int, float | None]:
    """World-model updates ``done+1`` .. ``steps`` on buffer samples. ``progress(n)`` is told the
    count after every update (so a SIGTERM saves it), ``check_stop`` may raise between updates.
    Returns (updates done, the last loss)."""
    every = max(steps // 20, 1)  # a line every 5%: 50k updates take hours on a CPU
    loss = None
    t0 = time.monotonic()
    for n in range(done + 1, steps + 1):
        obs, act, rew = buffer.sample()
        loss = agent.update_world_model(obs, act, rew, statistics=False)["wm/loss"]
        progress(n)
        if n % every == 0 or n == steps:
            rate = (n - done) / max(time.monotonic() - t0, 1e-9)
            log.info("pretraining the world model: %d/%d updates, loss %.4g (%.1f updates/s)", n, steps, loss, rate)
        check_stop()
    return steps, loss

