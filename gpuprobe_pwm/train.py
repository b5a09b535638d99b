"""Hydra entry point: python -m gpuprobe_pwm.train env=cartpole_swingup alg=pwm_5M general.seed=42 general.device=cpu

Only wiring: resolve the config (absolute paths, fixed at start-up), then build the envs, the
Buffer and the trainer, and run. Exit codes: 0 done, 1 error, 128+signal when pre-empted (143 for
SIGTERM) after latest_checkpoint.pt was saved.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from gpuprobe_pwm import runs
from gpuprobe_pwm.agent import AgentConfig
from gpuprobe_pwm.models import ModelConfig

log = logging.getLogger("gpuprobe_pwm.train")
CONFIG_DIR = Path(__file__).resolve().parent / "config"


@dataclass
class ResolvedConfig:
    """The config as plain data with every path absolute; nothing after this reads the cwd."""

    config: dict[str, Any]
    logdir: Path
    checkpoint: Path | None
    start_cwd: Path
    argv: list[str]

    @property
    def general(self) -> dict[str, Any]:
        return self.config["general"]


def _abs(value: Any, base: Path) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def resolve_config(cfg: DictConfig, start_cwd: Path, argv: list[str] | None = None) -> ResolvedConfig:
    """Relative paths given on the command line are taken relative to the cwd at start-up."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    start_cwd = Path(start_cwd).resolve()
    general = data["general"]
    logdir = _abs(general.get("logdir"), start_cwd) or runs.default_logdir(start_cwd)
    checkpoint = _abs(general.get("checkpoint"), start_cwd)
    general["logdir"] = str(logdir)
    general["checkpoint"] = str(checkpoint) if checkpoint else None
    epochs = general.get("max_iterations") or general.get("epochs") or data["alg"]["epochs"]
    general["epochs"] = int(epochs)
    return ResolvedConfig(data, logdir, checkpoint, start_cwd, list(argv if argv is not None else sys.argv))


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The same config `python -m gpuprobe_pwm.train` would see, without running Hydra's app (for tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def agent_config(alg: dict[str, Any]) -> AgentConfig:
    agent = dict(alg["agent"])
    model = ModelConfig(**agent.pop("model"))
    agent["betas"] = tuple(agent["betas"])
    return AgentConfig(**agent, model=model)


def _start_wandb(general: dict[str, Any], config: dict[str, Any], run_dir: Path) -> Any:
    if not general["wandb"]["enabled"]:
        return None
    import wandb  # optional dependency: only imported when asked for

    opts = general["wandb"]
    return wandb.init(project=opts["project"], entity=opts.get("entity"), mode=opts.get("mode", "online"),
                      config=config, dir=str(run_dir), name=run_dir.name)


def run(rc: ResolvedConfig) -> int:
    """Build everything and train; returns the process exit code."""
    # Heavy imports here, not at module level: `--help` and config errors stay fast.
    from gpuprobe_pwm.buffer import Buffer
    from gpuprobe_pwm.envs import EnvUnavailable, make_env
    from gpuprobe_pwm.safe_load import CheckpointError
    from gpuprobe_pwm.trainer import Preempted, StopFlag, Trainer, TrainSettings, seed_everything

    general, alg, env_cfg = rc.general, rc.config["alg"], rc.config["env"]
    seed, device = int(general["seed"]), str(general["device"])
    stop = StopFlag()
    stop.install()  # before the slow parts, so an early SIGTERM is not lost
    if general.get("torch_threads"):
        # On a shared CPU node, 2+ OpenMP threads can be 10-30x slower than one: every op waits
        # at a barrier for a thread that is not scheduled.
        import torch

        torch.set_num_threads(int(general["torch_threads"]))
    seed_everything(seed)
    prefix = general.get("run_name") or runs.run_prefix(alg["name"], env_cfg["name"], seed)
    run_dir = runs.make_run_dir(rc.logdir, prefix)
    runs.write_run_json(run_dir, runs.run_metadata(rc.argv, rc.config, run_dir, rc.logdir, rc.start_cwd, device))
    runs.register_run(rc.logdir, run_dir, prefix)
    log.info("run directory %s", run_dir)
    settings = TrainSettings(
        alg_name=alg["name"], env_name=env_cfg["name"], run_dir=run_dir, seed=seed, device=device,
        num_envs=int(env_cfg["num_envs"]), episode_length=env_cfg.get("episode_length"),
        stochastic_init=bool(env_cfg.get("stochastic_init", False)),
        epochs=int(general["epochs"]), steps_per_epoch=int(alg["steps_per_epoch"]),
        buffer_size=int(alg["buffer_size"]), buffer_options=dict(alg.get("buffer") or {}),
        wm_warmup_iterations=int(alg.get("wm_warmup_iterations", 0)),
        save_interval=int(general["save_interval"]), eval_interval=int(general["eval_interval"]),
        eval_episodes=int(general["eval_episodes"]), target_return=general.get("target_return"),
        time_limit_s=60.0 * general["time_limit_minutes"] if general.get("time_limit_minutes") else None,
        checkpoint=rc.checkpoint, checkpoint_buffer=bool(general.get("checkpoint_buffer", True)),
        agent=agent_config(alg), config=rc.config)
    metrics = runs.MetricsLog(run_dir / runs.METRICS)
    buffer = wandb_run = None
    try:
        try:
            sim_options = env_cfg.get("dflex")  # a dflex env's own constructor arguments (upstream's)
            env = make_env(settings.env_name, settings.num_envs, device, seed, settings.episode_length,
                           stochastic_init=settings.stochastic_init, options=sim_options)
            # Never stochastic: the evaluation return measures the task from its nominal start
            # (for the swing-ups, hanging down), whatever the training envs start from.
            eval_env = make_env(settings.env_name, settings.eval_episodes, device, seed + 10_000,
                                settings.episode_length, stochastic_init=False, options=sim_options)
        except EnvUnavailable as exc:
            log.error("env %s is not available here: %s", settings.env_name, exc)
            runs.update_run_json(run_dir, status="failed", error=str(exc))
            return 1
        buffer = Buffer(settings.buffer_size, env.num_obs, env.num_acts, horizon=settings.agent.horizon,
                        batch_size=settings.agent.wm_batch_size, device=device, seed=seed,
                        **settings.buffer_options)
        wandb_run = _start_wandb(general, rc.config, run_dir)
        trainer = Trainer(settings, env, eval_env, buffer, metrics, stop, wandb_run)
        runs.update_run_json(run_dir, param_counts=dataclasses.asdict(trainer.agent.param_counts))
        try:
            final = trainer.train()
        except CheckpointError as exc:  # general.checkpoint missing, damaged or refused: one line
            log.error("%s", exc)
            runs.update_run_json(run_dir, status="failed", error=str(exc))
            return 1
        except Preempted as exc:
            runs.update_run_json(run_dir, status="preempted", iteration=trainer.iteration)
            log.warning("pre-empted at iteration %d; resume with general.checkpoint=%s",
                        trainer.iteration, run_dir / "latest_checkpoint.pt")
            return 128 + exc.signum
        decision = getattr(buffer, "decision", None)
        runs.update_run_json(run_dir, status="finished", final=final,
                             buffer_decision=decision.to_dict() if decision is not None else None)
        return 0
    finally:
        metrics.close()
        if buffer is not None:
            buffer.close()
        if wandb_run is not None:
            wandb_run.finish()
        stop.uninstall()


@hydra.main(version_base="1.3", config_path="config", config_name="config")
def main(cfg: DictConfig) -> None:
    # orig_argv keeps "-m gpuprobe_pwm.train" (sys.argv would show the module's file path instead).
    rc = resolve_config(cfg, Path(hydra.utils.get_original_cwd()), list(sys.orig_argv[1:]))
    logging.getLogger("pwm").setLevel(rc.general.get("log_level", "INFO"))
    # Hook point: checks that must pass before anything is built (envs, Buffer, models) go here,
    # between resolving the config and run().
    from gpuprobe_pwm.gate import preflight_gate

    preflight_gate(rc.general)  # exits 4 on a node known to be incompatible (general.preflight)
    code = run(rc)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    main()
