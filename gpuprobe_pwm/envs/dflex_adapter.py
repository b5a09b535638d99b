"""dflex (DiffRL) envs behind the VecEnv protocol, imported only when one is asked for.

``import dflex`` compiles CUDA kernels (``torch.utils.cpp_extension.load_inline``) and can
wait forever on a stale build lock, so nothing here imports it at module import time, and
``dflex_status`` answers "is it installed?" from the import system's metadata alone.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import torch

from gpuprobe_pwm.envs.base import EnvUnavailable, StepResult, VecEnv

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "dflex is not installed (it is not on PyPI): from a PWM checkout run "
    "`pip install -e <PWM>/external/DiffRL`, or put a DiffRL checkout on PYTHONPATH"
)


@dataclass(frozen=True)
class DflexEnvSpec:
    """One dflex env as PWM configures it (scripts/cfg/env/dflex_*.yaml); sizes from FACTS.md."""

    class_path: str  # "module:Class" as PWM's Hydra ``_target_``
    num_obs: int
    num_acts: int
    num_envs: int
    episode_length: int


DFLEX_ENVS: dict[str, DflexEnvSpec] = {
    "dflex_ant": DflexEnvSpec("dflex.envs:AntEnv", 37, 8, 128, 1000),
    "dflex_hopper": DflexEnvSpec("dflex.envs:HopperEnv", 11, 3, 64, 1000),
    "dflex_anymal": DflexEnvSpec("dflex.envs:AnymalEnv", 49, 12, 64, 1000),
    "dflex_humanoid": DflexEnvSpec("dflex.envs:HumanoidEnv", 76, 21, 64, 1000),
    "dflex_snu_humanoid": DflexEnvSpec("dflex.envs:SNUHumanoidEnv", 53, 152, 64, 1000),
    "dflex_cartpole": DflexEnvSpec("dflex.envs:CartPoleSwingUpEnv", 5, 1, 1024, 240),
    "dflex_doublependulum": DflexEnvSpec(
        "dflex.envs.double_pendulum:DoublePendulumEnv", 6, 1, 1024, 240
    ),
}


def dflex_status() -> tuple[bool, str]:
    """(installed?, version or the reason it is not), without importing dflex."""
    try:
        spec = importlib.util.find_spec("dflex")
    except (ImportError, ValueError) as exc:  # a broken parent package or a bad __spec__
        return False, f"dflex lookup failed: {exc}"
    if spec is None:
        return False, INSTALL_HINT
    try:
        return True, importlib.metadata.version("dflex")
    except importlib.metadata.PackageNotFoundError:
        # On PYTHONPATH without installed metadata: present, version unknown.
        return True, f"unknown version (found at {spec.origin or spec.submodule_search_locations})"


class DflexVecEnv(VecEnv):
    """Wraps a dflex env instance; dflex already auto-resets and returns the same 4-tuple."""

    def __init__(self, name: str, env: Any, spec: DflexEnvSpec) -> None:
        self.name = name
        self._env = env
        self.num_envs = int(getattr(env, "num_envs", spec.num_envs))
        self.num_obs = int(getattr(env, "num_obs", spec.num_obs))
        self.num_acts = int(getattr(env, "num_actions", spec.num_acts))
        self.episode_length = int(getattr(env, "episode_length", spec.episode_length))
        self.device = torch.device(getattr(env, "device", "cpu"))

    def reset(self) -> torch.Tensor:
        return self._env.reset()

    def step(self, actions: torch.Tensor) -> StepResult:
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        obs, rew, done, info = self._env.step(actions.clamp(-1.0, 1.0))
        done = done.bool()
        info = dict(info)
        # Older DiffRL builds omit some keys; fill them so the trainer can rely on the protocol.
        info.setdefault("termination", done)
        info.setdefault("truncation", torch.zeros_like(done))
        info.setdefault("obs_before_reset", obs)
        return obs, rew, done, info


def make_dflex_env(
    name: str,
    num_envs: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    episode_length: int | None = None,
    stochastic_init: bool = True,
) -> VecEnv:
    """Build ``name`` (a key of DFLEX_ENVS); raises EnvUnavailable when dflex cannot be imported.

    ``stochastic_init`` defaults to True because every PWM dflex config sets it for training
    (DiffRL's own default is False); the trainer passes False for its evaluation env.
    """
    spec = DFLEX_ENVS[name]
    module_name, class_name = spec.class_path.split(":")
    installed, reason = dflex_status()
    if not installed:
        raise EnvUnavailable(f"{name}: {reason}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvUnavailable(f"{name}: importing {module_name} failed ({exc}); {INSTALL_HINT}") from exc
    env_cls = getattr(module, class_name)
    log.info("building %s (%s) with %d envs on %s", name, spec.class_path, num_envs, device)
    env = env_cls(
        num_envs=num_envs,
        device=str(device),
        seed=seed,
        no_grad=True,
        stochastic_init=stochastic_init,
        episode_length=episode_length or spec.episode_length,
    )
    return DflexVecEnv(name, env, spec)
