"""Gymnasium envs behind the VecEnv protocol: ``make_env("gym:Pendulum-v1", ...)``.

PWM learns its policy through the world model, never through the simulator, so any
gymnasium env with a continuous (Box) action space can feed the trainer data. gymnasium is an
optional extra (``pip install -e '.[gym]'``), imported only when a ``gym:`` env is asked for.

The N copies run in one ``SyncVectorEnv`` with same-step auto-reset, which is dflex's contract:
a finished env is reset inside ``step``, the returned obs is the new episode's first, and the
finished episode's last obs is ``info["obs_before_reset"]``. Actions in [-1, 1] are scaled to
the action space's bounds. ``stochastic_init`` has no meaning for a gymnasium env (its reset
distribution is its own) and is ignored.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np
import torch

from gpuprobe_pwm.envs.base import EnvUnavailable, StepResult, VecEnv

log = logging.getLogger(__name__)

PREFIX = "gym:"
INSTALL_HINT = "gymnasium is not installed: pip install 'gymnasium>=1.1' (or this package's [gym] extra)"


def is_gym_name(name: str) -> bool:
    return name.startswith(PREFIX)


class GymnasiumVecEnv(VecEnv):
    """``num_envs`` copies of one gymnasium env id, stepped together, as torch tensors on ``device``."""

    def __init__(self, env_id: str, num_envs: int, device: str | torch.device = "cpu", seed: int = 0,
                 episode_length: int | None = None) -> None:
        if importlib.util.find_spec("gymnasium") is None:
            raise EnvUnavailable(f"{PREFIX}{env_id}: {INSTALL_HINT}")
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        try:
            spec = gym.spec(env_id)
        except gym.error.Error as exc:  # unknown id, or one whose extra (box2d, mujoco) is missing
            raise EnvUnavailable(f"{PREFIX}{env_id}: {exc}") from exc
        length = episode_length or spec.max_episode_steps
        if not length:
            raise ValueError(f"{PREFIX}{env_id} has no time limit of its own: set env.episode_length")
        self.name = PREFIX + env_id
        self.num_envs = int(num_envs)
        self.episode_length = int(length)
        self.device = torch.device(device)
        try:
            self._env = SyncVectorEnv(
                [lambda: gym.make(env_id, max_episode_steps=self.episode_length) for _ in range(num_envs)],
                autoreset_mode=AutoresetMode.SAME_STEP,
            )
        except gym.error.Error as exc:  # e.g. DependencyNotInstalled for box2d or mujoco envs
            raise EnvUnavailable(f"{PREFIX}{env_id}: {exc}") from exc
        act_space, obs_space = self._env.single_action_space, self._env.single_observation_space
        if not isinstance(act_space, gym.spaces.Box):
            self._env.close()
            raise ValueError(f"{PREFIX}{env_id} has a {type(act_space).__name__} action space; "
                             "PWM's actor needs a continuous (Box) one")
        if not np.all(np.isfinite(act_space.low)) or not np.all(np.isfinite(act_space.high)):
            self._env.close()
            raise ValueError(f"{PREFIX}{env_id}: unbounded actions cannot be scaled from [-1, 1]")
        self.num_obs = int(np.prod(obs_space.shape))
        self.num_acts = int(np.prod(act_space.shape))
        self._act_shape = act_space.shape
        self._low = torch.as_tensor(act_space.low, dtype=torch.float32).reshape(-1)
        self._half_range = torch.as_tensor((act_space.high - act_space.low) / 2, dtype=torch.float32).reshape(-1)
        self._seed: int | None = seed  # used by the first reset only; later resets continue the env's RNG
        self._last_obs: torch.Tensor | None = None

    def _tensor(self, array: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device).reshape(self.num_envs, -1)

    def reset(self, grads: bool = False) -> torch.Tensor:
        if grads and self._last_obs is not None:
            return self._last_obs  # no autograd graph to cut (numpy envs): the current states' obs
        obs, _ = self._env.reset(seed=self._seed)
        self._seed = None
        self._last_obs = self._tensor(obs)
        return self._last_obs

    def step(self, actions: torch.Tensor) -> StepResult:
        a = torch.as_tensor(actions, dtype=torch.float32).detach().cpu().reshape(self.num_envs, self.num_acts)
        scaled = self._low + (a.clamp(-1.0, 1.0) + 1.0) * self._half_range
        obs, rew, term, trunc, info = self._env.step(scaled.numpy().reshape(self.num_envs, *self._act_shape))
        obs_t = self._tensor(obs)
        termination = torch.as_tensor(term, dtype=torch.bool, device=self.device)
        truncation = torch.as_tensor(trunc, dtype=torch.bool, device=self.device) & ~termination
        obs_before_reset = obs_t
        finished = np.flatnonzero(info.get("_final_obs", ()))  # same-step auto-reset happened there
        if finished.size:
            last = np.stack([np.asarray(info["final_obs"][i], dtype=np.float32).reshape(-1) for i in finished])
            obs_before_reset = obs_t.clone()
            obs_before_reset[torch.as_tensor(finished, device=self.device)] = torch.as_tensor(last, device=self.device)
        rew_t = torch.as_tensor(np.asarray(rew, dtype=np.float32), device=self.device)
        self._last_obs = obs_t
        return obs_t, rew_t, termination | truncation, {
            "termination": termination,
            "truncation": truncation,
            "obs_before_reset": obs_before_reset,
            "primal": rew_t,  # a gymnasium env has one reward, no separate task term
        }

    def close(self) -> None:
        self._env.close()


def make_gym_env(name: str, num_envs: int, device: str | torch.device = "cpu", seed: int = 0,
                 episode_length: int | None = None, stochastic_init: bool = False) -> VecEnv:
    """Build ``gym:<id>``; raises EnvUnavailable when gymnasium (or the env's own extra) is missing."""
    if stochastic_init:
        log.debug("%s: stochastic_init is ignored (a gymnasium env has its own reset distribution)", name)
    return GymnasiumVecEnv(name[len(PREFIX):], num_envs, device=device, seed=seed, episode_length=episode_length)
