"""dflex (DiffRL) envs behind the VecEnv protocol, imported only when one is asked for.

``import dflex`` builds its kernels (``torch.utils.cpp_extension.load_inline``) and can wait
forever on a stale build lock, so nothing here imports it at module import time;
``dflex_status`` answers "is it installed?" from the import system's metadata alone, and the
import itself goes through :func:`gpuprobe_pwm.envs.dflex_kernels.import_dflex`, which names a
stale lock instead of waiting on it.

Each env is built with the arguments upstream PWM gives it (``scripts/cfg/env/dflex_*.yaml``, with
``no_grad=True`` as upstream's ``train_dflex.py`` sets for PWM): the env config's ``dflex:`` block
holds upstream's env-specific arguments and is passed on as it is. DiffRL's constructors take no
``seed`` (only CheetahEnv does): their resets draw from torch's global RNG, which the trainer seeds
once before it builds anything, as upstream does.

Gradients. DiffRL's observations and rewards carry autograd history even with ``no_grad=True``
(its state tensors require grad). A loop that stores them keeps every step's graph alive, and the
Buffer's ``index_select(out=...)`` refuses them. So, by default (``differentiable=False``, the
collection path) every reset and step runs under ``torch.no_grad()`` and returns plain tensors.
With ``differentiable=True`` (``no_grad=False`` in dflex) the sim stays on the autograd tape, for
a loop that differentiates through it (SHAC-style); that loop cuts the graph with
``reset(grads=True)``, DiffRL's own way, which keeps the state and starts a new tape.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpuprobe_pwm.envs.base import EnvUnavailable, StepResult, VecEnv

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "dflex is not installed (it is not on PyPI): from a PWM checkout run "
    "`pip install -e <PWM>/external/DiffRL` (it also needs gym==0.26.2 and numpy<2), "
    "or put a DiffRL checkout on PYTHONPATH"
)


@dataclass(frozen=True)
class DflexEnvSpec:
    """One dflex env as upstream PWM configures it (scripts/cfg/env/dflex_*.yaml); sizes from the env."""

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
    "dflex_doublependulum": DflexEnvSpec("dflex.envs.double_pendulum:DoublePendulumEnv", 6, 1, 1024, 240),
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


def constructor_kwargs(name: str, num_envs: int, device: str | torch.device = "cpu",
                       episode_length: int | None = None, stochastic_init: bool = True,
                       options: dict[str, Any] | None = None, differentiable: bool = False) -> dict[str, Any]:
    """The keyword arguments ``name``'s DiffRL class is built with: upstream's ``env.config`` block
    (``render``/``device`` resolved, ``no_grad`` as train_dflex.py sets it) plus ``options``."""
    spec = DFLEX_ENVS[name]
    return {
        "render": False,
        "device": str(device),
        "num_envs": int(num_envs),
        "stochastic_init": bool(stochastic_init),
        "no_grad": not differentiable,
        "episode_length": int(episode_length or spec.episode_length),
        **dict(options or {}),
    }


def config_options(name: str) -> dict[str, Any]:
    """The bundled env config ``name``'s ``config:`` block minus the keys the trainer reads itself
    (num_envs, episode_length, stochastic_init): upstream's env-specific arguments."""
    import yaml

    path = Path(__file__).resolve().parent.parent / "config" / "env" / f"{name}.yaml"
    config = dict(yaml.safe_load(path.read_text()).get("config") or {})
    return {k: v for k, v in config.items() if k not in ("num_envs", "episode_length", "stochastic_init")}


def env_class(name: str) -> type:
    """The DiffRL class of ``name``; importing it imports dflex (use import_dflex first)."""
    module_name, class_name = DFLEX_ENVS[name].class_path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


class DflexVecEnv(VecEnv):
    """Wraps a dflex env instance; dflex already auto-resets and returns the same 4-tuple."""

    def __init__(self, name: str, env: Any, spec: DflexEnvSpec, differentiable: bool = False) -> None:
        self.name = name
        self._env = env
        self.differentiable = differentiable
        self.num_envs = int(env.num_envs)
        self.num_obs = int(env.num_obs)
        self.num_acts = int(env.num_actions)
        self.episode_length = int(env.episode_length)
        self.device = torch.device(env.device)

    def _tape(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if self.differentiable else torch.no_grad()

    def reset(self, grads: bool = False) -> torch.Tensor:
        with self._tape():
            # grads=True, DiffRL's: keep every env's state, drop the graph that led to it (clear_grad)
            return self._env.reset(grads=True) if grads else self._env.reset()

    def step(self, actions: torch.Tensor) -> StepResult:
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if not self.differentiable:
            actions = actions.detach()
        with self._tape():
            obs, rew, done, info = self._env.step(actions.clamp(-1.0, 1.0))
        info = dict(info)
        done = done.bool()
        # Every DiffRL env fills these (dflex_env.py); "primal" is its task term without shaping.
        info.setdefault("termination", done)
        info.setdefault("truncation", done & ~info["termination"])
        info.setdefault("obs_before_reset", obs)
        info.setdefault("primal", rew.detach())
        return obs, rew, done, info


def make_dflex_env(
    name: str,
    num_envs: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    episode_length: int | None = None,
    stochastic_init: bool = True,
    options: dict[str, Any] | None = None,
    differentiable: bool = False,
) -> VecEnv:
    """Build ``name`` (a key of DFLEX_ENVS); raises EnvUnavailable when dflex cannot be imported.

    ``options`` are the env's own constructor arguments (the env config's ``dflex:`` block, upstream's
    values). ``seed`` reaches only a constructor that takes one; the others use torch's global RNG.
    """
    from gpuprobe_pwm.envs import dflex_kernels

    installed, reason = dflex_status()
    if not installed:
        raise EnvUnavailable(f"{name}: {reason}")
    def progress(phase: str, data: dict) -> None:  # a cold build takes minutes: say so before it starts
        if phase == "build":
            log.info("dflex builds its kernels (%s); this takes a minute or more; compiler output in %s",
                     data["because"], data["log"])
        elif phase == "wait_for_build":
            log.info("waiting for another process's dflex kernel build (lock %s, pids %s)", data["lock"],
                     [h["pid"] for h in data["holders"]])

    try:
        report = dflex_kernels.import_dflex(on_phase=progress)
    except dflex_kernels.DflexKernelError as exc:
        raise EnvUnavailable(f"{name}: {exc}") from exc
    except ImportError as exc:
        known = dflex_kernels.explain(exc)
        raise EnvUnavailable(f"{name}: {known[1] if known else f'importing dflex failed ({exc}); {INSTALL_HINT}'}") from exc
    for warning in report.warnings:
        log.warning("%s", warning)
    env_cls = env_class(name)
    kwargs = constructor_kwargs(name, num_envs, device, episode_length, stochastic_init, options, differentiable)
    if "seed" in inspect.signature(env_cls).parameters:
        kwargs["seed"] = seed
    log.info("building %s (%s) with %d envs on %s", name, DFLEX_ENVS[name].class_path, num_envs, device)
    try:
        env = env_cls(**kwargs)
    except AttributeError as exc:  # numpy 2: np.Inf in DFlexEnv.__init__
        known = dflex_kernels.explain(exc)
        if known is None:
            raise
        raise EnvUnavailable(f"{name}: {known[1]}") from exc
    return DflexVecEnv(name, env, DFLEX_ENVS[name], differentiable)
