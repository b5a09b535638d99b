"""PWM losses and updates: world model, actor through the world model, critic on TD(lambda) targets.

Reward units: the world model predicts rewards scaled by the running reward std (not centred, so a
zero reward stays zero); critic values and the actor's return are in the same units. The actor
loss is further divided by the running std of its own H-step returns.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gpuprobe_pwm.models import (
    ModelConfig,
    build_models,
)
from gpuprobe_pwm.normalizer import RunningMeanStd

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    """Algorithm hyperparameters (gpuprobe_pwm.settings reads them from alg/*.yaml); defaults are PWM's."""

    variant: str = "bundled"         # upstream (agent_upstream.UpstreamAgent) | bundled (PWMAgent)
    horizon: int = 16
    gamma: float = 0.99
    lam: float = 0.95
    rho: float = 0.5                 # per-step weight decay of the world model's sequence loss
    consistency_coef: float = 20.0
    reward_coef: float = 0.5
    actor_lr: float = 5e-4
    critic_lr: float = 5e-4
    wm_lr: float = 3e-4
    lr_end: float = 1e-5             # linear decay target at the last epoch
    lr_schedule: str = "linear"      # linear | constant
    betas: tuple[float, float] = (0.7, 0.95)
    actor_grad_clip: float = 1.0
    critic_grad_clip: float = 100.0
    wm_grad_clip: float = 20.0
    critic_iterations: int = 8
    critic_batches: int = 4
    target_critic_alpha: float = 0.2  # target <- alpha * target + (1 - alpha) * critic
    wm_iterations: int = 8
    wm_batch_size: int = 256
    actor_batch_size: int = 256
    # upstream's switches, honoured by both agents (each normalises in its own way, TRAINER.md)
    obs_rms: bool = True
    rew_rms: bool = True
    ret_rms: bool = True
    detach: bool = False
    critic_method: str = "td-lambda"  # td-lambda | one-step
    model: ModelConfig = field(default_factory=ModelConfig)


def lambda_returns(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) targets without terminations (imagined rollouts never end).

    rewards [H, B], values [H+1, B] -> targets [H, B], with
    G_t = r_t + gamma * ((1 - lam) * V_{t+1} + lam * G_{t+1}) and G_H = V_H.
    """
    horizon = rewards.shape[0]
    targets = torch.empty_like(rewards)
    nxt = values[horizon]
    for t in reversed(range(horizon)):
        nxt = rewards[t] + gamma * ((1.0 - lam) * values[t + 1] + lam * nxt)
        targets[t] = nxt
    return targets


@dataclass
class Imagination:
    """An actor rollout kept (detached) for the critic: latents [H+1, B, Z], rewards [H, B]."""

    latents: torch.Tensor
    rewards: torch.Tensor


class PWMAgent:
    def __init__(self, obs_dim: int, act_dim: int, cfg: AgentConfig, device: str | torch.device) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.world_model, self.actor, self.critic, self.param_counts = build_models(
            obs_dim, act_dim, cfg.model, self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        betas = tuple(cfg.betas)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, betas=betas)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, betas=betas)
        self.world_model_opt = torch.optim.Adam(self.world_model.parameters(), lr=cfg.wm_lr)
        self.obs_rms = RunningMeanStd((obs_dim,), self.device)
        self.rew_rms = RunningMeanStd((), self.device)
        self.ret_rms = RunningMeanStd((), self.device)

    # ---- acting -------------------------------------------------------------------------
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_rms.normalize(obs) if self.cfg.obs_rms else obs

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.world_model.encode(self.normalize_obs(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor(self.encode(obs), deterministic=deterministic)

    def scale_reward(self, rew: torch.Tensor) -> torch.Tensor:
        # No clipping: rare large rewards (a balanced pole) are exactly the ones to keep.
        return self.rew_rms.normalize(rew, center=False, clip=None) if self.cfg.rew_rms else rew

    # ---- learning-rate schedule ---------------------------------------------------------
    def set_progress(self, frac: float) -> dict[str, float]:
        """Linear decay from each base lr to lr_end as training goes from 0 to 1."""
        frac = min(max(frac, 0.0), 1.0) if self.cfg.lr_schedule == "linear" else 0.0
        lrs = {}
        for name, opt, base in (("actor", self.actor_opt, self.cfg.actor_lr),
                                ("critic", self.critic_opt, self.cfg.critic_lr),
                                ("wm", self.world_model_opt, self.cfg.wm_lr)):
            lr = base + (min(self.cfg.lr_end, base) - base) * frac
            for group in opt.param_groups:
                group["lr"] = lr
            lrs[f"lr/{name}"] = lr
        return lrs

    # ---- world model --------------------------------------------------------------------
    def world_model_loss(self, obs: torch.Tensor, act: torch.Tensor,
                         rew: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """obs [H+1,B,O], act [H,B,A], rew [H,B,1] (raw) -> rho-weighted consistency + reward loss."""
        horizon = act.shape[0]
        obs_n = self.normalize_obs(obs)
        rew_s = self.scale_reward(rew)
        with torch.no_grad():
            targets = self.world_model.encode(obs_n[1:])
        z = self.world_model.encode(obs_n[0])
        consistency = z.new_zeros(())
        reward = z.new_zeros(())
        for t in range(horizon):
            z, head = self.world_model.step_head(z, act[t])
            w = self.cfg.rho ** t
            consistency = consistency + w * F.mse_loss(z, targets[t])
            reward = reward + w * self.world_model.reward_loss(head, rew_s[t])
        loss = (self.cfg.consistency_coef * consistency + self.cfg.reward_coef * reward) / horizon
        return loss, {"wm/consistency": consistency.item() / horizon, "wm/reward": reward.item() / horizon}

    def update_world_model(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor,
                           statistics: bool = True) -> dict[str, float]:
        """One update. `statistics` is for the upstream agent's signature: this variant updates its
        statistics on env steps, never from world-model batches."""
        loss, info = self.world_model_loss(obs, act, rew)
        self.world_model_opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = nn.utils.clip_grad_norm_(self.world_model.parameters(), self.cfg.wm_grad_clip)
        self.world_model_opt.step()
        return {"wm/loss": loss.item(), "wm/grad_norm": float(grad), **info}

    # ---- actor --------------------------------------------------------------------------
    def actor_loss(self, obs0: torch.Tensor) -> tuple[torch.Tensor, Imagination, dict[str, float]]:
        """-(sum_t gamma^t r_t + gamma^H min V(z_H)) / std(return), through the world model."""
        cfg = self.cfg
        with torch.no_grad():
            z = self.encode(obs0)
        latents, rewards = [z], []
        ret = z.new_zeros(z.shape[0])
        for t in range(cfg.horizon):
            # detach: the actor sees the latent as a constant; the gradient still reaches it
            # through the actions it took and the dynamics
            a = self.actor(z.detach() if cfg.detach else z)
            z, r = self.world_model.step(z, a)
            r = r.squeeze(-1)
            ret = ret + cfg.gamma ** t * r
            latents.append(z)
            rewards.append(r)
        terminal = self.target_critic.min_value(z).squeeze(-1)
        ret = ret + cfg.gamma ** cfg.horizon * terminal
        if cfg.ret_rms:
            self.ret_rms.update(ret)
            loss = -ret.mean() / self.ret_rms.std.to(ret.dtype)
        else:  # upstream's scale without ret_rms: the H-step return per step
            loss = -ret.mean() / cfg.horizon
        imagination = Imagination(torch.stack(latents).detach(), torch.stack(rewards).detach())
        return loss, imagination, {"actor/return": ret.mean().item(),
                                   "actor/std": self.actor.std().mean().item()}

    def update_actor(self, obs0: torch.Tensor) -> tuple[dict[str, float], Imagination]:
        # Only the actor learns here: freezing the rest saves their weight gradients, and stops
        # the actor's objective from leaking into the world model and critic.
        self.world_model.requires_grad_(False)
        try:
            loss, imagination, info = self.actor_loss(obs0)
            self.actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            grad = nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.actor_grad_clip)
            self.actor_opt.step()
        finally:
            self.world_model.requires_grad_(True)
        return {"actor/loss": loss.item(), "actor/grad_norm": float(grad), **info}, imagination

    # ---- critic -------------------------------------------------------------------------
    @torch.no_grad()
    def critic_targets(self, imagination: Imagination) -> torch.Tensor:
        values = self.target_critic.min_value(imagination.latents).squeeze(-1)
        lam = 0.0 if self.cfg.critic_method == "one-step" else self.cfg.lam  # lambda 0 is one-step TD
        return lambda_returns(imagination.rewards, values, self.cfg.gamma, lam)

    def critic_loss(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE of every ensemble head against the same target, averaged over heads."""
        return (self.critic(z).squeeze(-1) - target).pow(2).mean()

    def update_critic(self, imagination: Imagination) -> dict[str, float]:
        cfg = self.cfg
        targets = self.critic_targets(imagination).reshape(-1)
        latents = imagination.latents[:-1].reshape(targets.shape[0], -1)
        n = targets.shape[0]
        batch = max(1, n // cfg.critic_batches)
        losses = []
        for _ in range(cfg.critic_iterations):
            perm = torch.randperm(n, device=latents.device)
            for b in range(cfg.critic_batches):
                idx = perm[b * batch:(b + 1) * batch]
                loss = self.critic_loss(latents[idx], targets[idx])
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.critic_grad_clip)
                self.critic_opt.step()
                losses.append(loss.item())
        with torch.no_grad():
            alpha = cfg.target_critic_alpha
            for tp, p in zip(self.target_critic.parameters(), self.critic.parameters()):
                tp.mul_(alpha).add_(p, alpha=1.0 - alpha)
        return {"critic/loss": sum(losses) / len(losses), "critic/target": targets.mean().item()}

    # ---- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "world_model": self.world_model.state_dict(),
            "obs_rms": self.obs_rms.state_dict(),
            "rew_rms": self.rew_rms.state_dict(),
            "ret_rms": self.ret_rms.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "world_model_opt": self.world_model_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state.get("target_critic", state["critic"]))
        self.world_model.load_state_dict(state["world_model"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.rew_rms.load_state_dict(state["rew_rms"])
        self.ret_rms.load_state_dict(state["ret_rms"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.world_model_opt.load_state_dict(state["world_model_opt"])
