from __future__ import annotations

import pytest
import torch

from gpuprobe_pwm.models import (
    Actor,
    Critic,
    ModelConfig,
    SimNorm,
    WorldModel,
    build_models,
    symexp,
    symlog,
    two_hot,
    upstream_layout,
)
from gpuprobe_pwm.train import agent_config, compose_config

TINY = ModelConfig(latent_dim=16, encoder_dims=[8], dynamics_dims=[8], reward_dims=[8],
                   actor_dims=[8, 8], critic_dims=[8, 8])


def test_world_model_shapes_and_simnorm():
    wm = WorldModel(5, 2, TINY)
    obs, act = torch.randn(7, 5), torch.rand(7, 2) * 2 - 1
    z = wm.encode(obs)
    assert z.shape == (7, 16)
    # SimNorm: every group of 8 is a probability vector.
    assert torch.allclose(z.view(7, 2, 8).sum(-1), torch.ones(7, 2), atol=1e-5)
    out = wm.step(z, act)
    assert isinstance(out, tuple) and len(out) == 2  # upstream eval() expected 3 (PWM issue #5)
    z_next, r = out
    assert z_next.shape == (7, 16) and r.shape == (7, 1)
    # Zero-initialised reward head: predictions start at exactly zero.
    assert torch.count_nonzero(r) == 0


def test_layers_are_linear_layernorm_mish():
    wm = WorldModel(5, 2, TINY)
    block = wm.dynamics[0]
    assert [type(m).__name__ for m in block] == ["Linear", "LayerNorm", "Mish"]
    assert isinstance(wm.encoder[-1][-1], SimNorm) and isinstance(wm.dynamics[-1][-1], SimNorm)


def test_actor_bounds_and_logstd_floor():
    actor = Actor(16, 3, TINY)
    assert torch.allclose(actor.logstd, torch.full((3,), -1.0))
    z = torch.randn(32, 16)
    a = actor(z)
    assert a.shape == (32, 3) and a.abs().max() <= 1.0
    assert not torch.equal(a, actor(z))  # stochastic
    assert torch.equal(actor(z, deterministic=True), actor(z, deterministic=True))
    with torch.no_grad():
        actor.logstd.fill_(-5.0)
    assert torch.allclose(actor.std(), torch.exp(torch.tensor(-1.427)))


def test_critic_ensemble_min():
    critic = Critic(16, TINY)
    z = torch.randn(10, 16)
    values = critic(z)
    assert values.shape == (3, 10, 1)
    assert torch.equal(critic.min_value(z), values.min(0).values)


def _linear(i: int, o: int) -> int:
    return i * o + o


def _mlp(i: int, hidden: list[int], o: int, normed_out: bool) -> int:
    n, d = 0, i
    for h in hidden:
        n += _linear(d, h) + 2 * h  # Linear + LayerNorm
        d = h
    return n + _linear(d, o) + (2 * o if normed_out else 0)


def expected_counts(obs: int, act: int, m: ModelConfig) -> tuple[int, int, int]:
    z = m.latent_dim
    wm = (_mlp(obs, m.encoder_dims, z, True) + _mlp(z + act, m.dynamics_dims, z, True)
          + _mlp(z + act, m.reward_dims, max(m.reward_bins, 1), False))
    actor = _mlp(z, m.actor_dims, act, False) + act
    critic = m.num_critics * _mlp(z, m.critic_dims, 1, False)
    return wm, actor, critic


@pytest.mark.parametrize("alg,nominal,band", [("pwm_5M", 5e6, (0.45, 0.60)), ("pwm_48M", 48e6, (0.35, 0.50))])
def test_parameter_counts_ant(alg, nominal, band):
    """Counted with Ant's sizes (obs 37, act 8). Exact against the closed form above; against the
    nominal size the count is ~53% (5M: 2.64M) and ~42% (48M: 20.1M). The nominal names are
    TD-MPC2's model sizes, which also count its 5-head Q ensemble with 101-bin outputs (and
    multi-task embeddings); PWM's single-task path does not use those, so we check a stated band
    rather than pretend to match."""
    model = agent_config(compose_config([f"alg={alg}"]).alg).model
    with torch.device("meta"):  # shapes only: no 80 MB of 48M weights to initialise
        _, _, _, counts = build_models(37, 8, model, "meta")
    assert (counts.world_model, counts.actor, counts.critic) == expected_counts(37, 8, model)
    assert band[0] <= counts.total / nominal <= band[1], counts.summary()


def test_two_hot_encodes_a_value_as_its_expectation_and_clamps_outside():
    support = torch.linspace(-10.0, 10.0, 101)
    x = torch.tensor([[-12.0], [-10.0], [-3.37], [0.0], [0.05], [9.99], [10.0], [25.0]])
    enc = two_hot(x, support)
    assert enc.shape == (8, 101) and torch.allclose(enc.sum(-1), torch.ones(8))
    assert ((enc > 0).sum(-1) <= 2).all()  # two neighbouring bins at most
    assert torch.allclose((enc * support).sum(-1, keepdim=True), x.clamp(-10, 10), atol=1e-5)
    assert torch.allclose(symexp(symlog(x)), x, atol=1e-4)


def test_two_hot_reward_head_starts_at_zero_and_keeps_the_step_contract():
    cfg = ModelConfig(**{**TINY.__dict__, "reward_bins": 101})
    wm = WorldModel(3, 2, cfg)
    z = wm.encode(torch.randn(4, 3))
    a = torch.randn(4, 2, requires_grad=True)
    next_z, r = wm.step(z, a)
    assert next_z.shape == z.shape and r.shape == (4, 1)
    assert torch.allclose(r, torch.zeros_like(r), atol=1e-6)  # zero-initialised: uniform logits, mean 0
    _, head = wm.step_head(z, a)
    assert head.shape == (4, 101)
    with torch.no_grad():
        wm.reward[-1].weight.normal_()  # trained weights: the reward is differentiable in a
    wm.step(z.detach(), a)[1].sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reward_bins"):
        WorldModel(3, 2, ModelConfig(**{**TINY.__dict__, "reward_bins": 1}))


# ---- upstream layout (issue 16: the networks as imgeorgiev/PWM builds them) -----------------------

def _kinds(seq) -> list[str]:
    return [type(m).__name__ for m in seq]


def test_upstream_layout_orders_actor_and_critic_layers_mish_then_layernorm():
    up, ours = upstream_layout(TINY), TINY
    assert up.is_upstream_layout and not ours.is_upstream_layout
    assert _kinds(Actor(16, 3, up).mu[0]) == ["Linear", "Mish", "LayerNorm"]
    assert _kinds(Critic(16, up).heads[2][1]) == ["Linear", "Mish", "LayerNorm"]
    assert _kinds(Actor(16, 3, ours).mu[0]) == ["Linear", "LayerNorm", "Mish"]
    # The world model is TD-MPC2's NormedLinear in both: Linear -> LayerNorm -> Mish.
    assert _kinds(WorldModel(5, 2, up).dynamics[0]) == ["Linear", "LayerNorm", "Mish"]
    with pytest.raises(ValueError, match="layer_order"):
        ModelConfig(layer_order="mish_mish")


@pytest.mark.parametrize("bins,wm_count", [(0, 1_469_953), (101, 1_521_253)])
def test_both_layouts_have_upstreams_parameter_counts_at_ant_sizes(bins, wm_count):
    """Issue 16's table (pwm_5M at Ant's obs 37 / act 8): world model 1,469,953 with one reward
    output (upstream's alg=pwm, num_bins empty), actor 307,716, critics 860,403."""
    for cfg in (ModelConfig(reward_bins=bins), upstream_layout(ModelConfig(reward_bins=bins))):
        with torch.device("meta"):
            _, _, _, counts = build_models(37, 8, cfg, "meta")
        assert (counts.world_model, counts.actor, counts.critic) == (wm_count, 307_716, 860_403)


def test_upstream_inits():
    torch.manual_seed(0)
    cfg = upstream_layout(ModelConfig())
    wm, critic = WorldModel(37, 8, cfg), Critic(512, cfg)
    enc = wm.encoder[0][0].weight  # 256 x 37
    assert abs(enc.std().item() - 0.02) < 0.002 and enc.abs().max() < 0.2
    assert torch.count_nonzero(wm.encoder[0][0].bias) == 0
    assert torch.count_nonzero(wm.reward[-1].weight) == 0 and torch.count_nonzero(wm.reward[-1].bias) == 0
    for lin in (critic.heads[0][0][0], critic.heads[1][1][0]):  # 400x512, 200x400: orthonormal rows * sqrt 2
        w = lin.weight
        assert torch.allclose(w @ w.T, 2 * torch.eye(w.shape[0]), atol=1e-4)
        assert torch.count_nonzero(lin.bias) == 0
    bundled = WorldModel(37, 8, ModelConfig()).encoder[0][0].weight
    assert bundled.std().item() > 0.05  # PyTorch's default: uniform(+-1/sqrt(37)), std 0.095


def test_reward_readout_symlog_is_the_expectation_and_symexp_maps_it_back():
    head = torch.randn(6, 101) * 3
    support = torch.linspace(-10, 10, 101)
    expectation = (head.softmax(-1) * support).sum(-1, keepdim=True)
    wm_up = WorldModel(3, 2, upstream_layout(ModelConfig(**{**TINY.__dict__, "reward_bins": 101})))
    wm_ours = WorldModel(3, 2, ModelConfig(**{**TINY.__dict__, "reward_bins": 101}))
    assert torch.allclose(wm_up.reward_value(head), expectation, atol=1e-6)
    assert torch.allclose(wm_ours.reward_value(head), symexp(expectation), atol=1e-5)
    assert not torch.allclose(wm_up.reward_value(head), wm_ours.reward_value(head))


def test_actor_mean_is_pre_tanh_and_the_upstream_floor_clamps_the_parameter():
    up = Actor(16, 3, upstream_layout(TINY))
    z = torch.randn(5, 16)
    assert torch.equal(torch.tanh(up.mean(z)), up(z, deterministic=True))
    with torch.no_grad():
        up.logstd.fill_(-5.0)
    std = up.std()
    assert torch.allclose(std, torch.exp(torch.tensor(-1.427)).expand(3))
    assert torch.allclose(up.logstd, torch.full((3,), -1.427))  # the parameter itself, as upstream
    std.sum().backward()
    assert up.logstd.grad is not None and up.logstd.grad.abs().sum() > 0  # the gradient still reaches it
    ours = Actor(16, 3, TINY)
    with torch.no_grad():
        ours.logstd.fill_(-5.0)
    ours.std()
    assert torch.allclose(ours.logstd, torch.full((3,), -5.0))  # bundled: the value is clamped, not the parameter
