"""Upstream PWM's epoch (algorithms/pwm.py `train`), inside this trainer's loop (checkpoints, SIGTERM,
resume, eval, run directory and metrics are Trainer's).

One epoch, as upstream:
- while the Buffer holds no complete episode: one H-step actor rollout without gradients, stepping
  the env (data collection only; the epoch counts, as upstream's `continue` does);
- then: the actor's rollout in lockstep with the env (its steps are the data), one actor step; the
  critic's TD(lambda) fit on that rollout (sequential minibatches); then the world model: the first
  time env.episode_length iterations (upstream's warm-up, 1000 on Ant and Hopper), after that
  wm_iterations.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gpuprobe_pwm.agent_upstream import UpstreamAgent
from gpuprobe_pwm.trainer import Trainer

log = logging.getLogger(__name__)


def warmup_iterations(episode_length: int, wm_iterations: int, warmed_up: bool) -> int:
    """World-model iterations this epoch: upstream trains env.episode_length of them the first time
    (unless a checkpoint was loaded), wm_iterations after that."""
    return wm_iterations if warmed_up else int(episode_length)


class UpstreamTrainer(Trainer):
    agent_class = UpstreamAgent  # same networks and state layout as the bundled agent
    step_statistics = False      # upstream updates obs_rms/rew_rms from world-model batches

    def run_epoch(self) -> dict[str, Any]:
        if self.buffer.num_episodes == 0:
            t0 = time.perf_counter()
            with torch.no_grad():
                self.agent.rollout(self.env, self.collector)
            self.env_steps += self.s.agent.horizon * self.env.num_envs
            self.stop.check()
            return {"time/collect": time.perf_counter() - t0}
        return self.update()

    def update(self) -> dict[str, float]:
        """Actor (whose rollout collects H env steps), critic, world model: upstream's order."""
        cfg, info = self.s.agent, {}
        t0 = time.perf_counter()
        actor_info, data = self.agent.update_actor_in_env(self.env, self.collector)
        self.env_steps += cfg.horizon * self.env.num_envs
        info["time/actor"] = time.perf_counter() - t0
        info.update(actor_info)
        self.stop.check()
        t0 = time.perf_counter()
        info.update(self.agent.update_critic_on(data))
        info["time/critic"] = time.perf_counter() - t0
        self.stop.check()
        iterations = warmup_iterations(self.env.episode_length, cfg.wm_iterations, self.warmed_up)
        if not self.warmed_up:
            log.info("world-model warm-up: %d iterations (env.episode_length), as upstream", iterations)
        t0 = time.perf_counter()
        wm_stats = []
        for i in range(iterations):
            obs, act, rew = self.buffer.sample()
            wm_stats.append(self.agent.update_world_model(obs, act, rew))
            if iterations > cfg.wm_iterations and (i + 1) % 100 == 0:
                # the warm-up takes minutes on a CPU (1000 iterations at 5M): show that it moves
                log.info("world-model warm-up %d/%d, loss %.4g", i + 1, iterations, wm_stats[-1]["wm/loss"])
                self.stop.check()
        self.warmed_up = True  # only once complete: a warm-up cut short by SIGTERM runs again on resume
        info["time/wm"] = time.perf_counter() - t0
        info["wm/iterations"] = iterations
        info.update({k: sum(s[k] for s in wm_stats) / len(wm_stats) for k in wm_stats[0]})
        return info


def start_from_upstream_file(trainer: Trainer, path: Path) -> None:
    """general.checkpoint=<a file upstream's PWM.save wrote>: its networks, normalisers and Adam
    states into this trainer's agent, as upstream's PWM.load does (the file decides which normalisers
    exist; the world model counts as trained, so no warm-up). The iteration count starts at 0.
    Raises CheckpointError (one line) when the file does not fit the configured alg."""
    from gpuprobe_pwm.safe_load import CheckpointError
    from gpuprobe_pwm.upstream import load_upstream_checkpoint

    agent = trainer.agent
    if not isinstance(agent, UpstreamAgent):
        raise CheckpointError(f"{path} was written by upstream PWM: load it with an upstream alg (alg=pwm*), "
                              "whose networks have upstream's layout")
    state = load_upstream_checkpoint(path, trainer.s.device).trainer_state()
    try:
        agent.actor.load_state_dict(state["actor"])
        agent.critic.load_state_dict(state["critic"])
        agent.world_model.load_state_dict(state["world_model"])
        for key, opt in (("actor_opt", agent.actor_opt), ("critic_opt", agent.critic_opt),
                         ("world_model_opt", agent.world_model_opt)):
            if state.get(key) is not None:
                opt.load_state_dict(state[key])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"upstream checkpoint {path} does not fit alg={trainer.s.alg_name}: {first}") from None
    for name in ("obs_rms", "rew_rms", "ret_rms"):
        if state[name] is not None:
            getattr(agent, name).load_state_dict(state[name])
    agent.cfg = replace(agent.cfg, **{name: state[name] is not None for name in ("obs_rms", "rew_rms", "ret_rms")})
    trainer.warmed_up = True
    log.info("started from upstream checkpoint %s (obs_rms %s, rew_rms %s, ret_rms %s)", path,
             agent.cfg.obs_rms, agent.cfg.rew_rms, agent.cfg.ret_rms)
