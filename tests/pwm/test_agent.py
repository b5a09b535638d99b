from __future__ import annotations

import pytest
import torch

from gpuprobe_pwm.agent import AgentConfig, PWMAgent, lambda_returns
from gpuprobe_pwm.models import ModelConfig

H, B, OBS, ACT = 4, 16, 5, 2


def tiny_agent(reward_bins: int = 0, **overrides) -> PWMAgent:
    torch.manual_seed(0)
    model = ModelConfig(latent_dim=32, encoder_dims=[32], dynamics_dims=[32], reward_dims=[32],
                        actor_dims=[32, 16], critic_dims=[32, 16], reward_bins=reward_bins)
    cfg = AgentConfig(horizon=H, wm_batch_size=B, actor_batch_size=B, critic_iterations=2,
                      critic_batches=2, model=model, **overrides)
    return PWMAgent(OBS, ACT, cfg, "cpu")


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(H + 1, B, OBS, generator=g)
    act = torch.rand(H, B, ACT, generator=g) * 2 - 1
    rew = obs[:-1, :, :1] + 0.5 * act[..., :1]  # learnable from (z, a)
    return obs, act, rew


def test_lambda_returns_matches_recursive_definition():
    g = torch.Generator().manual_seed(0)
    rew, val = torch.randn(5, 3, generator=g), torch.randn(6, 3, generator=g)
    gamma, lam = 0.9, 0.7

    def G(t: int) -> torch.Tensor:  # G_t = r_t + gamma((1-lam)V_{t+1} + lam G_{t+1}), G_H = V_H
        if t == 5:
            return val[5]
        return rew[t] + gamma * ((1 - lam) * val[t + 1] + lam * G(t + 1))

    expected = torch.stack([G(t) for t in range(5)])
    assert torch.allclose(lambda_returns(rew, val, gamma, lam), expected, atol=1e-6)
    # lam = 0 is one-step TD, lam = 1 the discounted Monte Carlo return bootstrapped at H.
    assert torch.allclose(lambda_returns(rew, val, gamma, 0.0), rew + gamma * val[1:], atol=1e-6)


@pytest.mark.parametrize("reward_bins", [0, 101], ids=["regression", "two-hot"])
def test_world_model_loss_falls_on_fixed_batch(reward_bins):
    agent = tiny_agent(reward_bins, wm_lr=3e-3)  # a larger step than PWM's 3e-4: a few dozen steps suffice
    obs, act, rew = fixed_batch()
    agent.obs_rms.update(obs)
    agent.rew_rms.update(rew)
    first = agent.update_world_model(obs, act, rew)
    for _ in range(40 if reward_bins == 0 else 150):  # classification learns the reward more slowly
        last = agent.update_world_model(obs, act, rew)
    # The two-hot cross-entropy cannot fall below the targets' own entropy (they split between two
    # bins), so its loss falls less far; the prediction check below is the one that matters.
    factor = 0.5 if reward_bins == 0 else 0.75
    assert last["wm/loss"] < factor * first["wm/loss"], (first, last)
    assert last["wm/reward"] < factor * first["wm/reward"], (first, last)
    # And the reward the actor sees (two-hot: symexp of the expectation) moved towards the data.
    z = agent.world_model.encode(agent.obs_rms.normalize(obs[0]))
    err = (agent.world_model.predict_reward(z, act[0]) - agent.scale_reward(rew[0])).abs().mean()
    assert err < 0.5 * agent.scale_reward(rew[0]).abs().mean()


def test_critic_loss_falls_and_targets_have_shape():
    agent = tiny_agent(critic_lr=3e-3)
    obs, _, _ = fixed_batch()
    _info, imagination = agent.update_actor(obs[0])
    assert imagination.latents.shape == (H + 1, B, 32) and imagination.rewards.shape == (H, B)
    assert agent.critic_targets(imagination).shape == (H, B)
    # A fixed regression problem: imagined latents, constant-ish targets.
    imagination.rewards.fill_(1.0)
    targets = agent.critic_targets(imagination)
    z = imagination.latents[:-1].reshape(H * B, -1)
    first = agent.critic_loss(z, targets.reshape(-1)).item()
    for _ in range(30):
        loss = agent.critic_loss(z, targets.reshape(-1))
        agent.critic_opt.zero_grad()
        loss.backward()
        agent.critic_opt.step()
    assert loss.item() < 0.2 * first, (first, loss.item())
    assert "critic/loss" in agent.update_critic(imagination)


def test_actor_update_changes_only_the_actor():
    agent = tiny_agent()
    obs, act, rew = fixed_batch()
    agent.rew_rms.update(rew)
    for _ in range(5):  # non-zero reward head, so the actor gets a gradient
        agent.update_world_model(obs, act, rew)
    wm_before = [p.clone() for p in agent.world_model.parameters()]
    critic_before = [p.clone() for p in agent.critic.parameters()]
    actor_before = [p.clone() for p in agent.actor.parameters()]
    info, _ = agent.update_actor(obs[0])
    assert info["actor/grad_norm"] > 0
    assert all(torch.equal(a, b) for a, b in zip(wm_before, agent.world_model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert all(p.requires_grad for p in agent.world_model.parameters())


def test_linear_lr_decay_and_optimizer_betas():
    agent = tiny_agent()
    assert agent.actor_opt.param_groups[0]["betas"] == (0.7, 0.95)
    assert agent.set_progress(0.0)["lr/actor"] == 5e-4
    lrs = agent.set_progress(0.5)
    assert abs(lrs["lr/actor"] - (5e-4 + 1e-5) / 2) < 1e-12
    assert abs(lrs["lr/wm"] - (3e-4 + 1e-5) / 2) < 1e-12
    assert agent.critic_opt.param_groups[0]["lr"] == lrs["lr/critic"]
    assert abs(agent.set_progress(1.0)["lr/critic"] - 1e-5) < 1e-12


def test_state_dict_round_trip():
    agent = tiny_agent()
    obs, act, rew = fixed_batch()
    agent.obs_rms.update(obs)
    agent.update_world_model(obs, act, rew)
    other = tiny_agent()
    other.load_state_dict(agent.state_dict())
    assert torch.equal(other.obs_rms.mean, agent.obs_rms.mean)
    assert other.world_model_opt.state_dict()["state"][0]["step"] == 1
    for a, b in zip(agent.world_model.parameters(), other.world_model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("switch", ["obs_rms", "rew_rms", "ret_rms"])
def test_bundled_agent_honours_upstreams_normaliser_switches(switch):
    """`alg=bundled_5M alg.obs_rms=false` (and the other two) must change what the agent does: the
    ablation of the bundled departures switches them, and a key silently ignored would fake it."""
    obs, act, rew = fixed_batch()
    on, off = tiny_agent(), tiny_agent(**{switch: False})
    for agent in (on, off):  # statistics far from (0, 1), so normalising visibly changes values
        agent.obs_rms.update(obs * 5 + 3)
        agent.rew_rms.update(rew * 7)
    if switch == "obs_rms":
        assert torch.equal(off.normalize_obs(obs[0]), obs[0])
        assert not torch.allclose(on.normalize_obs(obs[0]), obs[0])
    elif switch == "rew_rms":
        assert torch.equal(off.scale_reward(rew), rew)
        assert not torch.allclose(on.scale_reward(rew), rew)
    else:
        torch.manual_seed(2)  # the actor samples its actions: the same draws for both
        _, _, info_on = on.actor_loss(obs[0])
        torch.manual_seed(2)
        loss_off, _, info_off = off.actor_loss(obs[0])
        assert info_on["actor/return"] == pytest.approx(info_off["actor/return"])
        assert loss_off.item() == pytest.approx(-info_off["actor/return"] / H, rel=1e-5)
        assert on.ret_rms.count >= B and off.ret_rms.count < 1  # only the one switched on updates it


def test_bundled_agent_honours_detach():
    """alg.detach=true feeds the actor a constant latent: its gradient then differs from the
    attached one (which also flows back through earlier actions' effect on later latents)."""
    obs, _, _ = fixed_batch()
    grads = []
    for detach in (False, True):
        agent = tiny_agent(detach=detach)
        torch.manual_seed(2)
        loss, _, _ = agent.actor_loss(obs[0])
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in agent.actor.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1])


def test_bundled_agent_honours_one_step_critic_targets():
    obs, _, _ = fixed_batch()
    agent = tiny_agent(critic_method="one-step")
    _, imagination, _ = agent.actor_loss(obs[0])
    values = agent.target_critic.min_value(imagination.latents).squeeze(-1)
    expected = imagination.rewards + agent.cfg.gamma * values[1:]
    assert torch.allclose(agent.critic_targets(imagination), expected, atol=1e-6)
    assert not torch.allclose(tiny_agent().critic_targets(imagination), expected, atol=1e-4)
