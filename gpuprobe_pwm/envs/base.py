"""The vectorised-env protocol shared by the bundled torch envs and the dflex adapter.

The step contract follows dflex (DiffRL), because the trainer is written against it:
``step(actions) -> (obs, rew, done, info)`` where envs that finish are reset inside ``step``
and the returned ``obs`` is the new episode's first observation; the last observation of the
finished episode is in ``info["obs_before_reset"]``. ``info`` also holds what upstream PWM's loop
reads from a DiffRL env: ``termination`` and ``truncation`` (why each env finished) and ``primal``
(the task's own term of the reward, without shaping). ``reset(grads=True)`` is DiffRL's way to start
a new trajectory from the current states with the autograd graph that led to them cut.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


class EnvUnavailable(RuntimeError):
    """The env cannot be built here (its simulator is not installed); the message says how to fix it."""


class VecEnv(ABC):
    """N independent copies of one task, stepped together as tensors on ``device``.

    Shapes: obs [N, num_obs] float32, rew [N] float32, done [N] bool; actions [N, num_acts]
    in [-1, 1] (values outside are clipped, not rejected: policies with unbounded heads exist).
    """

    name: str
    num_envs: int
    num_obs: int
    num_acts: int
    episode_length: int
    device: torch.device

    @abstractmethod
    def reset(self, grads: bool = False) -> torch.Tensor:
        """Reset every env; returns obs [N, num_obs]. With ``grads=True``: reset nothing, cut the
        autograd graph behind the current states and return their obs (DiffRL's contract)."""

    @abstractmethod
    def step(self, actions: torch.Tensor) -> StepResult:
        """Advance every env by one control step, auto-resetting the ones that finish."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, num_envs={self.num_envs}, "
            f"num_obs={self.num_obs}, num_acts={self.num_acts}, "
            f"episode_length={self.episode_length}, device={self.device})"
        )


class TorchVecEnv(VecEnv):
    """Base for envs whose physics is written in torch: owns the state, the RNG and auto-reset.

    Subclasses define the state layout and physics through the four ``_`` hooks; this class
    does the bookkeeping every env needs the same way (clipping, step counters, truncation,
    auto-reset, the info dict), so that the contract is implemented once.
    """

    #: set by each subclass: its env name, obs and action sizes, and its physical-constants class
    env_name: str
    obs_size: int
    act_size: int
    params_class: type
    #: default episode length in control steps (subclasses override)
    default_episode_length: int = 200

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        episode_length: int | None = None,
        params: Any = None,
        stochastic_init: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        # Before anything calls the hooks: _initial_state and the physics read the constants.
        self.params = params if params is not None else self.params_class()
        self.name = self.env_name
        self.num_envs = num_envs
        self.num_obs = self.obs_size
        self.num_acts = self.act_size
        self.device = torch.device(device)
        self.episode_length = int(episode_length or self.default_episode_length)
        if self.episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {self.episode_length}")
        # Like DiffRL's stochastic_init: training envs start from widely spread states so the
        # data covers the whole state space (not only what a bad early policy reaches); the
        # default nominal start is what evaluation measures. Read by ``_initial_state``.
        self.stochastic_init = bool(stochastic_init)
        # A generator on the env's own device: the same seed gives the same episodes
        # on a given device, and sampling never syncs through the host RNG.
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.progress = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.state = self._initial_state(num_envs)

    # -- hooks ---------------------------------------------------------------------------
    @abstractmethod
    def _initial_state(self, n: int) -> torch.Tensor:
        """Fresh start states for n envs, drawn with ``self.generator``; widely spread when
        ``self.stochastic_init`` is set, else near the task's nominal start."""

    @abstractmethod
    def _integrate(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The state after one control step under ``action`` (already clipped to [-1, 1])."""

    @abstractmethod
    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        """Observations [n, num_obs] for states [n, ...]."""

    @abstractmethod
    def _reward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Reward [n] for being in ``state`` after applying ``action``."""

    def _primal(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The task's own reward term without the shaping factors (``info["primal"]``)."""
        return self._reward(state, action)

    def _terminated(self, state: torch.Tensor) -> torch.Tensor:
        """True where an episode ends early; none of the bundled envs fail early by default."""
        return torch.zeros(state.shape[0], dtype=torch.bool, device=state.device)

    # -- helpers -------------------------------------------------------------------------
    def _uniform(self, n: int, dim: int, low: float, high: float) -> torch.Tensor:
        u = torch.rand(n, dim, generator=self.generator, device=self.device)
        return low + (high - low) * u

    # -- protocol ------------------------------------------------------------------------
    def reset(self, grads: bool = False) -> torch.Tensor:
        if grads:
            self.state = self.state.detach()
            return self._observe(self.state)
        self.state = self._initial_state(self.num_envs)
        self.progress.zero_()
        return self._observe(self.state)

    def step(self, actions: torch.Tensor) -> StepResult:
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        actions = actions.reshape(self.num_envs, self.num_acts).clamp(-1.0, 1.0)
        self.state = self._integrate(self.state, actions)
        self.progress += 1
        rew = self._reward(self.state, actions).to(torch.float32)
        primal = self._primal(self.state, actions).detach().to(torch.float32)
        obs_before_reset = self._observe(self.state)
        termination = self._terminated(self.state)
        truncation = (self.progress >= self.episode_length) & ~termination
        done = termination | truncation
        if bool(done.any()):
            ids = done.nonzero(as_tuple=True)[0]
            self.state = self.state.clone()
            self.state[ids] = self._initial_state(int(ids.numel()))
            self.progress[ids] = 0
            obs = self._observe(self.state)
        else:
            obs = obs_before_reset
        info = {
            "termination": termination,
            "truncation": truncation,
            "obs_before_reset": obs_before_reset,
            "primal": primal,
        }
        return obs, rew, done, info
