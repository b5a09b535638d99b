"""Upstream PWM's algorithm pieces (gpuprobe_pwm/agent_upstream.py) against small hand-computed cases."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gpuprobe_pwm.agent import AgentConfig
from gpuprobe_pwm.agent_upstream import (
    UpstreamAgent,
    lambda_targets,
    sequential_minibatches,
    upstream_normalize,
    world_model_loss_weights,
)
from gpuprobe_pwm.models import ModelConfig, upstream_layout
from gpuprobe_pwm.normalizer import RunningMeanStd
from gpuprobe_pwm.trainer_upstream import warmup_iterations

TINY_MODEL = ModelConfig(latent_dim=8, encoder_dims=[8], dynamics_dims=[8], reward_dims=[8], actor_dims=[8],
                         critic_dims=[8], num_critics=2)


def tiny_agent(**overrides) -> UpstreamAgent:
    cfg = replace(AgentConfig(variant="upstream", obs_rms=False, rew_rms=False, ret_rms=False, model=TINY_MODEL),
                  **overrides)
    return UpstreamAgent(1, 1, cfg, "cpu")


class LineWorldModel:
    """A 1-d 'world model' whose numbers can be followed by hand: encode(obs) = obs,
    next(z, a) = z + a (step_head's first value), the reward head's output = z."""

    reward_bins = 0

    def encode(self, obs):
        return obs.clone()

    def step_head(self, z, a):
        return z + a, z.clone()

    def reward_loss(self, head, target):
        return (head - target).pow(2).mean()

    def requires_grad_(self, flag):
        return self


def test_world_model_loss_weights_steps_by_gamma_t_and_divides_by_h():
    agent = tiny_agent(horizon=2, gamma=0.5)
    agent.world_model = LineWorldModel()
    obs = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1)
    act = torch.tensor([2.0, 1.0]).view(2, 1, 1)
    rew = torch.tensor([1.0, 4.0]).view(2, 1, 1)
    loss, info = agent.world_model_loss(obs, act, rew)
    # dynamics: z1 = 0 + 2 vs 1 -> 1; z2 = 2 + 1 vs 3 -> 0;  sum_t 0.5^t d_t = 1
    # reward:  head0 = 0 vs 1 -> 1; head1 = z1 = 2 vs 4 -> 4; mean_t 0.5^t r_t = (1 + 2) / 2 = 1.5
    # total: (1 + 1.5) / H = 1.25
    assert loss.item() == pytest.approx(1.25)
    assert info["wm/dynamics"] == pytest.approx(0.5) and info["wm/reward"] == pytest.approx(0.75)
    assert torch.allclose(world_model_loss_weights(4, 0.99), torch.tensor([1.0, 0.99, 0.99**2, 0.99**3],
                                                                          dtype=torch.float64))


class ScriptedEnv:
    """Two envs; after the first step env 0 terminates (its new episode starts at obs 5) and env 1
    moves to obs 1; after the second step nothing ends."""

    num_envs = 2

    def __init__(self):
        self.t = 0

    def reset(self, grads=False):
        return torch.zeros(2, 1)

    def step(self, action):
        self.t += 1
        if self.t == 1:
            done = torch.tensor([True, False])
            return torch.tensor([[5.0], [1.0]]), torch.tensor([0.3, 0.4]), done, {
                "termination": done.clone(), "truncation": torch.zeros(2, dtype=torch.bool),
                "obs_before_reset": torch.tensor([[9.0], [1.0]])}
        done = torch.zeros(2, dtype=torch.bool)
        return torch.tensor([[6.0], [2.0]]), torch.tensor([0.5, 0.6]), done, {
            "termination": done.clone(), "truncation": done.clone(), "obs_before_reset": torch.tensor([[6.0], [2.0]])}


class Recorder:
    def __init__(self):
        self.steps = []

    def record(self, action, nxt, rew, done, info):
        self.steps.append((nxt.clone(), rew.clone(), done.clone(), info["obs_before_reset"].clone()))


class TenTimesCritic:
    def min_value(self, z):
        return 10.0 * z

    def requires_grad_(self, flag):
        return self


def test_rollout_termination_value_zero_reencode_and_terminal_gamma_h_plus_1():
    agent = tiny_agent(horizon=2, gamma=0.5)
    agent.world_model = LineWorldModel()
    agent.critic = TenTimesCritic()
    agent.actor = lambda z, deterministic=False: torch.ones_like(z)  # every action is +1
    recorder = Recorder()
    with torch.no_grad():
        loss, data, _ = agent.rollout(ScriptedEnv(), recorder)
    # step 0: z = [0, 0], rewards [0, 0], model z' = [1, 1]; env 0 terminates: value 0, restarts at
    #   encode(5) = 5, its (empty) window closes with loss 0; env 1: value 10 * 1 = 10.
    # step 1: z = [5, 1], rewards [5, 1] with discounts [1, 0.5]: sums [5, 0.5]; z' = [6, 2],
    #   values [60, 20]; the window's end adds gamma * gamma^H * value = 0.125 * value for env 1,
    #   and for env 0 (restarted, discount 0.5 after its one step) 0.5 * 0.5 * 60 = 15.
    # per env: [-(5 + 15), -(0.5 + 2.5)] / H = [-10, -1.5]; mean -5.75
    assert loss.item() == pytest.approx(-5.75)
    assert torch.equal(data.done_mask, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert torch.equal(data.next_values, torch.tensor([[0.0, 10.0], [60.0, 20.0]]))
    assert torch.equal(data.rewards, torch.tensor([[0.0, 0.0], [5.0, 1.0]]))
    assert torch.equal(data.latents.squeeze(-1), torch.tensor([[0.0, 0.0], [5.0, 1.0]]))
    # the env was stepped in lockstep and every step booked (the data collection)
    assert len(recorder.steps) == 2 and torch.equal(recorder.steps[0][3], torch.tensor([[9.0], [1.0]]))


def test_lambda_targets_by_hand():
    # no end before the window's last step: G1 = r1 + g V2 = 2 + 0.5*8 = 6;
    # G0 = r0 + g((1 - l) V1 + l G1) = 1 + 0.5 (0.5*4 + 0.5*6) = 3.5
    rewards = torch.tensor([[1.0], [2.0]])
    values = torch.tensor([[4.0], [8.0]])
    out = lambda_targets(rewards, values, torch.tensor([[0.0], [1.0]]), gamma=0.5, lam=0.5)
    assert out.squeeze(-1).tolist() == pytest.approx([3.5, 6.0])
    # a termination after step 0 (value 0): G0 = r0 = 1, and nothing after it leaks back
    out = lambda_targets(rewards, torch.tensor([[0.0], [8.0]]), torch.tensor([[1.0], [1.0]]), gamma=0.5, lam=0.5)
    assert out.squeeze(-1).tolist() == pytest.approx([1.0, 6.0])


def test_critic_minibatches_are_sequential_with_batch_num_envs_h_over_4():
    assert sequential_minibatches(64 * 16, 64, 16, 4) == [slice(0, 256), slice(256, 512), slice(512, 768),
                                                         slice(768, 1024)]
    # rows dropped as NaN shorten the last batch, as upstream's CriticDataset does
    assert sequential_minibatches(1000, 64, 16, 4)[-1] == slice(768, 1000)


def test_critic_update_visits_the_rows_in_order(monkeypatch):
    agent = tiny_agent(horizon=2, critic_iterations=2, critic_batches=2)
    seen = []
    monkeypatch.setattr(agent, "critic_loss", lambda z, t: (seen.append(t.clone()), agent.critic(z).mean())[1])
    from gpuprobe_pwm.agent_upstream import Rollout

    data = Rollout(torch.randn(2, 2, 8), torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 2), torch.ones(2, 2))
    agent.update_critic_on(data)
    # batch = 2 envs * H 2 / 2 = 2 rows; targets (done everywhere, values 0) are the rewards, in order
    assert [t.tolist() for t in seen] == [[1.0, 2.0], [3.0, 4.0]] * 2


def test_warmup_is_episode_length_iterations_the_first_time_only():
    assert warmup_iterations(1000, 8, warmed_up=False) == 1000
    assert warmup_iterations(1000, 8, warmed_up=True) == 8


def test_upstream_normalisation_centres_and_clips_at_5():
    rms = RunningMeanStd((), "cpu")
    rms.update(torch.tensor([0.0, 2.0]))  # mean ~1, var ~1
    x = torch.tensor([1.0, 100.0, -100.0])
    out = upstream_normalize(rms, x)
    assert out[0].item() == pytest.approx(0.0, abs=1e-3) and out[1].item() == 5.0 and out[2].item() == -5.0


def test_bins_are_read_in_symlog_space():
    agent = tiny_agent(model=upstream_layout(replace(TINY_MODEL, reward_bins=5, reward_vmin=-2.0, reward_vmax=2.0)))
    head = torch.tensor([[0.0, 0.0, 0.0, 0.0, 50.0]])  # all mass on the top bin, 2.0
    assert agent.model_reward(head).item() == pytest.approx(2.0)  # not symexp(2) = 6.39
