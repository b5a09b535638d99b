"""PWM networks: SimNorm world model (encoder, latent dynamics, reward head), tanh actor, critic ensemble.

The world model's hidden layers are Linear -> LayerNorm -> Mish (TD-MPC2's NormedLinear). The actor
and the critic read the world model's latent state z, never raw observations.

Two layouts of the same parameters (ModelConfig's `layer_order`, `init`, `reward_readout`,
`actor_logstd_clamp`; `upstream_layout()` sets all four):
  bundled   actor/critic layers Linear -> LayerNorm -> Mish, PyTorch's default inits, a two-hot
            reward read out in linear space (symexp of the expectation), logstd floored by clamp();
  upstream  as imgeorgiev/PWM at aa5a1d8: actor/critic layers Linear -> Mish -> LayerNorm,
            trunc_normal(0.02) world-model weights, orthogonal(sqrt 2) critic weights, the two-hot
            reward read out in symlog space (the expectation, as its almost_two_hot_inv), logstd
            floored in place before every forward.
Parameter counts are identical in both, so an upstream state dict fits an upstream-layout network
once its keys are renamed (gpuprobe_pwm.upstream does that).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class SimNorm(nn.Module):
    """Softmax over groups of `group` latent units: keeps latents on a product of simplices,
    which bounds them and stops the dynamics rollout from drifting off to large norms."""

    def __init__(self, group: int = 8) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return F.softmax(x.view(*shape[:-1], -1, self.group), dim=-1).view(shape)


LAYER_ORDERS = ("ln_mish", "mish_ln")
INITS = ("torch", "upstream")
REWARD_READOUTS = ("symexp", "symlog")
LOGSTD_CLAMPS = ("value", "parameter")


def normed_block(in_dim: int, out_dim: int, act: nn.Module | None = None, order: str = "ln_mish") -> nn.Sequential:
    """Linear -> LayerNorm -> activation (Mish unless given); order "mish_ln" is
    Linear -> activation -> LayerNorm (upstream PWM's actor and critic layers)."""
    act = act if act is not None else nn.Mish()
    if order == "ln_mish":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), act)
    if order == "mish_ln":
        return nn.Sequential(nn.Linear(in_dim, out_dim), act, nn.LayerNorm(out_dim))
    raise ValueError(f"layer order must be one of {LAYER_ORDERS}, got {order!r}")


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, out_act: nn.Module | None = None,
        order: str = "ln_mish") -> nn.Sequential:
    """Hidden layers as normed blocks; the output layer is a plain Linear unless `out_act` is given,
    in which case it is a normed block ending in `out_act` (the SimNorm layers)."""
    layers: list[nn.Module] = []
    dim = in_dim
    for h in hidden:
        layers.append(normed_block(dim, h, order=order))
        dim = h
    layers.append(normed_block(dim, out_dim, out_act, order) if out_act is not None else nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


@dataclass
class ModelConfig:
    """Sizes of the three networks (alg/*.yaml `model:` group)."""

    latent_dim: int = 512
    encoder_dims: list[int] = field(default_factory=lambda: [256])
    dynamics_dims: list[int] = field(default_factory=lambda: [512, 512])
    reward_dims: list[int] = field(default_factory=lambda: [512, 512])
    simnorm_group: int = 8
    actor_dims: list[int] = field(default_factory=lambda: [400, 200, 100])
    actor_logstd_init: float = -1.0
    actor_logstd_min: float = -1.427
    critic_dims: list[int] = field(default_factory=lambda: [400, 200])
    num_critics: int = 3
    # 0: the reward head regresses one scalar (MSE). N > 1: TD-MPC2's two-hot classification, as
    # upstream PWM configures it (101 bins over symlog(reward) in [-10, 10]), trained with a soft
    # cross-entropy; the prediction is symexp of the softmax expectation, so it stays differentiable.
    reward_bins: int = 0
    reward_vmin: float = -10.0
    reward_vmax: float = 10.0
    # Layout (see the module docstring); the defaults are the bundled trainer's own.
    layer_order: str = "ln_mish"        # actor/critic hidden layers: ln_mish | mish_ln (upstream)
    init: str = "torch"                 # torch | upstream
    reward_readout: str = "symexp"      # two-hot prediction: symexp (linear space) | symlog (upstream)
    actor_logstd_clamp: str = "value"   # value: clamp in the forward | parameter: floor the parameter (upstream)

    def __post_init__(self) -> None:
        for name, allowed in (("layer_order", LAYER_ORDERS), ("init", INITS),
                              ("reward_readout", REWARD_READOUTS), ("actor_logstd_clamp", LOGSTD_CLAMPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def is_upstream_layout(self) -> bool:
        return all(getattr(self, k) == v for k, v in UPSTREAM_LAYOUT.items())


# What upstream PWM (imgeorgiev/PWM aa5a1d8, pwm/models/*.py) builds.
UPSTREAM_LAYOUT = {"layer_order": "mish_ln", "init": "upstream", "reward_readout": "symlog",
                   "actor_logstd_clamp": "parameter"}


def upstream_layout(cfg: ModelConfig | None = None) -> ModelConfig:
    """`cfg` (sizes kept) in upstream PWM's layout."""
    return replace(cfg if cfg is not None else ModelConfig(), **UPSTREAM_LAYOUT)


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(x: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """x [..., 1] -> [..., bins]: the weight split between the two bins that bracket x
    (clamped to the support), so that the expectation over ``support`` is x."""
    bins = support.numel()
    delta = (support[-1] - support[0]) / (bins - 1)
    pos = ((x.clamp(support[0], support[-1]) - support[0]) / delta).squeeze(-1)
    lo = pos.floor().clamp(0, bins - 1)
    upper = pos - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=bins - 1)
    out = torch.zeros(*pos.shape, bins, dtype=x.dtype, device=x.device)
    out.scatter_(-1, lo.unsqueeze(-1), (1 - upper).unsqueeze(-1))
    out.scatter_add_(-1, hi.unsqueeze(-1), upper.unsqueeze(-1))
    return out


class WorldModel(nn.Module):
    """Encoder obs -> z, dynamics (z, a) -> z', reward (z, a) -> r (in normalised reward units)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.latent_dim % cfg.simnorm_group:
            raise ValueError(f"latent_dim {cfg.latent_dim} is not a multiple of simnorm_group {cfg.simnorm_group}")
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, cfg.latent_dim
        self.encoder = mlp(obs_dim, cfg.encoder_dims, cfg.latent_dim, SimNorm(cfg.simnorm_group))
        self.dynamics = mlp(cfg.latent_dim + act_dim, cfg.dynamics_dims, cfg.latent_dim, SimNorm(cfg.simnorm_group))
        if cfg.reward_bins == 1 or cfg.reward_bins < 0:
            raise ValueError(f"reward_bins must be 0 (regression) or > 1 (two-hot), got {cfg.reward_bins}")
        self.reward_bins = cfg.reward_bins
        self.reward = mlp(cfg.latent_dim + act_dim, cfg.reward_dims, max(cfg.reward_bins, 1))
        self.register_buffer(
            "reward_support", torch.linspace(cfg.reward_vmin, cfg.reward_vmax, max(cfg.reward_bins, 2)),
            persistent=False,
        )
        self.reward_readout = cfg.reward_readout
        if cfg.init == "upstream":
            # TD-MPC2's init, which upstream applies to every Linear of its world model.
            for lin in linears(self):
                nn.init.trunc_normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)
        # Zero-initialised reward output: predictions start at exactly 0 (uniform logits over a
        # symmetric support, too), so the first actor gradients through an untrained world model
        # are not random noise.
        nn.init.zeros_(self.reward[-1].weight)
        nn.init.zeros_(self.reward[-1].bias)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.dynamics(torch.cat([z, a], dim=-1))

    def reward_value(self, head: torch.Tensor) -> torch.Tensor:
        """The reward head's output -> reward [..., 1] (identity for regression)."""
        if self.reward_bins == 0:
            return head
        expectation = (F.softmax(head, dim=-1) * self.reward_support).sum(-1, keepdim=True)
        # "symlog": upstream's actor reads the expectation over the symlog support as the reward
        # (its almost_two_hot_inv); "symexp" maps it back to reward units.
        return expectation if self.reward_readout == "symlog" else symexp(expectation)

    def reward_loss(self, head: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of the head's output against target rewards [..., 1]."""
        if self.reward_bins == 0:
            return F.mse_loss(head, target)
        soft = two_hot(symlog(target), self.reward_support)
        return -(soft * F.log_softmax(head, dim=-1)).sum(-1).mean()

    def predict_reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.reward_value(self.reward(torch.cat([z, a], dim=-1)))

    def step(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One imagined step: returns exactly two values (next latent, reward [..., 1]).
        Upstream's eval() unpacked three from this and crashed (PWM issue #5)."""
        next_z, head = self.step_head(z, a)
        return next_z, self.reward_value(head)

    def step_head(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(next latent, the reward head's raw output): what the world-model loss trains."""
        za = torch.cat([z, a], dim=-1)
        return self.dynamics(za), self.reward(za)


class Actor(nn.Module):
    """Stochastic tanh policy on the latent: a = tanh(mu(z) + sigma * eps), sigma state-independent."""

    def __init__(self, latent_dim: int, act_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.mu = mlp(latent_dim, cfg.actor_dims, act_dim, order=cfg.layer_order)
        self.logstd = nn.Parameter(torch.full((act_dim,), float(cfg.actor_logstd_init)))
        self.logstd_min = float(cfg.actor_logstd_min)
        self.clamp_parameter = cfg.actor_logstd_clamp == "parameter"

    def std(self) -> torch.Tensor:
        # The floor keeps exploration alive: first-order gradients otherwise shrink sigma fast.
        if self.clamp_parameter:
            # Upstream's way: the parameter itself is floored, and the gradient always reaches it.
            # Through .data, as upstream does, so that autograd's version counter is not bumped.
            self.logstd.data.clamp_(min=self.logstd_min)
            return self.logstd.exp()
        return self.logstd.clamp(min=self.logstd_min).exp()

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """The pre-tanh mean (what upstream's actor(z, deterministic=True) returns)."""
        return self.mu(z)

    def forward(self, z: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """A squashed action in [-1, 1]: tanh of the mean, or of a sample around it."""
        mu = self.mu(z)
        if deterministic:
            return torch.tanh(mu)
        return torch.tanh(mu + self.std() * torch.randn_like(mu))


class Critic(nn.Module):
    """Ensemble of value heads V_i(z); targets and the actor bootstrap use the ensemble minimum."""

    def __init__(self, latent_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = nn.ModuleList(mlp(latent_dim, cfg.critic_dims, 1, order=cfg.layer_order)
                                   for _ in range(cfg.num_critics))
        if cfg.init == "upstream":
            # Upstream's CriticMLP: orthogonal weights with gain sqrt(2), zero biases, every layer.
            for lin in linears(self):
                nn.init.orthogonal_(lin.weight, gain=2.0 ** 0.5)
                nn.init.zeros_(lin.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """All heads: [num_critics, ..., 1]."""
        return torch.stack([h(z) for h in self.heads])

    def min_value(self, z: torch.Tensor) -> torch.Tensor:
        """min over the ensemble: [..., 1]."""
        return self.forward(z).min(dim=0).values


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class ParameterCounts:
    world_model: int
    actor: int
    critic: int

    @property
    def total(self) -> int:
        return self.world_model + self.actor + self.critic

    def summary(self) -> str:
        return (f"world model {self.world_model / 1e6:.2f}M, actor {self.actor / 1e6:.2f}M, "
                f"critic {self.critic / 1e6:.2f}M, total {self.total / 1e6:.2f}M")


def build_models(obs_dim: int, act_dim: int, cfg: ModelConfig,
                 device: str | torch.device) -> tuple[WorldModel, Actor, Critic, ParameterCounts]:
    wm = WorldModel(obs_dim, act_dim, cfg).to(device)
    actor = Actor(cfg.latent_dim, act_dim, cfg).to(device)
    critic = Critic(cfg.latent_dim, cfg).to(device)
    counts = ParameterCounts(count_parameters(wm), count_parameters(actor), count_parameters(critic))
    return wm, actor, critic, counts
