"""Hydra entry point: python -m gpuprobe_pwm.train env=dflex_hopper alg=pwm general.seed=42 general.device=cpu

Only wiring: check the command line's keys, resolve the config (absolute paths, fixed at start-up),
then build the envs, the Buffer and the trainer of the chosen variant (alg.variant), and run. Exit
codes: 0 done, 1 error, 2 a bad command line or config value, 128+signal when pre-empted (143 for
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
from gpuprobe_pwm.settings import ConfigError, agent_config, check_override_keys, env_settings, steps_per_epoch

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
    alg_device = data["alg"].get("device")
    if alg_device is not None and str(alg_device) != str(general["device"]):
        # upstream would put the agent on alg.device and the env on general.device; here both go together
        raise ConfigError(f"alg.device={alg_device} differs from general.device={general['device']}: "
                          "set general.device (alg.device follows it)")
    # general.pretrain: one replay file or a list of them (upstream also takes a list)
    pretrain = general.get("pretrain")
    pretrain = [pretrain] if isinstance(pretrain, str) else list(pretrain or [])
    general["pretrain"] = [str(_abs(p, start_cwd)) for p in pretrain] or None
    missing = [p for p in general["pretrain"] or () if not Path(p).is_file()]
    if missing:  # before anything is built: the files are read only after the envs and models
        raise ConfigError(f"general.pretrain: {missing[0]} does not exist or is not a file")
    if pretrain and (not isinstance(general.get("pretrain_steps"), int) or general["pretrain_steps"] < 1):
        raise ConfigError(f"general.pretrain_steps={general.get('pretrain_steps')!r}: give a whole number of "
                          "world-model updates, 1 or more")
    if not general.get("train", True) and checkpoint is None:
        raise ConfigError("general.train=false evaluates a checkpoint: set general.checkpoint=FILE")
    return ResolvedConfig(data, logdir, checkpoint, start_cwd, list(argv if argv is not None else sys.argv))


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The same config `python -m gpuprobe_pwm.train` would see, without running Hydra's app (for tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def check_command_line(args: list[str]) -> None:
    """Refuse unknown keys and key-adding '+' before Hydra runs (Hydra would raise with a traceback,
    or silently keep an added key nothing reads). Raises ConfigError with a one-line message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # key=value overrides (and ~key); Hydra's own flags and their values (--cfg job) pass through
    overrides = [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    prefixes = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}
    groups = [o.input_line for o in parsed if o.key_or_group in ("alg", "env") and o.type == OverrideType.CHANGE]
    try:
        base = compose_config(groups)
    except (HydraException, OmegaConfBaseException) as exc:
        group = next((g.split("=")[0] for g in groups if g.split("=")[0] in str(exc)), "alg/env")
        options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")) if group in ("alg", "env") else []
        raise ConfigError(f"{', '.join(groups)}: no such config" + (f"; {group} is one of {', '.join(options)}"
                                                                    if options else "")) from None
    check_override_keys([(o.key_or_group, prefixes.get(o.type)) for o in parsed],
                        OmegaConf.to_container(base, resolve=False))
    try:
        composed = OmegaConf.to_container(compose_config(overrides), resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(" ".join(str(exc).split("\n")[0].split())) from None
    try:  # values the trainer cannot read (alg.horizon=abc) or honour, before anything is built
        agent_config(composed["alg"])
        env_settings(composed["env"])
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad config value: {type(exc).__name__}: {exc}") from None


def _start_wandb(general: dict[str, Any], config: dict[str, Any], run_dir: Path) -> Any:
    if not general.get("run_wandb"):
        return None
    import wandb  # optional dependency: only imported when asked for

    opts = config.get("wandb") or {}
    return wandb.init(project=opts.get("project"), entity=opts.get("entity"), group=opts.get("group"),
                      notes=opts.get("notes"), mode=opts.get("mode", "online"),
                      config=config, dir=str(run_dir), name=run_dir.name)


def run(rc: ResolvedConfig) -> int:
    """Build everything and train; returns the process exit code."""
    # Heavy imports here, not at module level: `--help` and config errors stay fast.
    from gpuprobe_pwm.buffer import Buffer
    from gpuprobe_pwm.envs import EnvUnavailable, make_env
    from gpuprobe_pwm.safe_load import CheckpointError
    from gpuprobe_pwm.trainer import Preempted, StopFlag, TrainSettings, make_trainer, seed_everything

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
    envs = env_settings(env_cfg)
    settings = TrainSettings(
        alg_name=alg["name"], env_name=envs.name, run_dir=run_dir, seed=seed, device=device,
        num_envs=envs.num_envs, episode_length=envs.episode_length, stochastic_init=envs.stochastic_init,
        epochs=int(alg["max_epochs"]), steps_per_epoch=steps_per_epoch(alg),
        buffer_size=int(alg["wm_buffer_size"]), buffer_options=dict(alg.get("buffer") or {}),
        wm_warmup_iterations=int((alg.get("bundled") or {}).get("wm_warmup_iterations", 0)),
        save_interval=int(alg["save_interval"]), eval_interval=int(general["eval_interval"]),
        eval_episodes=int(general["eval_runs"]), target_return=general.get("target_return"),
        time_limit_s=60.0 * general["time_limit_minutes"] if general.get("time_limit_minutes") else None,
        checkpoint=rc.checkpoint, checkpoint_buffer=bool(general.get("save_buffer", True)),
        load_buffer=bool(general.get("checkpoint_with_buffer", True)), train=bool(general.get("train", True)),
        pretrain=tuple(Path(p) for p in general.get("pretrain") or ()), pretrain_steps=int(general["pretrain_steps"]),
        agent=agent_config(alg), config=rc.config)
    metrics = runs.MetricsLog(run_dir / runs.METRICS)
    buffer = wandb_run = None
    try:
        try:
            sim_options = envs.options  # a dflex env's own constructor arguments (upstream's env.config)
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
        trainer = make_trainer(settings, env, eval_env, buffer, metrics, stop, wandb_run)
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
    try:
        rc = resolve_config(cfg, Path(hydra.utils.get_original_cwd()), list(sys.orig_argv[1:]))
        agent_config(rc.config["alg"])  # refuse values the trainer cannot honour before anything is built
    except (ConfigError, ValueError, TypeError) as exc:
        log.error("%s", exc)
        sys.exit(2)
    logging.getLogger("pwm").setLevel(rc.general.get("log_level", "INFO"))
    # Hook point: checks that must pass before anything is built (envs, Buffer, models) go here,
    # between resolving the config and run().
    from gpuprobe_pwm.gate import preflight_gate

    preflight_gate(rc.general)  # exits 4 on a node known to be incompatible (general.preflight)
    code = run(rc)
    if code:
        sys.exit(code)


def cli() -> None:
    try:
        check_command_line(sys.argv[1:])
    except ConfigError as exc:
        print(f"gpuprobe_pwm.train: {exc}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    cli()
