"""Upstream PWM's checkpoints (imgeorgiev/PWM at aa5a1d8, ``PWM.save`` / ``PWM.load``), in and out.

What ``PWM.save`` writes, one torch file:
  actor, critic, world_model     state dicts (ActorStochasticMLP, an Ensemble of CriticMLP whose
                                 parameters are stacked per critic as params.0..N, TD-MPC2's
                                 WorldModel with _encoder/_dynamics/_reward)
  obs_rms, rew_rms, ret_rms      pickled pwm.utils.running_mean_std.RunningMeanStd objects, or None
  actor_opt, critic_opt, world_model_opt   Adam state dicts (the world model's in 4 groups)

Reading never imports upstream nor runs pickled code: the file goes through torch's weights-only
loader with one stand-in class, UpstreamRunningMeanStd, allowed under upstream's class name; its
fields are then checked. The networks become this package's own (gpuprobe_pwm.models, built in
upstream's layout), with upstream's call signatures on top (UpstreamWorldModel, UpstreamActor,
UpstreamCritic), so `agent.wm.encode(obs, task)` etc. mean what they mean upstream.

Writing (save_upstream_checkpoint) emits the same format; upstream's PWM.load reads it.
Single-task world models only: a multitask one (a _task_emb) is refused.
"""
from __future__ import annotations

import copy
import logging
import pickle
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpuprobe_pwm.checkpoint import atomic_write
from gpuprobe_pwm.models import Actor, Critic, ModelConfig, WorldModel, build_models
from gpuprobe_pwm.safe_load import CheckpointError, safe_torch_load
from gpuprobe_pwm.upstream_format import (
    WM_NETS,
    UpstreamCheckpointError,
    actor_from_upstream,
    actor_to_upstream,
    critic_from_upstream,
    critic_to_upstream,
    is_upstream_checkpoint,
    model_config_from_upstream,
    optimizer_from_upstream,
    optimizer_to_upstream,
    slots_for,
    wm_from_upstream,
    wm_to_upstream,
)

log = logging.getLogger(__name__)

__all__ = ["UpstreamAgent", "UpstreamRunningMeanStd", "is_upstream_checkpoint", "load_upstream_checkpoint",
           "read_upstream_checkpoint", "save_upstream_checkpoint"]

UPSTREAM_RMS_NAME = "pwm.utils.running_mean_std.RunningMeanStd"


class UpstreamRunningMeanStd:
    """Stand-in for upstream's RunningMeanStd: the same four fields (shape, mean, var, count) and
    the same normalize (eps 1e-5 under the root, clipped to +-5), so a loaded agent normalises as
    upstream did. Its instances pickle under upstream's class name (see _UpstreamPickler)."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.shape = tuple(mean.shape)
        self.mean = mean
        self.var = var
        self.count = float(count)

    def normalize(self, arr: torch.Tensor, un_norm: bool = False) -> torch.Tensor:
        if un_norm:
            return arr * torch.sqrt(self.var + 1e-5) + self.mean
        return ((arr - self.mean) / torch.sqrt(self.var + 1e-5)).clamp(-5.0, 5.0)

    def state_dict(self) -> dict[str, Any]:
        """In gpuprobe_pwm.normalizer.RunningMeanStd's format (float64 on the host)."""
        return {"mean": self.mean.detach().cpu().double(), "var": self.var.detach().cpu().double(),
                "count": self.count}

    @classmethod
    def checked(cls, raw: Any, name: str, device: str | torch.device) -> UpstreamRunningMeanStd | None:
        """A clean instance from what the unpickler filled in; only its data fields are read."""
        if raw is None:
            return None
        fields = getattr(raw, "__dict__", {})
        mean, var, count = fields.get("mean"), fields.get("var"), fields.get("count")
        if not (isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor) and mean.shape == var.shape
                and isinstance(count, (int, float)) and mean.is_floating_point()):
            raise UpstreamCheckpointError(f"{name} is not a RunningMeanStd (mean, var tensors of one shape, a count)")
        return cls(mean.to(device, torch.float32), var.to(device, torch.float32), float(count))

    @classmethod
    def from_normalizer(cls, rms: Any, shape: tuple[int, ...]) -> UpstreamRunningMeanStd | None:
        """From any object with mean, var and count (gpuprobe_pwm.normalizer's), in upstream's
        shape and dtype (float32; rewards and returns as shape (1,))."""
        if rms is None:
            return None
        mean = torch.as_tensor(rms.mean).detach().cpu().float().reshape(shape)
        var = torch.as_tensor(rms.var).detach().cpu().float().reshape(shape)
        return cls(mean, var, float(rms.count))


# ---- upstream's call signatures over our networks ----------------------------------------------------

class UpstreamWorldModel(nn.Module):
    """Upstream's WorldModel methods; `task` is accepted and ignored, as upstream does single-task."""

    def __init__(self, module: WorldModel) -> None:
        super().__init__()
        self.module = module

    def encode(self, obs: torch.Tensor, task: Any = None) -> torch.Tensor:
        return self.module.encode(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor, task: Any = None) -> torch.Tensor:
        return self.module.next(z, a)

    def reward(self, z: torch.Tensor, a: torch.Tensor, task: Any = None) -> torch.Tensor:
        """The reward head's raw output: the reward itself, or 101 two-hot logits."""
        return self.module.reward(torch.cat([z, a], dim=-1))

    def step(self, z: torch.Tensor, a: torch.Tensor, task: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next(z, a, task), self.reward(z, a, task)

    def almost_two_hot_inv(self, x: torch.Tensor) -> torch.Tensor:
        """What upstream's actor reads as the reward: the expectation over the symlog support."""
        if self.module.reward_bins == 0:
            return x
        return (torch.softmax(x, dim=-1) * self.module.reward_support).sum(-1, keepdim=True)

    def two_hot_inv(self, x: torch.Tensor) -> torch.Tensor:
        if self.module.reward_bins == 0:
            return x
        y = self.almost_two_hot_inv(x)
        return torch.sign(y) * torch.expm1(y.abs())


class UpstreamActor(nn.Module):
    """Upstream's ActorStochasticMLP call: the pre-tanh mean, or a sample around it."""

    def __init__(self, module: Actor) -> None:
        super().__init__()
        self.module = module

    @property
    def logstd(self) -> nn.Parameter:
        return self.module.logstd

    def get_logstd(self) -> torch.Tensor:
        return self.module.logstd

    def forward(self, z: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        std = self.module.std()  # floors logstd first, as upstream's clamp_std() on every call
        mu = self.module.mean(z)
        return mu if deterministic else mu + std * torch.randn_like(mu)


class UpstreamCritic(nn.Module):
    """Upstream's Ensemble of CriticMLP: every critic's value, [num_critics, ..., 1]."""

    def __init__(self, module: Critic) -> None:
        super().__init__()
        self.module = module

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z)


@dataclass
class UpstreamAgent:
    """What load_upstream_checkpoint returns. wm/actor/critic have upstream's call signatures;
    `.module` on each is this package's network (upstream layout), ready for the trainer."""

    wm: UpstreamWorldModel
    actor: UpstreamActor
    critic: UpstreamCritic
    model: ModelConfig
    obs_dim: int
    act_dim: int
    obs_rms: UpstreamRunningMeanStd | None = None
    rew_rms: UpstreamRunningMeanStd | None = None
    ret_rms: UpstreamRunningMeanStd | None = None
    # actor_opt, critic_opt, world_model_opt: Adam state dicts over our modules' parameters
    optimizer_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    learning_rates: dict[str, float] = field(default_factory=dict)  # actor, critic, world_model
    source: Path | None = None

    def trainer_state(self) -> dict[str, Any]:
        """The networks, normalisers and optimisers in PWMAgent.state_dict()'s format. Upstream
        has no target critic: it starts as a copy of the critic. A normaliser upstream ran
        without (obs_rms: False) is None, and so is an optimiser state the file did not have."""
        critic = self.critic.module.state_dict()
        return {
            "actor": self.actor.module.state_dict(), "critic": critic,
            "target_critic": copy.deepcopy(critic), "world_model": self.wm.module.state_dict(),
            **{name: None if rms is None else _normalizer_state(rms, name)
               for name, rms in (("obs_rms", self.obs_rms), ("rew_rms", self.rew_rms), ("ret_rms", self.ret_rms))},
            **{name: self.optimizer_states.get(name) for name in ("actor_opt", "critic_opt", "world_model_opt")},
        }


def _normalizer_state(rms: UpstreamRunningMeanStd, name: str) -> dict[str, Any]:
    state = rms.state_dict()
    if name != "obs_rms":  # upstream keeps rewards and returns as shape (1,), this trainer as ()
        state = {**state, "mean": state["mean"].reshape(()), "var": state["var"].reshape(())}
    return state


# ---- in --------------------------------------------------------------------------------------------

def read_upstream_checkpoint(path: str | Path) -> dict[str, Any]:
    """The file's top-level dict, loaded weights-only with the RunningMeanStd stand-in allowed."""
    raw = safe_torch_load(path, map_location="cpu", allow=[(UpstreamRunningMeanStd, UPSTREAM_RMS_NAME)],
                          what="upstream checkpoint")
    missing = [k for k in ("actor", "critic", "world_model") if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise UpstreamCheckpointError(
            f"{path} is not a checkpoint written by upstream PWM.save (no {', '.join(missing)})")
    for key in ("actor", "critic", "world_model"):
        if not isinstance(raw[key], dict) or not all(torch.is_tensor(v) for v in raw[key].values()):
            raise UpstreamCheckpointError(f"{path}: {key} is not a state dict of tensors")
    return raw


def load_upstream_checkpoint(path: str | Path, device: str | torch.device = "cpu", *, simnorm_group: int = 8,
                             reward_vmin: float = -10.0, reward_vmax: float = 10.0) -> UpstreamAgent:
    """Load a file written by upstream's PWM.save, without importing upstream or running pickled code.

    Sizes come from the state dicts; SimNorm's group and the two-hot support, which the file does
    not hold, default to what every upstream config uses. Raises CheckpointError (one line)."""
    raw = read_upstream_checkpoint(path)
    try:
        cfg, obs_dim, act_dim = model_config_from_upstream(raw, simnorm_group, reward_vmin, reward_vmax)
        with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG be
            wm, actor, critic, _ = build_models(obs_dim, act_dim, cfg, "cpu")
        wm.load_state_dict(wm_from_upstream(raw["world_model"]))
        actor.load_state_dict(actor_from_upstream(raw["actor"]))
        critic.load_state_dict(critic_from_upstream(raw["critic"]))
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:  # shapes that do not fit
        # load_state_dict's message names the module on its first line and the mismatch on the next.
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])[:300] or type(exc).__name__
        raise UpstreamCheckpointError(f"upstream checkpoint {path}: networks do not fit ({detail})") from None
    optimizer_states, lrs = {}, {}
    for key, module, upstream_sd in (("actor_opt", actor, raw["actor"]), ("critic_opt", critic, raw["critic"]),
                                     ("world_model_opt", wm, raw["world_model"])):
        opt_state = raw.get(key)
        if not isinstance(opt_state, dict) or not opt_state.get("param_groups"):
            continue
        try:
            kind = {"actor_opt": "actor", "critic_opt": "critic", "world_model_opt": "wm"}[key]
            names = [n for n, _ in module.named_parameters()]
            optimizer_states[key] = optimizer_from_upstream(opt_state, slots_for(kind, upstream_sd), names)
            lrs[key.removesuffix("_opt")] = float(opt_state["param_groups"][0]["lr"])
        except (KeyError, IndexError, TypeError, ValueError, CheckpointError) as exc:
            log.warning("upstream checkpoint %s: %s state not usable (%s); optimisers start fresh", path, key, exc)
    agent = UpstreamAgent(
        wm=UpstreamWorldModel(wm.to(device)), actor=UpstreamActor(actor.to(device)),
        critic=UpstreamCritic(critic.to(device)), model=cfg, obs_dim=obs_dim, act_dim=act_dim,
        obs_rms=UpstreamRunningMeanStd.checked(raw.get("obs_rms"), f"upstream checkpoint {path}: obs_rms", device),
        rew_rms=UpstreamRunningMeanStd.checked(raw.get("rew_rms"), f"upstream checkpoint {path}: rew_rms", device),
        ret_rms=UpstreamRunningMeanStd.checked(raw.get("ret_rms"), f"upstream checkpoint {path}: ret_rms", device),
        optimizer_states=optimizer_states, learning_rates=lrs, source=Path(path))
    log.info("loaded upstream checkpoint %s: obs %d, act %d, latent %d, reward bins %d", path, obs_dim, act_dim,
             cfg.latent_dim, cfg.reward_bins)
    return agent


# ---- out -------------------------------------------------------------------------------------------

class _UpstreamPickler(pickle._Pickler):  # the Python pickler: its save_global can be overridden
    """Pickles UpstreamRunningMeanStd under upstream's class name, so upstream's PWM.load gets its
    own RunningMeanStd back (protocol 2: a GLOBAL opcode is `c module\\nname\\n`)."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is UpstreamRunningMeanStd:
            module, _, qualname = UPSTREAM_RMS_NAME.rpartition(".")
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


# torch.save takes a pickle module; it only uses its Pickler (and reads its __name__).
_UPSTREAM_PICKLE = types.ModuleType("gpuprobe_pwm.upstream_pickle")
_UPSTREAM_PICKLE.Pickler = _UpstreamPickler  # type: ignore[attr-defined]


def _unwrap(value: Any, view: type[nn.Module], kind: type[nn.Module], what: str) -> Any:
    value = value.module if isinstance(value, view) else value
    if not isinstance(value, kind):
        raise TypeError(f"save_upstream_checkpoint: the agent's {what} is not a gpuprobe_pwm.models.{kind.__name__}")
    return value


def _optimizer_state(agent: Any, key: str, module: nn.Module, lr: float, betas: tuple[float, float]) -> dict:
    value = getattr(agent, key, None)
    if isinstance(value, torch.optim.Optimizer):
        return value.state_dict()
    if isinstance(agent, UpstreamAgent) and key in agent.optimizer_states:
        return agent.optimizer_states[key]
    # No optimiser to carry over: an unstepped Adam with upstream's alg=pwm settings.
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas).state_dict()


def save_upstream_checkpoint(agent: Any, path: str | Path) -> Path:
    """Write `agent` as upstream's PWM.save would, for upstream's PWM.load (alg config of the same
    sizes, and num_bins/vmin/vmax as the model's).

    `agent` is an UpstreamAgent, or anything with world_model/actor/critic networks of this
    package in upstream's layout (a PWMAgent built with model.layer_order=mish_ln): its
    obs_rms/rew_rms/ret_rms (mean, var, count; or None) and actor_opt/critic_opt/world_model_opt
    (torch optimisers over each network's parameters, in order) go along when present."""
    wm = _unwrap(getattr(agent, "world_model", None) or getattr(agent, "wm", None), UpstreamWorldModel,
                 WorldModel, "world model")
    actor = _unwrap(agent.actor, UpstreamActor, Actor, "actor")
    critic = _unwrap(agent.critic, UpstreamCritic, Critic, "critic")
    if not isinstance(actor.mu[0][1], nn.Mish) or not isinstance(critic.heads[0][0][1], nn.Mish):
        raise ValueError("save_upstream_checkpoint: actor/critic layers are not upstream's Linear -> Mish -> "
                         "LayerNorm (build with model.layer_order=mish_ln)")
    if wm.reward_bins and wm.reward_readout != "symlog":
        raise ValueError("save_upstream_checkpoint: upstream reads a two-hot reward in symlog space "
                         "(build with model.reward_readout=symlog)")
    up = {"actor": actor_to_upstream(actor.state_dict()), "critic": critic_to_upstream(critic.state_dict()),
          "world_model": wm_to_upstream(wm.state_dict())}
    payload: dict[str, Any] = {key: {k: v.detach().cpu() for k, v in sd.items()} for key, sd in up.items()}
    for name, shape in (("obs_rms", (wm.obs_dim,)), ("rew_rms", (1,)), ("ret_rms", (1,))):
        payload[name] = UpstreamRunningMeanStd.from_normalizer(getattr(agent, name, None), shape)
    wm_groups = [sum(1 for k in up["world_model"] if k.startswith(f"_{net}.")) for net in WM_NETS] + [0]
    for key, kind, module, lr, betas, groups in (
            ("actor_opt", "actor", actor, 5e-4, (0.7, 0.95), None),
            ("critic_opt", "critic", critic, 5e-4, (0.7, 0.95), None),
            ("world_model_opt", "wm", wm, 3e-4, (0.9, 0.999), wm_groups)):
        names = [n for n, _ in module.named_parameters()]
        slots = slots_for(kind, up[kind if kind != "wm" else "world_model"])
        state = _optimizer_state(agent, key, module, lr, betas)
        payload[key] = optimizer_to_upstream(state, slots, names, groups or [len(slots)])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh, pickle_module=_UPSTREAM_PICKLE, pickle_protocol=2)

    out = atomic_write(Path(path), write)
    log.info("wrote upstream-format checkpoint %s", out)
    return out
