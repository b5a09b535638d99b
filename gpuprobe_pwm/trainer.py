"""The PWM training loop: collect with the actor, world model update, actor update, critic update, eval.

One epoch = `steps_per_epoch` env steps with every env, then (once the buffer holds complete
episodes) `wm_iterations` world-model updates, one actor update through the world model and the
critic's TD(lambda) fit on that imagined rollout. The iteration count is the number of finished
epochs; it is what checkpoints store and what resuming continues.
"""
from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from gpuprobe_pwm.agent import AgentConfig, PWMAgent
from gpuprobe_pwm.checkpoint import (
    BEST,
    FINAL,
    INIT,
    LATEST,
    CheckpointSet,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from gpuprobe_pwm.runs import MetricsLog, update_run_json

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """The one place that seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainSettings:
    """Everything the loop needs, resolved (absolute paths, concrete numbers) by gpuprobe_pwm.train."""

    alg_name: str
    env_name: str
    run_dir: Path
    seed: int = 42
    device: str = "cpu"
    num_envs: int = 64
    episode_length: int | None = None
    stochastic_init: bool = False  # training envs only; evaluation always starts from the nominal state
    epochs: int = 15000
    steps_per_epoch: int = 16
    buffer_size: int = 1_000_000
    buffer_options: dict[str, Any] = field(default_factory=dict)
    wm_warmup_iterations: int = 0
    save_interval: int = 500
    eval_interval: int = 0
    eval_episodes: int = 16
    target_return: float | None = None  # stop early once an evaluation reaches it
    time_limit_s: float | None = None   # finish (final checkpoints, eval) once this much wall time passed
    checkpoint: Path | None = None
    checkpoint_buffer: bool = True  # latest_checkpoint.pt carries the replay buffer's episodes
    load_buffer: bool = True        # resuming restores that buffer (upstream's general.checkpoint_with_buffer)
    train: bool = True              # false: evaluate the checkpoint and stop (upstream's general.train)
    pretrain: tuple[Path, ...] = ()  # replay files to pretrain the world model on (gpuprobe_pwm/pretrain.py)
    pretrain_steps: int = 50_000
    agent: AgentConfig = field(default_factory=AgentConfig)
    config: dict[str, Any] = field(default_factory=dict)  # resolved config, stored in checkpoints


class Preempted(Exception):
    """SIGTERM arrived; latest_checkpoint.pt has been written."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class StopFlag:
    """Turns SIGTERM (SLURM pre-emption, scancel) into a flag the loop checks between steps, so the
    checkpoint is taken at a consistent point rather than inside an optimiser step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: Any = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("signal %d received: saving latest checkpoint and stopping", signum)
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Preempted(self.signum)


class EpisodeCollector:
    """Keeps each env's running episode and pushes complete ones to the Buffer.

    Histories are [T+1, N, .] tensors indexed by each env's own step counter, so envs that end
    early (termination) are pushed on their own, grouped by episode length.
    """

    def __init__(self, env: Any, buffer: Any, agent: PWMAgent, min_length: int,
                 update_normalizers: bool = True) -> None:
        self.env, self.buffer, self.agent = env, buffer, agent
        # The bundled variant updates its obs/reward statistics on every env step; upstream's
        # updates them from world-model batches instead (agent_upstream.py).
        self.update_normalizers = update_normalizers
        n, t_max, dev = env.num_envs, env.episode_length, env.device
        self.obs = torch.zeros(t_max + 1, n, env.num_obs, device=dev)
        self.act = torch.zeros(t_max, n, env.num_acts, device=dev)
        self.rew = torch.zeros(t_max, n, device=dev)
        self.t = torch.zeros(n, dtype=torch.long, device=dev)
        self.ret = torch.zeros(n, device=dev)
        self.envs = torch.arange(n, device=dev)
        self.min_length = min_length
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episodes = 0
        self.skipped_short = 0
        self.current = env.reset()
        self.obs[0] = self.current

    def step(self, stochastic: bool = True) -> None:
        obs = self.current
        if self.update_normalizers:
            self.agent.obs_rms.update(obs)
        action = self.agent.act(obs, deterministic=not stochastic)
        nxt, rew, done, info = self.env.step(action)
        self.record(action, nxt, rew, done, info)

    def record(self, action: torch.Tensor, nxt: torch.Tensor, rew: torch.Tensor, done: torch.Tensor,
               info: dict[str, Any]) -> None:
        """Book one env step taken by someone else (upstream's actor rollout steps the env itself)."""
        if self.update_normalizers:
            self.agent.rew_rms.update(rew)
        action = action.detach()
        self.act[self.t, self.envs] = action
        self.rew[self.t, self.envs] = rew
        self.ret += rew
        self.t += 1
        final_obs = info.get("obs_before_reset", nxt) if done.any() else nxt
        self.obs[self.t.clamp(max=self.obs.shape[0] - 1), self.envs] = torch.where(done[:, None], final_obs, nxt)
        if done.any():
            self._push(done.nonzero().squeeze(-1))
            self.obs[0, done] = nxt[done]
        self.current = nxt

    def _push(self, finished: torch.Tensor) -> None:
        lengths = self.t[finished]
        for length in lengths.unique().tolist():
            idx = finished[lengths == length]
            if length >= self.min_length:
                self.buffer.add(self.obs[:length + 1, idx].clone(), self.act[:length, idx].clone(),
                                self.rew[:length, idx].clone())
            else:
                # Too short to cut a horizon-H sequence from; counted so the loss is visible.
                self.skipped_short += len(idx)
        self.episode_returns.extend(self.ret[finished].tolist())
        self.episodes += len(finished)
        self.ret[finished] = 0.0
        self.t[finished] = 0

    def mean_return(self) -> float | None:
        return sum(self.episode_returns) / len(self.episode_returns) if self.episode_returns else None


@torch.no_grad()
def evaluate(agent: PWMAgent, env: Any) -> dict[str, float]:
    """One deterministic episode per env. Also checks the world model's one-step reward prediction
    against the env, through WorldModel.step's (latent, reward) pair."""
    obs = env.reset()
    n = env.num_envs
    returns = torch.zeros(n, device=env.device)
    alive = torch.ones(n, dtype=torch.bool, device=env.device)
    abs_err = torch.zeros((), device=env.device)
    steps = 0
    for _ in range(env.episode_length):
        z = agent.encode(obs)
        action = agent.actor(z, deterministic=True)
        _z_next, r_pred = agent.world_model.step(z, action)
        obs, rew, done, _info = env.step(action)
        abs_err += ((r_pred.squeeze(-1) - agent.scale_reward(rew)).abs() * alive).sum()
        steps += int(alive.sum())
        returns += rew * alive
        alive &= ~done
        if not alive.any():
            break
    return {"eval/return": returns.mean().item(), "eval/return_std": returns.std().item() if n > 1 else 0.0,
            "eval/wm_reward_mae": abs_err.item() / max(steps, 1)}


class Trainer:
    """The bundled variant's loop; UpstreamTrainer (trainer_upstream.py) swaps in upstream's epoch."""

    agent_class: type[PWMAgent] = PWMAgent
    step_statistics = True  # obs/reward normalisers updated on every env step (bundled)

    def __init__(self, settings: TrainSettings, env: Any, eval_env: Any, buffer: Any,
                 metrics: MetricsLog, stop: StopFlag | None = None, wandb_run: Any = None) -> None:
        self.s, self.env, self.eval_env, self.buffer = settings, env, eval_env, buffer
        self.metrics, self.stop, self.wandb_run = metrics, stop or StopFlag(), wandb_run
        self.agent = self.agent_class(env.num_obs, env.num_acts, settings.agent, settings.device)
        log.info("parameters: %s", self.agent.param_counts.summary())
        self.checkpoints = CheckpointSet(settings.run_dir)
        self.collector = EpisodeCollector(env, buffer, self.agent, min_length=settings.agent.horizon,
                                          update_normalizers=self.step_statistics)
        self.iteration = 0
        self.env_steps = 0
        self.best_return = -math.inf
        self.warmed_up = False
        self.pretrain_done: int | None = None  # world-model pretraining updates done; None: none begun
        self.started = time.monotonic()
        self.reached_target = False

    # ---- checkpoints --------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {**self.agent.state_dict(), "iteration": self.iteration, "env_steps": self.env_steps,
                "best_return": self.best_return, "warmed_up": self.warmed_up,
                **({"pretrain_done": self.pretrain_done} if self.pretrain_done is not None else {}),
                "rng": rng_state(), "config": self.s.config,
                "param_counts": vars(self.agent.param_counts)}

    def latest_state(self) -> dict[str, Any]:
        """What latest_checkpoint.pt holds: the models and, unless switched off, the replay buffer,
        so that a resumed (or pre-empted) run trains its world model on the data it had."""
        state = self.checkpoint_state()
        if self.s.checkpoint_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def resume(self, path: Path) -> None:
        from gpuprobe_pwm.upstream import is_upstream_checkpoint

        if is_upstream_checkpoint(path):  # written by upstream's PWM.save: its networks, a fresh loop
            from gpuprobe_pwm.trainer_upstream import start_from_upstream_file

            start_from_upstream_file(self, path)
            return
        state = load_checkpoint(path, self.s.device)
        self.agent.load_state_dict(state)
        self.iteration = int(state["iteration"])
        self.env_steps = int(state.get("env_steps", 0))
        self.best_return = float(state.get("best_return", -math.inf))
        set_rng_state(state["rng"])
        # The world model is trained already: the warm-up is for a fresh one, not a fresh buffer.
        self.warmed_up = bool(state.get("warmed_up", self.iteration > 0))
        self.pretrain_done = state.get("pretrain_done")
        if state.get("buffer") is not None and self.s.load_buffer:
            self.buffer.load_state_dict(state["buffer"])
            log.info("resumed from %s at iteration %d with %d buffer rows (%d episodes)",
                     path, self.iteration, len(self.buffer), self.buffer.num_episodes)
        else:  # written with general.save_buffer=false, or checkpoint_with_buffer=false: refills from fresh episodes
            log.info("resumed from %s at iteration %d, empty buffer", path, self.iteration)

    def pretrain(self, resumed: bool) -> None:
        """general.pretrain (gpuprobe_pwm/pretrain.py) before the first epoch of a fresh run, or the
        rest of a pretraining that a SIGTERM cut short."""
        from gpuprobe_pwm import pretrain as pt

        steps = self.s.pretrain_steps
        if resumed and self.pretrain_done is None:
            # As upstream given general.checkpoint too: the data joins an empty buffer, and the
            # checkpoint's world model is not pretrained again.
            if len(self.buffer) == 0:
                self.buffer.load_state_dict(pt.read_replay(self.s.pretrain, self.env.num_obs, self.env.num_acts).state)
            log.info("general.pretrain: resumed from a checkpoint that was not pretraining: its world model is "
                     "kept, the buffer holds %d rows", len(self.buffer))
            return
        if self.pretrain_done is not None and self.pretrain_done >= steps:
            return
        if len(self.buffer) == 0:  # a fresh run, or a checkpoint saved without its buffer
            data = pt.read_replay(self.s.pretrain, self.env.num_obs, self.env.num_acts)
            self.buffer.load_state_dict(data.state)
            if self.pretrain_done is None:  # a resumed run's statistics are in its checkpoint already
                pt.update_statistics(self.agent, data)
            log.info("pretraining data: %d episodes, %d env steps from %s", data.episodes, data.env_steps,
                     ", ".join(data.files))
        t0 = time.monotonic()

        def progress(n: int) -> None:
            self.pretrain_done = n

        _, last_loss = pt.pretrain_world_model(self.agent, self.buffer, steps, self.pretrain_done or 0,
                                               self.stop.check, progress)
        self.warmed_up = True  # upstream's wm_bootstrapped: no warm-up after pretraining
        update_run_json(self.s.run_dir, pretrain={
            "files": [str(p) for p in self.s.pretrain], "rows": len(self.buffer),
            "episodes": self.buffer.num_episodes, "steps": steps,
            "seconds": round(time.monotonic() - t0, 1), "last_loss": last_loss})

    # ---- one epoch ----------------------------------------------------------------------
    def collect(self) -> None:
        # As upstream each epoch: keep the envs' states, cut any autograd graph behind them (DiffRL's
        # reset(grads=True)), so that nothing from earlier epochs stays reachable from the new data.
        self.collector.current = self.env.reset(grads=True)
        for _ in range(self.s.steps_per_epoch):
            self.collector.step()
            self.env_steps += self.env.num_envs
            self.stop.check()

    def update(self) -> dict[str, float]:
        cfg, info = self.s.agent, {}
        if len(self.buffer) == 0:
            return info
        iterations = cfg.wm_iterations
        if not self.warmed_up:
            iterations += self.s.wm_warmup_iterations
            self.warmed_up = True
        wm_stats: list[dict[str, float]] = []
        t0 = time.perf_counter()
        for _ in range(iterations):
            obs, act, rew = self.buffer.sample()
            wm_stats.append(self.agent.update_world_model(obs, act, rew))
        info["time/wm"] = time.perf_counter() - t0
        info.update({k: sum(s[k] for s in wm_stats) / len(wm_stats) for k in wm_stats[0]})
        self.stop.check()
        t0 = time.perf_counter()
        obs, _act, _rew = self.buffer.sample(cfg.actor_batch_size)
        actor_info, imagination = self.agent.update_actor(obs[0])
        info["time/actor"] = time.perf_counter() - t0
        self.stop.check()
        t0 = time.perf_counter()
        info.update(actor_info)
        info.update(self.agent.update_critic(imagination))
        info["time/critic"] = time.perf_counter() - t0
        return info

    def run_epoch(self) -> dict[str, Any]:
        """The variant's own epoch: here, collect with the acting policy, then update from the buffer."""
        t0 = time.perf_counter()
        self.collect()
        return {"time/collect": time.perf_counter() - t0, **self.update()}

    def epoch(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        record: dict[str, Any] = self.agent.set_progress(self.iteration / max(self.s.epochs, 1))
        record.update(self.run_epoch())
        self.iteration += 1
        mean_return = self.collector.mean_return()
        record.update({"iteration": self.iteration, "env_steps": self.env_steps,
                       "episodes": self.collector.episodes, "buffer_size": len(self.buffer),
                       "train/return": mean_return, "time/epoch": time.perf_counter() - t0,
                       # resident memory after the epoch: flat once the buffer is allocated, unless a
                       # graph (e.g. through the simulator) is kept alive from one epoch to the next
                       "mem/rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
                       "time/elapsed": time.monotonic() - self.started})
        # "Best" as upstream: lowest policy loss = highest mean return over the last 100 episodes.
        if mean_return is not None and mean_return > self.best_return:
            self.best_return = mean_return
            self.checkpoints.save(BEST, self.checkpoint_state())
        if self.s.eval_interval and self.iteration % self.s.eval_interval == 0:
            record.update(evaluate(self.agent, self.eval_env))
            target = self.s.target_return
            self.reached_target = target is not None and record["eval/return"] >= target
        if self.s.save_interval and self.iteration % self.s.save_interval == 0:
            self.checkpoints.save(LATEST, self.latest_state())
        return record

    def log_record(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if v is not None}, step=self.iteration)
        if self.iteration % 10 == 0 or self.iteration == 1:
            log.info("iter %d steps %d return %s wm %.4g actor %.4g critic %.4g (%.2fs)", self.iteration,
                     self.env_steps, record.get("train/return"), record.get("wm/loss", float("nan")),
                     record.get("actor/loss", float("nan")), record.get("critic/loss", float("nan")),
                     record["time/epoch"])

    def out_of_time(self) -> bool:
        limit = self.s.time_limit_s
        if limit is not None and time.monotonic() - self.started >= limit:
            log.info("time limit of %.0f s reached at iteration %d", limit, self.iteration)
            return True
        return False

    # ---- the run ------------------------------------------------------------------------
    def evaluate_only(self) -> dict[str, Any]:
        """general.train=false: evaluate the loaded checkpoint (upstream's eval after no training)."""
        final = {"iteration": self.iteration, "env_steps": self.env_steps, **evaluate(self.agent, self.eval_env)}
        self.metrics.write({**final, "final": True, "evaluation_only": True})
        log.info("evaluated %s: %s", self.s.checkpoint, final)
        return final

    def train(self) -> dict[str, Any]:
        """Run to `epochs`; raises Preempted after saving latest_checkpoint.pt on SIGTERM."""
        if not self.s.train:
            self.resume(self.s.checkpoint)
            return self.evaluate_only()
        if self.s.checkpoint is not None:
            self.resume(self.s.checkpoint)
        else:
            self.checkpoints.save(INIT, self.checkpoint_state())
        try:
            if self.s.pretrain:
                self.pretrain(resumed=self.s.checkpoint is not None)
            while self.iteration < self.s.epochs and not self.reached_target and not self.out_of_time():
                self.log_record(self.epoch())
                self.stop.check()
            if self.reached_target:
                log.info("eval return reached general.target_return=%s at iteration %d",
                         self.s.target_return, self.iteration)
        except Preempted:
            self.checkpoints.save(LATEST, self.latest_state())
            raise
        if not (self.s.save_interval and self.iteration % self.s.save_interval == 0):
            self.checkpoints.save(LATEST, self.latest_state())  # not already saved this epoch
        self.checkpoints.save(FINAL, self.checkpoint_state())
        self.checkpoints.save_buffer(self.buffer)
        final = {"iteration": self.iteration, "env_steps": self.env_steps,
                 "time/elapsed": time.monotonic() - self.started,
                 "train/return": self.collector.mean_return(), "best_return": self.best_return,
                 **evaluate(self.agent, self.eval_env)}
        self.metrics.write({**final, "final": True})
        log.info("finished: %s", final)
        return final


def make_trainer(settings: TrainSettings, env: Any, eval_env: Any, buffer: Any, metrics: MetricsLog,
                 stop: StopFlag | None = None, wandb_run: Any = None) -> Trainer:
    """The loop of settings.agent.variant: upstream's algorithm, or this trainer's bundled one."""
    if settings.agent.variant == "upstream":
        from gpuprobe_pwm.trainer_upstream import UpstreamTrainer

        return UpstreamTrainer(settings, env, eval_env, buffer, metrics, stop, wandb_run)
    return Trainer(settings, env, eval_env, buffer, metrics, stop, wandb_run)
