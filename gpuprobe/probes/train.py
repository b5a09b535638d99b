"""Stage ``train``: one PWM iteration of the chosen alg, and optionally the real loop's first epoch.

Iteration (always): the update of the alg's own variant, with the trainer's own code.
``alg.variant: upstream`` (``pwm*``, the default) runs ``UpstreamAgent`` in UpstreamTrainer's order;
``bundled`` (``bundled_*``) runs ``PWMAgent`` in Trainer's order:
  ``env``            (upstream) the env its actor update steps, built as the first epoch's
  ``build``          the agent (world model, actor, critic, optimisers) on the device
  ``sample``         a small ``gpuprobe_pwm.buffer.Buffer`` filled with random episodes, ready to sample
  upstream: ``actor_update`` (its H-step rollout stepping the real env in lockstep, one actor step),
            ``critic_update`` (TD(lambda) on that rollout), ``wm_update`` (one world-model update)
  bundled:  ``wm_update``, ``actor_update`` (through the world model from buffer samples), ``critic_update``
Each update timed (marks before each). Recorded: seconds per update, the variant, the update order,
parameter counts, peak memory (``torch.cuda.max_memory_allocated`` on CUDA; the process's RSS
high-water from ``getrusage`` on the CPU, interpreter included); upstream also the env and its steps.

First epoch (``--set train.first_epoch=true`` / ``--train-epoch``): the loop as ``gpuprobe_pwm.train`` wires
it (env, full-size Buffer, the variant's Trainer), so "no output for minutes" gets a number:
  ``epoch.collect``  progress done/total env steps of the first episode, collected as the variant's
                     loop does (upstream: H-step rollouts without gradients; bundled: the collector's step)
  ``epoch.first_episode``  the first episode completed (step count, seconds)
  ``epoch.buffer.<event>``  the Buffer's own events from its first add: mem_get_info,
                     storage_decision, alloc, fill (``epoch.buffer.fill`` is the first buffer add)
  ``epoch.update``   the Trainer's ``update()`` (the variant's order; upstream's first one includes its
                     world-model warm-up); its samples show as ``epoch.buffer.first_sample`` / ``epoch.buffer.sample``,
                     then as done/total ``epoch.update.samples``

Options (``--set train.KEY=VALUE``): ``alg`` (an alg config's name: pwm*, bundled_*; wins over
``model_size``), ``model_size`` 5M | 19M | 48M | 317M | tiny [--model-size] (upstream's configs),
``obs_dim`` 37, ``act_dim`` 8 (Ant; the bundled iteration, which needs no env), ``iterations`` (1),
``first_epoch`` [--train-epoch], ``env`` (dflex_ant when dflex is installed, else cartpole_swingup),
``num_envs``, ``episode_length``, ``buffer_size``, ``storage``/``pin_memory``/``prefetch``/``free_memory_gb``
as the buffer stage.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import gpuprobe_pwm
from gpuprobe.child.stage import StageContext

CONFIG_DIR = Path(gpuprobe_pwm.__file__).resolve().parent / "config"  # the trainer's own configs
# --model-size: upstream's configs (the default variant); --set train.alg=NAME names any alg config
MODEL_SIZES = {"5M": "pwm_5M", "19M": "pwm_19M", "48M": "pwm_48M", "317M": "pwm_317M", "tiny": "pwm_tiny"}


def alg_config(size: str) -> dict:
    """The alg yaml as Hydra would compose it (a ``defaults`` base first, then this file)."""
    name = MODEL_SIZES.get(str(size), str(size))
    path = CONFIG_DIR / "alg" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "alg").glob("*.yaml"))
        raise ValueError(f"unknown model size or alg {size!r}; sizes: {', '.join(MODEL_SIZES)}; "
                         f"algs: {', '.join(known)}")
    raw = yaml.safe_load(path.read_text()) or {}
    merged: dict = {}
    for base in raw.pop("defaults", []) or []:
        if isinstance(base, str) and base != "_self_":
            merged = _merge(merged, alg_config(base))
    return _merge(merged, raw)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def agent_config(alg: dict) -> Any:
    from gpuprobe_pwm.settings import agent_config as from_alg

    return from_alg(alg)


class Memory:
    """Peak memory of the stage: CUDA allocator peak, or the process's RSS high-water."""

    def __init__(self, torch: Any, device: str):
        self.torch, self.device = torch, device
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)

    def peak(self) -> dict:
        if self.device.startswith("cuda"):
            return {"peak_bytes": int(self.torch.cuda.max_memory_allocated(self.device)),
                    "source": "torch.cuda.max_memory_allocated"}
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return {"peak_bytes": int(kib) * 1024, "source": "getrusage ru_maxrss (process RSS high-water, "
                                                         "interpreter and torch included)"}


def buffer_kwargs(o: dict) -> dict:
    out = {k: o[k] for k in ("storage", "pin_memory", "prefetch") if k in o}
    if o.get("free_memory_gb") is not None:
        out["free_memory_bytes"] = int(float(o["free_memory_gb"]) * 1e9)
    return out


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


FALLBACK_ENV = "cartpole_swingup"  # bundled, torch only: runs wherever the stage runs


def iteration_env(o: dict, name: str | None = None) -> tuple[str, Any]:
    """The env the stage runs (``name``, else option ``env``; dflex_ant when dflex is installed, else
    the bundled cart-pole) and its config's settings (upstream's constructor arguments for dflex)."""
    from gpuprobe_pwm.envs import dflex_status
    from gpuprobe_pwm.settings import env_settings

    env_name = str(name or o.get("env") or ("dflex_ant" if dflex_status()[0] else FALLBACK_ENV))
    env_yaml = CONFIG_DIR / "env" / f"{env_name}.yaml"
    return env_name, env_settings(yaml.safe_load(env_yaml.read_text()) if env_yaml.is_file() else {"name": env_name})


def make_stage_env(ctx: StageContext, torch: Any, device: str, name: str | None = None,
                   mark: str | None = None) -> tuple[Any, float, dict | None]:
    """(env, seconds to build it, the fallback taken or None) for ``iteration_env``'s choice, with
    options ``num_envs``/``episode_length`` over its config; ``mark`` goes out before each build."""
    from gpuprobe_pwm.envs import EnvUnavailable, make_env

    o = ctx.options
    env_name, env_cfg = iteration_env(o, name)
    fallback = None
    while True:
        num_envs = int(o.get("num_envs", env_cfg.num_envs))
        length = o.get("episode_length", env_cfg.episode_length)
        if mark:  # its own mark: importing dflex and building its env can stall apart from the rest
            ctx.mark(mark, env=env_name, num_envs=num_envs, episode_length=length,
                     **({"fallback_from": fallback["env"]} if fallback else {}))
        try:
            env, env_s = _timed(torch, device, lambda: make_env(
                env_name, num_envs, device, 0, None if length is None else int(length), options=env_cfg.options))
            return env, env_s, fallback
        except EnvUnavailable as exc:
            if name or o.get("env") or env_name == FALLBACK_ENV:
                raise  # an env asked for by name: its failure is the answer
            # dflex installed but unusable (a kernel build nvcc refuses, NumPy 2, ...): the sim stage
            # reports that; this stage times the trainer on the bundled env, and says so in its data
            fallback = {"env": env_name, "reason": str(exc)}
            ctx.log(f"{env_name} unavailable, running {FALLBACK_ENV} instead: {exc}", level="warning")
            env_name, env_cfg = iteration_env(o, FALLBACK_ENV)


def random_episode_buffer(torch: Any, device: str, cfg: Any, obs_dim: int, act_dim: int, spare_rows: int = 0) -> Any:
    """A small Buffer of random episodes: the world-model update sees batches shaped exactly as in
    training. ``spare_rows``: room for what an env-stepping update books into it besides."""
    from gpuprobe_pwm.buffer import Buffer

    steps = max(cfg.horizon + 1, 64)
    buf = Buffer(max(4 * (steps + 1), 1024) + spare_rows, obs_dim, act_dim, horizon=cfg.horizon,
                 batch_size=cfg.wm_batch_size, device=device, storage="cpu" if device == "cpu" else "auto", seed=0)
    buf.add(torch.randn(steps + 1, 4, obs_dim), torch.rand(steps, 4, act_dim) * 2 - 1, torch.randn(steps, 4))
    return buf


def _timed(torch: Any, device: str, fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.monotonic()
    out = fn(*args)
    _sync(torch, device)  # CUDA runs asynchronously: without it the time would be the launch's
    return out, round(time.monotonic() - t, 4)


def bundled_iteration(ctx: StageContext, torch: Any, device: str, cfg: Any) -> dict:
    """The bundled variant's update (gpuprobe_pwm.agent.PWMAgent, Trainer.update's order): world
    model from the Buffer, then the actor through the world model from buffer samples, then the
    critic on that imagined rollout. No env: obs_dim/act_dim (Ant's by default) size the networks."""
    from gpuprobe_pwm.agent import PWMAgent

    o = ctx.options
    obs_dim, act_dim = int(o.get("obs_dim", 37)), int(o.get("act_dim", 8))
    ctx.mark("build", variant="bundled", obs_dim=obs_dim, act_dim=act_dim)
    agent, build_s = _timed(torch, device, PWMAgent, obs_dim, act_dim, cfg, device)
    buf = random_episode_buffer(torch, device, cfg, obs_dim, act_dim)
    ctx.mark("sample", batch_size=cfg.wm_batch_size, horizon=cfg.horizon)
    rows = []
    try:
        for i in range(int(o.get("iterations", 1))):
            obs, act, rew = buf.sample()
            row: dict = {}
            ctx.mark("wm_update", iteration=i)
            row["wm"], row["wm_update_s"] = _timed(torch, device, agent.update_world_model, obs, act, rew)
            ctx.mark("actor_update", iteration=i, rollout="world model, from buffer samples")
            (row["actor"], imagination), row["actor_update_s"] = _timed(
                torch, device, lambda: agent.update_actor(buf.sample(cfg.actor_batch_size)[0][0]))
            ctx.mark("critic_update", iteration=i)
            row["critic"], row["critic_update_s"] = _timed(torch, device, agent.update_critic, imagination)
            rows.append(row)
    finally:
        buf.close()
    return {"agent": agent, "build_s": build_s, "rows": rows, "obs_dim": obs_dim, "act_dim": act_dim,
            "actor_batch": cfg.actor_batch_size, "update_order": ["wm", "actor", "critic"]}


def upstream_iteration(ctx: StageContext, torch: Any, device: str, cfg: Any) -> dict:
    """Upstream's update (gpuprobe_pwm.agent_upstream.UpstreamAgent, UpstreamTrainer.update's order):
    the actor's H-step rollout from the live env states, stepping the real env in lockstep (those
    steps are booked as collected data), one actor step; the critic's TD(lambda) fit on that
    rollout; then one world-model update from the Buffer. The env's sizes size the networks."""
    from gpuprobe_pwm.agent_upstream import UpstreamAgent
    from gpuprobe_pwm.trainer import EpisodeCollector

    o = ctx.options
    env, env_s, fallback = make_stage_env(ctx, torch, device, mark="env")
    env_name, num_envs = env.name, env.num_envs
    ctx.mark("build", variant="upstream", obs_dim=env.num_obs, act_dim=env.num_acts)
    agent, build_s = _timed(torch, device, UpstreamAgent, env.num_obs, env.num_acts, cfg, device)
    iterations = int(o.get("iterations", 1))
    # an env that finishes inside a rollout pushes its episode: room for all of them, every iteration
    buf = random_episode_buffer(torch, device, cfg, env.num_obs, env.num_acts,
                                spare_rows=iterations * num_envs * (cfg.horizon + 1))
    # upstream updates its normalisers from world-model batches, not from env steps (as the trainer)
    collector = EpisodeCollector(env, buf, agent, min_length=cfg.horizon, update_normalizers=False)
    ctx.mark("sample", batch_size=cfg.wm_batch_size, horizon=cfg.horizon)
    rows = []
    env_steps = 0
    try:
        for i in range(iterations):
            row: dict = {}
            ctx.mark("actor_update", iteration=i, rollout="real env in lockstep", env=env_name,
                     env_steps=cfg.horizon * num_envs)
            (row["actor"], rollout), row["actor_update_s"] = _timed(
                torch, device, agent.update_actor_in_env, env, collector)
            env_steps += cfg.horizon * num_envs
            ctx.mark("critic_update", iteration=i, rollout_rows=int(rollout.rewards.numel()),
                     rollout_ends=int(rollout.done_mask.sum().item()))
            row["critic"], row["critic_update_s"] = _timed(torch, device, agent.update_critic_on, rollout)
            obs, act, rew = buf.sample()  # untimed, as the bundled iteration's world-model batch
            ctx.mark("wm_update", iteration=i)
            row["wm"], row["wm_update_s"] = _timed(torch, device, agent.update_world_model, obs, act, rew)
            rows.append(row)
    finally:
        buf.close()
    return {"agent": agent, "build_s": build_s, "rows": rows, "obs_dim": env.num_obs, "act_dim": env.num_acts,
            "actor_batch": num_envs, "update_order": ["actor", "critic", "wm"], "env": env_name,
            "num_envs": num_envs, "episode_length": env.episode_length, "env_build_s": env_s,
            "env_steps": env_steps, "episodes_finished": collector.episodes,
            **({"env_fallback": fallback} if fallback else {})}


def one_iteration(ctx: StageContext, torch: Any, device: str, alg: dict) -> dict:
    """One update of alg's own variant (alg.variant: upstream or bundled), each part timed."""
    cfg = agent_config(alg)
    run = upstream_iteration if cfg.variant == "upstream" else bundled_iteration
    got = run(ctx, torch, device, cfg)
    agent, rows = got.pop("agent"), got.pop("rows")
    last = rows[-1]
    return {"variant": cfg.variant, **got, "param_counts": vars(agent.param_counts),
            "param_total": agent.param_counts.total,
            **{k: last[k] for k in ("wm_update_s", "actor_update_s", "critic_update_s")},
            "iterations": rows, "batch_size": cfg.wm_batch_size, "horizon": cfg.horizon}


def collection(trainer: Any, env: Any, cfg: Any) -> tuple[Any, int, int]:
    """How the variant's loop collects before its first complete episode: (one step of it, env steps
    per call, the most env steps the first episode can take)."""
    import torch

    if cfg.variant == "upstream":
        def rollout() -> None:
            """upstream: H-step actor rollouts without gradients, stepping the env (UpstreamTrainer.run_epoch)"""
            with torch.no_grad():
                trainer.agent.rollout(env, trainer.collector)

        # whole rollouts: the episode's last one ends within H steps of its end
        return rollout, cfg.horizon, -(-env.episode_length // cfg.horizon) * cfg.horizon

    def step() -> None:
        """bundled: one closed-loop step of the acting policy (EpisodeCollector.step)"""
        trainer.collector.step()

    return step, 1, env.episode_length + 1  # the longest an episode can take, plus the push


def first_update_plan(trainer: Any, cfg: Any, env: Any) -> tuple[int, int]:
    """(world-model iterations, Buffer samples) of the trainer's first update(): upstream's is its
    warm-up, env.episode_length iterations; the bundled actor also samples its start states once."""
    if cfg.variant == "upstream":
        from gpuprobe_pwm.trainer_upstream import warmup_iterations

        wm = warmup_iterations(env.episode_length, cfg.wm_iterations, trainer.warmed_up)
        return wm, wm
    wm = cfg.wm_iterations + (0 if trainer.warmed_up else trainer.s.wm_warmup_iterations)
    return wm, wm + 1


def first_epoch(ctx: StageContext, torch: Any, device: str, alg: dict, env_name: str | None = None) -> dict:
    from gpuprobe_pwm.buffer import Buffer
    from gpuprobe_pwm.runs import MetricsLog
    from gpuprobe_pwm.trainer import TrainSettings, make_trainer

    o = ctx.options
    env_name, env_cfg = iteration_env(o, env_name)
    num_envs = int(o.get("num_envs", env_cfg.num_envs))
    episode_length = o.get("episode_length", env_cfg.episode_length)
    capacity = int(float(o.get("buffer_size", alg["wm_buffer_size"])))
    buffer_opts = {**(alg.get("buffer") or {}), **buffer_kwargs(o)}
    ctx.mark("epoch.build", env=env_name, num_envs=num_envs, episode_length=episode_length, buffer_size=capacity)
    t_build = time.monotonic()
    seen: dict[str, float] = {}
    update_plan: dict[str, int] = {}  # the first update's Buffer samples, known once the trainer exists

    def on_buffer(event: str, data: dict) -> None:
        seen.setdefault(event, time.monotonic())
        if event == "sample":
            n = data.get("n", 0)
            if n <= 3:  # the first few are news; the rest would drown the marks
                ctx.mark("epoch.buffer.sample", **data)
            elif update_plan and n % update_plan["every"] == 0:
                # upstream's first update runs episode_length world-model iterations (1000 on Ant:
                # minutes on a CPU); about 50 done/total marks let the watchdog call that slow, not hung
                ctx.progress("epoch.update.samples", n, update_plan["total"])
        else:
            ctx.mark(f"epoch.buffer.{event}", **data)

    # a dflex env with its upstream constructor arguments; the bundled cart-pole if dflex is unusable
    env, _, fallback = make_stage_env(ctx, torch, device, env_name)
    env_name, num_envs = env.name, env.num_envs
    cfg = agent_config(alg)
    buffer = Buffer(capacity, env.num_obs, env.num_acts, horizon=cfg.horizon, batch_size=cfg.wm_batch_size,
                    device=device, seed=0, progress=on_buffer, **buffer_opts)
    with tempfile.TemporaryDirectory(prefix="gpuprobe-train-") as run_dir:
        settings = TrainSettings(alg_name=str(alg.get("name")), env_name=env_name, run_dir=Path(run_dir),
                                 device=device, num_envs=num_envs, buffer_size=capacity, agent=cfg)
        metrics = MetricsLog(Path(run_dir) / "metrics.jsonl")
        try:
            trainer = make_trainer(settings, env, env, buffer, metrics)  # alg.variant's loop
            out: dict = {"env": env_name, "num_envs": num_envs, "episode_length": env.episode_length,
                         "buffer_size": capacity, "buffer_options": buffer_opts,
                         "build_s": round(time.monotonic() - t_build, 3),
                         **({"env_fallback": fallback} if fallback else {})}
            collect, chunk, total = collection(trainer, env, cfg)
            out["collect"] = collect.__doc__
            every = max(1, total // chunk // 50)  # about 50 progress marks, whatever the chunk
            t = time.monotonic()
            steps = 0
            while trainer.collector.episodes == 0 and steps < total:
                collect()
                steps += chunk
                if (steps // chunk) % every == 0:
                    ctx.progress("epoch.collect", steps, total, env_steps=steps * num_envs)
            collect_s = time.monotonic() - t
            ctx.mark("epoch.first_episode", steps=steps, episodes=trainer.collector.episodes,
                     seconds=round(collect_s, 3))
            out.update(first_episode_steps=steps, first_episode_s=round(collect_s, 3),
                       collect_steps_per_s=round(steps / collect_s, 2) if collect_s > 0 else None,
                       buffer_rows=len(buffer), skipped_short=trainer.collector.skipped_short)
            if "fill" in seen:
                out["first_buffer_add_s"] = round(seen["fill"] - t, 3)
            out["update_wm_iterations"], update_plan["total"] = first_update_plan(trainer, cfg, env)
            update_plan["every"] = max(1, update_plan["total"] // 50)
            ctx.mark("epoch.update", buffer_rows=len(buffer), samples=update_plan["total"])
            t = time.monotonic()
            info = trainer.update()
            _sync(torch, device)
            out["update_s"] = round(time.monotonic() - t, 3)
            out["update_times_s"] = {k: round(v, 4) for k, v in info.items() if k.startswith("time/")}
            out["storage_decision"] = buffer.decision.to_dict() if buffer.decision else None
        finally:
            buffer.close()
            metrics.close()
    return out


def run(ctx: StageContext) -> dict:
    import torch

    if ctx.device == "cuda" and not torch.cuda.is_available():
        raise ctx.skip("no CUDA (torch.cuda.is_available() is False); use --device cpu")
    device = ctx.torch_device
    size = str(ctx.options.get("model_size", "5M"))
    alg = alg_config(ctx.options.get("alg") or size)  # an alg name wins over the size
    torch.manual_seed(0)
    memory = Memory(torch, device)
    data: dict = {"device": device, "model_size": None if ctx.options.get("alg") else size, "alg": alg.get("name")}
    data.update(one_iteration(ctx, torch, device, alg))
    if ctx.options.get("first_epoch"):
        # the env the iteration fell back to, if it did: one dflex failure (and its wait) is enough
        fell_back = data["env"] if data.get("env_fallback") else None
        data["first_epoch"] = first_epoch(ctx, torch, device, alg, fell_back)
    data["memory"] = memory.peak()
    peak_mib = data["memory"]["peak_bytes"] / 2**20
    data["summary"] = (f"{alg.get('name')} ({data['variant']}): wm {data['wm_update_s']:.3g} s, "
                       f"actor {data['actor_update_s']:.3g} s, "
                       f"critic {data['critic_update_s']:.3g} s per update; peak {peak_mib:.0f} MiB"
                       + (f"; on {data['env']}, {data['env_fallback']['env']} unavailable"
                          if data.get("env_fallback") else "")
                       + (f"; first episode after {data['first_epoch']['first_episode_steps']} steps "
                          f"({data['first_epoch']['first_episode_s']} s)" if "first_epoch" in data else ""))
    return data
