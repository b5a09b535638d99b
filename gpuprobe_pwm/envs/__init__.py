"""Vectorised envs for the bundled PWM trainer: torch envs on any device, dflex when installed,
and any gymnasium env with continuous actions as ``gym:<id>`` (e.g. ``gym:Pendulum-v1``).

    env = make_env("cartpole_swingup", num_envs=64, device="cuda:0", seed=1)
    obs = env.reset()
    obs, rew, done, info = env.step(actions)   # auto-resets finished envs, like dflex
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gpuprobe_pwm.envs.base import EnvUnavailable, TorchVecEnv, VecEnv
from gpuprobe_pwm.envs.cartpole import CartPoleSwingUp, reference_return, scripted_swingup_controller
from gpuprobe_pwm.envs.dflex_adapter import DFLEX_ENVS, DflexEnvSpec, dflex_status, make_dflex_env
from gpuprobe_pwm.envs.gym_adapter import is_gym_name, make_gym_env
from gpuprobe_pwm.envs.pendulum import DoublePendulum, Pendulum

_TORCH_ENVS: dict[str, Callable[..., TorchVecEnv]] = {
    "cartpole_swingup": CartPoleSwingUp,
    "pendulum": Pendulum,
    "double_pendulum": DoublePendulum,
}

TORCH_ENV_NAMES: tuple[str, ...] = tuple(_TORCH_ENVS)
ENV_NAMES: tuple[str, ...] = TORCH_ENV_NAMES + tuple(DFLEX_ENVS)


def make_env(
    name: str,
    num_envs: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    episode_length: int | None = None,
    stochastic_init: bool = False,
    options: dict | None = None,
) -> VecEnv:
    """Build env ``name`` (one of ENV_NAMES, or ``gym:<gymnasium id>``). dflex and gym envs raise
    EnvUnavailable when their simulator is missing.

    ``stochastic_init`` spreads every reset's start state widely (DiffRL's option of that name),
    for training envs; without it episodes start from the task's nominal state, as evaluation must.
    ``options`` are a dflex env's own constructor arguments (the env config's ``dflex:`` block).
    """
    if options and name not in DFLEX_ENVS:
        raise ValueError(f"env {name!r} takes no simulator options (got {sorted(options)}); only dflex envs do")
    if name in _TORCH_ENVS:
        return _TORCH_ENVS[name](num_envs, device=device, seed=seed, episode_length=episode_length,
                                 stochastic_init=stochastic_init)
    if name in DFLEX_ENVS:
        return make_dflex_env(name, num_envs, device=device, seed=seed, episode_length=episode_length,
                              stochastic_init=stochastic_init, options=options)
    if is_gym_name(name):
        return make_gym_env(name, num_envs, device=device, seed=seed, episode_length=episode_length,
                            stochastic_init=stochastic_init)
    raise ValueError(f"unknown env {name!r}; known: {', '.join(ENV_NAMES)}, or gym:<gymnasium id>")


__all__ = [
    "DFLEX_ENVS",
    "ENV_NAMES",
    "TORCH_ENV_NAMES",
    "CartPoleSwingUp",
    "DflexEnvSpec",
    "DoublePendulum",
    "EnvUnavailable",
    "Pendulum",
    "TorchVecEnv",
    "VecEnv",
    "dflex_status",
    "make_env",
    "reference_return",
    "scripted_swingup_controller",
]
