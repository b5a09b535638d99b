"""A TD-MPC2 / PWM-style Buffer, as the user wrote it, behind the interface the buffer stage drives.

Recognised from its constructor: ``Buffer(buffer_size, batch_size, horizon, device, ...)``
(upstream PWM's ``src/pwm/utils/buffer.py``, TD-MPC2's ``common/buffer.py``). Such a buffer
takes one episode per ``add``, as a TensorDict of length T+1 with ``obs``, ``action`` and
``reward`` (action and reward at step 0 are placeholders, NaN here as in TD-MPC2), and its
``sample()`` returns time-major ``(obs [H+1, B, ...], action [H, B, ...], reward [H, B, 1])``.
The stage's blocks of N episodes are handed over one episode at a time; nothing of the
user's class is changed or wrapped inside.
"""

from __future__ import annotations

import inspect
from typing import Any

SIGNATURE = ("buffer_size", "batch_size", "horizon", "device")


def is_episode_buffer(cls: type) -> bool:
    """The constructor starts (buffer_size, batch_size, horizon, device)."""
    try:
        names = [p.name for p in inspect.signature(cls).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return tuple(names[:4]) == SIGNATURE


class SampleShapeError(ValueError):
    """sample() did not return time-major obs, action, reward."""


class EpisodeBufferAdapter:
    """gpuprobe's buffer interface (capacity, obs_dim, act_dim, ...; add(obs, act, rew); sample())."""

    def __init__(self, cls: type, capacity: int, obs_dim: int, act_dim: int, horizon: int = 16,
                 batch_size: int = 256, device: str = "cpu", **ignored: Any):
        self.horizon, self.batch_size = int(horizon), int(batch_size)
        self.inner = cls(int(capacity), self.batch_size, self.horizon, device)
        self.episodes = 0

    def add(self, obs: Any, act: Any, rew: Any) -> None:
        import torch
        from tensordict import TensorDict

        steps = act.shape[0]
        for i in range(obs.shape[1]):
            nan_act = torch.full((1, act.shape[2]), float("nan"), dtype=act.dtype, device=act.device)
            nan_rew = torch.full((1,), float("nan"), dtype=rew.dtype, device=rew.device)
            episode = TensorDict({"obs": obs[:, i], "action": torch.cat([nan_act, act[:, i]]),
                                  "reward": torch.cat([nan_rew, rew[:, i]])}, batch_size=(steps + 1,))
            self.inner.add(episode)
            self.episodes += 1

    def sample(self) -> tuple:
        out = self.inner.sample()
        obs, action, reward = tuple(out)[:3]
        h, b = self.horizon, self.batch_size
        if obs.shape[:2] != (h + 1, b) or action.shape[:2] != (h, b) or tuple(reward.shape) != (h, b, 1):
            raise SampleShapeError(
                f"sample() returned obs {tuple(obs.shape)}, action {tuple(action.shape)}, reward "
                f"{tuple(reward.shape)}; expected time-major [H+1, B, ...], [H, B, ...], [H, B, 1] with H={h}, B={b}")
        return obs, action, reward

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
