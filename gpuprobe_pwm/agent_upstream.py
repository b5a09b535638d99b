"""Upstream PWM's algorithm (imgeorgiev/PWM aa5a1d8, algorithms/pwm.py), step for step: alg.variant=upstream.

What makes it upstream's and not the bundled PWMAgent's (docs/TRAINER.md, "Differences from upstream"):
- the actor's H-step rollout starts from the live env states and steps the real env in lockstep with
  the same actions; those steps are the data collection. The model rolls open loop; an env that
  finishes (terminates or truncates) closes its return there, with value 0 on a real termination,
  and restarts from the encoding of the env's new observation;
- the world-model loss weights step t by gamma^t and returns (dynamics + reward) / H;
- obs_rms / rew_rms / ret_rms as configured, clipped to +-5, updated from world-model batches;
- no target critic: the critic targets bootstrap from the online critic's values taken during the
  rollout, before the epoch's critic updates; critic minibatches are sequential;
- the end-of-window value carries gamma^(H+1), as upstream's does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpuprobe_pwm.agent import AgentConfig, PWMAgent
from gpuprobe_pwm.normalizer import RunningMeanStd

log = logging.getLogger(__name__)

RMS_EPS = 1e-5   # upstream's RunningMeanStd.normalize: (x - mean) / sqrt(var + 1e-5), then clip
RMS_CLIP = 5.0


def upstream_normalize(rms: RunningMeanStd, x: torch.Tensor) -> torch.Tensor:
    return ((x - rms.mean.to(x.dtype)) / torch.sqrt(rms.var.to(x.dtype) + RMS_EPS)).clamp(-RMS_CLIP, RMS_CLIP)


def world_model_loss_weights(horizon: int, gamma: float) -> torch.Tensor:
    """Step t's weight gamma^t (the same for the dynamics and the reward term)."""
    return gamma ** torch.arange(horizon, dtype=torch.float64)


def lambda_targets(rewards: torch.Tensor, next_values: torch.Tensor, done_mask: torch.Tensor,
                   gamma: float, lam: float) -> torch.Tensor:
    """Upstream's TD(lambda) targets over a rollout window with ends: rewards, next_values (the value
    after step t, 0 after a termination) and done_mask (1 where a trajectory ends after step t; the
    window's last step always ends one) are [H, B]. A recursion over (A, B) pairs: A is the lambda-weighted
    sum of n-step returns so far, B the longest return; at an end both restart."""
    horizon, bsz = rewards.shape
    acc_a = torch.zeros(bsz, dtype=rewards.dtype, device=rewards.device)
    acc_b = torch.zeros_like(acc_a)
    lam_t = torch.ones_like(acc_a)
    out = torch.empty_like(rewards)
    for t in reversed(range(horizon)):
        done = done_mask[t]
        lam_t = lam_t * lam * (1.0 - done) + done
        acc_a = (1.0 - done) * (lam * gamma * acc_a + gamma * next_values[t]
                                + (1.0 - lam_t) / (1.0 - lam) * rewards[t])
        acc_b = gamma * (next_values[t] * done + acc_b * (1.0 - done)) + rewards[t]
        out[t] = (1.0 - lam) * acc_a + lam_t * acc_b
    return out


def sequential_minibatches(n: int, num_envs: int, horizon: int, critic_batches: int) -> list[slice]:
    """Upstream's CriticDataset without shuffling: batch num_envs*H // critic_batches, in order,
    the last one short when n does not divide."""
    size = max(1, num_envs * horizon // critic_batches)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass
class Rollout:
    """What the critic learns from (all detached): latents [H, B, Z] at the start of each step,
    model rewards, values after each step (0 after a termination), and where trajectories end."""

    latents: torch.Tensor
    rewards: torch.Tensor
    next_values: torch.Tensor
    done_mask: torch.Tensor


def _sanitize(obs: torch.Tensor) -> torch.Tensor:
    # As upstream: a row with a non-finite or huge entry (a blown-up simulation) becomes zeros.
    bad = (~torch.isfinite(obs)).any(-1) | (obs.abs() > 1e6).any(-1)
    return torch.where(bad[:, None], torch.zeros_like(obs), obs) if bad.any() else obs


class UpstreamAgent(PWMAgent):
    """The same networks, optimisers and state as PWMAgent (one checkpoint format); upstream's
    losses and updates. The target critic PWMAgent builds is left unused."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: AgentConfig, device: str | torch.device) -> None:
        super().__init__(obs_dim, act_dim, cfg, device)
        self.weights = world_model_loss_weights(cfg.horizon, cfg.gamma).to(self.device, torch.float32)

    # ---- normalisation, acting ----------------------------------------------------------
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return upstream_normalize(self.obs_rms, obs) if self.cfg.obs_rms else obs

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.world_model.encode(self.normalize_obs(obs))

    def scale_reward(self, rew: torch.Tensor) -> torch.Tensor:
        return upstream_normalize(self.rew_rms, rew) if self.cfg.rew_rms else rew

    def model_reward(self, head: torch.Tensor) -> torch.Tensor:
        """The reward the actor and critic see, [..., 1]: a scalar head as is; with bins, the softmax
        expectation over the support, in symlog space (upstream's almost_two_hot_inv: no symexp)."""
        wm = self.world_model
        if wm.reward_bins == 0:
            return head
        if getattr(wm, "reward_readout", "symlog") == "symlog":
            return wm.reward_value(head)
        return (F.softmax(head, dim=-1) * wm.reward_support).sum(-1, keepdim=True)

    # ---- world model --------------------------------------------------------------------
    def world_model_loss(self, obs: torch.Tensor, act: torch.Tensor,
                         rew: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """obs [H+1,B,O], act [H,B,A], rew [H,B,1], already normalised. Upstream's weighting:
        (sum_t g^t mse_t + mean_t g^t rew_t) / H, i.e. the reward term is averaged over steps
        where the dynamics term is summed."""
        horizon = act.shape[0]
        weights = self.weights[:horizon]
        with torch.no_grad():
            targets = self.world_model.encode(obs[1:])
        z = self.world_model.encode(obs[0])
        dynamics = z.new_zeros(())
        reward = z.new_zeros(())
        for t in range(horizon):
            z_next, head = self.world_model.step_head(z, act[t])
            dynamics = dynamics + weights[t] * F.mse_loss(z_next, targets[t])
            reward = reward + weights[t] * self.world_model.reward_loss(head, rew[t])
            z = z_next
        reward = reward / horizon
        loss = (dynamics + reward) / horizon
        return loss, {"wm/dynamics": dynamics.item() / horizon, "wm/reward": reward.item() / horizon}

    def update_world_model(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor,
                           statistics: bool = True) -> dict[str, float]:
        """One update; the statistics are updated from the batch first, except in pretraining
        (statistics=False: upstream's pretrain_wm only normalises)."""
        obs = torch.nan_to_num(obs)
        if self.cfg.obs_rms:
            if statistics:
                self.obs_rms.update(obs.reshape(-1, obs.shape[-1]))
            obs = upstream_normalize(self.obs_rms, obs)
        if self.cfg.rew_rms:
            if statistics:
                self.rew_rms.update(rew.reshape(-1))
            rew = upstream_normalize(self.rew_rms, rew)
        loss, info = self.world_model_loss(obs, act, rew)
        self.world_model_opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = nn.utils.clip_grad_norm_(self.world_model.parameters(), self.cfg.wm_grad_clip)
        if torch.isnan(grad):
            log.warning("world model NaN gradient")
            for p in self.world_model.parameters():
                if p.grad is not None:
                    p.grad.nan_to_num_(0.0, 0.0, 0.0)
        self.world_model_opt.step()
        return {"wm/loss": loss.item(), "wm/grad_norm": float(grad), **info}

    # ---- actor: the rollout in lockstep with the env ------------------------------------
    def rollout(self, env: Any, collector: Any) -> tuple[torch.Tensor, Rollout, dict[str, float]]:
        """One H-step window from the envs' current states; every env step is booked in `collector`
        (the data collection). Returns the actor loss (a graph unless under no_grad) and the data
        the critic fits."""
        cfg, wm = self.cfg, self.world_model
        gamma_ = cfg.gamma
        obs = env.reset(grads=True)  # keeps the states, cuts any graph behind them
        z = wm.encode(self.normalize_obs(obs))
        n = obs.shape[0]
        rew_acc = z.new_zeros(n)
        discount = z.new_ones(n)
        loss = z.new_zeros(n)
        latents, rewards, values, ends = [], [], [], []
        value = z.new_zeros(n)
        for i in range(cfg.horizon):
            latents.append(z.detach())
            action = self.actor(z.detach() if cfg.detach else z)
            z, head = wm.step_head(z, action)
            rew = torch.nan_to_num(self.model_reward(head).squeeze(-1), 0.0, 0.0, 0.0)
            nxt, env_rew, done, info = env.step(action.detach())
            term = info["termination"].to(torch.bool)
            nxt = _sanitize(nxt)
            info = {**info, "obs_before_reset": _sanitize(info.get("obs_before_reset", nxt))}
            collector.record(action.detach(), nxt, env_rew, done, info)
            rew_acc = rew_acc + discount * rew
            # the value after this step, of the model's latent; 0 where the env really terminated
            value = torch.where(term, torch.zeros_like(rew), self.critic.min_value(z).squeeze(-1))
            if bool((value.abs() > 1e6).any()):
                raise FloatingPointError("critic value beyond 1e6 in the actor rollout")
            # finished envs restart from their new observation (after the value above, as upstream)
            z = torch.where(done[:, None], wm.encode(self.normalize_obs(nxt)), z)
            if i < cfg.horizon - 1:
                loss = loss + torch.where(done, -rew_acc - gamma_ * discount * value, torch.zeros_like(loss))
            discount = torch.where(done, torch.ones_like(discount), discount * gamma_)
            # upstream clears finished envs' sums at the last step too, so their window return is lost
            rew_acc = torch.where(done, torch.zeros_like(rew_acc), rew_acc)
            rewards.append(rew.detach())
            values.append(value.detach())
            last = i == cfg.horizon - 1
            ends.append(torch.ones_like(rew) if last else done.to(rew.dtype))
        # the end of the window: discount is gamma^H here, so the value carries gamma^(H+1) (upstream's)
        loss = loss + (-rew_acc - gamma_ * discount * value)
        if cfg.ret_rms:
            self.ret_rms.update(loss.detach())
            loss = loss / torch.sqrt(self.ret_rms.var.to(loss.dtype) + RMS_EPS)
        else:
            loss = loss / cfg.horizon
        data = Rollout(torch.stack(latents), torch.stack(rewards), torch.stack(values), torch.stack(ends))
        return loss.mean(), data, {"actor/model_return": -loss.mean().item()}

    def update_actor_in_env(self, env: Any, collector: Any) -> tuple[dict[str, float], Rollout]:
        # Only the actor steps here; freezing the rest saves their weight gradients (upstream lets
        # them accumulate and zeroes them before their own updates: the same updates).
        self.world_model.requires_grad_(False)
        self.critic.requires_grad_(False)
        try:
            loss, data, info = self.rollout(env, collector)
            self.actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            grad = nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.actor_grad_clip)
            if torch.isnan(grad):
                log.warning("actor NaN gradient; zeroed")
                for p in self.actor.parameters():
                    if p.grad is not None:
                        p.grad.nan_to_num_(0.0, 0.0, 0.0)
            self.actor_opt.step()
        finally:
            self.world_model.requires_grad_(True)
            self.critic.requires_grad_(True)
        return {"actor/loss": loss.item(), "actor/grad_norm": float(grad),
                "actor/std": self.actor.std().mean().item(), **info}, data

    # ---- critic -------------------------------------------------------------------------
    @torch.no_grad()
    def critic_targets_from(self, data: Rollout) -> torch.Tensor:
        if self.cfg.critic_method == "one-step":
            return data.rewards + self.cfg.gamma * data.next_values
        return lambda_targets(data.rewards, data.next_values, data.done_mask, self.cfg.gamma, self.cfg.lam)

    def update_critic_on(self, data: Rollout) -> dict[str, float]:
        cfg = self.cfg
        horizon, num_envs = data.rewards.shape
        targets = self.critic_targets_from(data).reshape(-1)
        latents = data.latents.reshape(targets.shape[0], -1)
        keep = (latents == latents).all(-1)  # upstream drops NaN latents
        latents, targets = latents[keep], targets[keep]
        batches = sequential_minibatches(latents.shape[0], num_envs, horizon, cfg.critic_batches)
        last_pass: list[float] = []
        for _ in range(cfg.critic_iterations):
            last_pass = []
            for part in batches:
                loss = self.critic_loss(latents[part], targets[part])
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                for p in self.critic.parameters():
                    if p.grad is not None:
                        p.grad.nan_to_num_(0.0, 0.0, 0.0)
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.critic_grad_clip)
                self.critic_opt.step()
                last_pass.append(loss.item())
        return {"critic/loss": sum(last_pass) / max(len(last_pass), 1), "critic/target": targets.mean().item()}
