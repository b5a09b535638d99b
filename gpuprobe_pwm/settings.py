"""Upstream PWM's config surface -> this trainer's typed settings, and the command-line key check.

The YAML under config/ uses upstream's keys (alg/pwm*.yaml, env.config, general, wandb); this module
is the one place that reads them, so the loop, the agents and the `train` probe stage see plain
dataclasses. Values the trainer cannot honour are refused here with a ConfigError (one line, exit 2).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Iterable

from gpuprobe_pwm.agent import AgentConfig
from gpuprobe_pwm.models import ModelConfig, upstream_layout

VARIANTS = ("upstream", "bundled")
# env.config keys the trainer reads itself; the rest are a dflex env's own constructor arguments
ENV_KEYS = ("num_envs", "episode_length", "stochastic_init")


class ConfigError(ValueError):
    """A config value or command-line key this trainer cannot run with; the message is one line."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def model_config(alg: dict[str, Any]) -> ModelConfig:
    wm = alg["world_model_config"]
    actor, critic = alg["actor_config"], alg["critic_config"]
    for name, block in (("actor_config", actor), ("critic_config", critic)):
        _require(str(block.get("activation_class", "nn.Mish")) == "nn.Mish",
                 f"alg.{name}.activation_class: only nn.Mish is implemented (got {block['activation_class']})")
    _require(float(actor.get("init_gain", 1.0)) == 1.0, "alg.actor_config.init_gain: only 1.0 is implemented")
    groups = {wm[part]["last_layer_kwargs"]["act"]["simnorm_dim"] for part in ("encoder", "dynamics")}
    _require(len(groups) == 1, "alg.world_model_config: encoder and dynamics must use the same simnorm_dim")
    _require(wm["encoder"]["last_layer"] == wm["dynamics"]["last_layer"] == "normedlinear"
             and wm["reward"]["last_layer"] == "linear",
             "alg.world_model_config: only normedlinear encoder/dynamics and a linear reward head are implemented")
    bins = int(wm.get("num_bins") or 0)
    _require(bins != 1, "alg.world_model_config.num_bins=1 (symexp regression) is not implemented; use null or > 1")
    vmin = -10.0 if wm.get("vmin") is None else float(wm["vmin"])
    vmax = 10.0 if wm.get("vmax") is None else float(wm["vmax"])
    return ModelConfig(
        latent_dim=int(alg["latent_dim"]), encoder_dims=list(wm["encoder_units"]),
        dynamics_dims=list(wm["units"]), reward_dims=list(wm["units"]), simnorm_group=int(groups.pop()),
        actor_dims=list(actor["units"]), actor_logstd_init=float(actor["init_logstd"]),
        actor_logstd_min=float(actor["min_logstd"]), critic_dims=list(critic["units"]),
        num_critics=int(alg["num_critics"]), reward_bins=bins, reward_vmin=vmin, reward_vmax=vmax)


def agent_config(alg: dict[str, Any]) -> AgentConfig:
    """alg/*.yaml (upstream's keys, plus `bundled:` for the bundled variant) -> AgentConfig."""
    variant = str(alg.get("variant", "upstream"))
    _require(variant in VARIANTS, f"alg.variant must be one of {', '.join(VARIANTS)} (got {variant})")
    _require(alg["lr_schedule"] in ("linear", "constant"), "alg.lr_schedule must be linear or constant")
    _require(alg["critic_method"] in ("td-lambda", "one-step"), "alg.critic_method must be td-lambda or one-step")
    bundled = dict(alg.get("bundled") or {})
    _require(variant == "bundled" or not bundled, "alg.bundled.* applies to the bundled variant only (alg.variant=bundled)")
    horizon = int(alg["horizon"])
    _require(horizon > 0, "alg.horizon must be > 0")
    model = model_config(alg)
    # upstream's networks: Linear -> Mish -> LayerNorm, its inits, bins read in symlog space, logstd
    # clamped in place; the bundled variant keeps its own layout (models.py's defaults)
    model = upstream_layout(model) if variant == "upstream" else model
    chosen = {k: v for k, v in (alg.get("network") or {}).items() if v is not None}
    try:
        model = replace(model, **chosen)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"alg.network: {exc}") from None
    return AgentConfig(
        variant=variant, horizon=horizon, gamma=float(alg["gamma"]), lam=float(alg["lam"]),
        actor_lr=float(alg["actor_lr"]), critic_lr=float(alg["critic_lr"]), wm_lr=float(alg["model_lr"]),
        lr_schedule=str(alg["lr_schedule"]), betas=tuple(float(b) for b in alg.get("betas", (0.7, 0.95))),
        actor_grad_clip=float(alg["actor_grad_norm"]), critic_grad_clip=float(alg["critic_grad_norm"]),
        wm_grad_clip=float(alg["wm_grad_norm"]), critic_iterations=int(alg["critic_iterations"]),
        critic_batches=int(alg["critic_batches"]), critic_method=str(alg["critic_method"]),
        wm_iterations=int(alg["wm_iterations"]), wm_batch_size=int(alg["wm_batch_size"]),
        obs_rms=bool(alg["obs_rms"]), rew_rms=bool(alg["rew_rms"]), ret_rms=bool(alg["ret_rms"]),
        detach=bool(alg["detach"]),
        rho=float(bundled.get("rho", 0.5)), consistency_coef=float(bundled.get("consistency_coef", 20.0)),
        reward_coef=float(bundled.get("reward_coef", 0.5)),
        target_critic_alpha=float(bundled.get("target_critic_alpha", 0.2)),
        actor_batch_size=int(bundled.get("actor_batch_size", 256)),
        model=model)


def steps_per_epoch(alg: dict[str, Any]) -> int:
    """Env steps per epoch with every env: upstream's loop steps the env once per rollout step."""
    if alg.get("variant", "upstream") == "bundled":
        return int((alg.get("bundled") or {}).get("steps_per_epoch", alg["horizon"]))
    return int(alg["horizon"])


@dataclass
class EnvSettings:
    name: str
    num_envs: int
    episode_length: int | None
    stochastic_init: bool
    options: dict[str, Any]  # a dflex env's own constructor arguments (upstream's env.config)


def env_settings(env: dict[str, Any]) -> EnvSettings:
    config = dict(env.get("config") or {})
    length = config.get("episode_length")
    return EnvSettings(name=str(env["name"]), num_envs=int(config.get("num_envs", 64)),
                       episode_length=None if length is None else int(length),
                       stochastic_init=bool(config.get("stochastic_init", False)),
                       options={k: v for k, v in config.items() if k not in ENV_KEYS})


# ---- the command-line key check --------------------------------------------------------------
def known_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key path of a plain (resolved) config dict, inner nodes included."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            out.append(path)
            out.extend(known_keys(value, path + "."))
    return out


def closest_key(key: str, keys: Iterable[str]) -> str | None:
    keys = list(keys)
    leaf = key.rsplit(".", 1)[-1]
    # Prefer a key with the same last name anywhere (alg.max_epochs for general.max_epochs) ...
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return difflib.get_close_matches(key, same_leaf, n=1, cutoff=0.0)[0]
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    return match[0] if match else None


def check_override_keys(overrides: list[tuple[str, str | None]], config: dict[str, Any]) -> None:
    """overrides: (key, prefix) with prefix '+', '++', '~' or None. Refuses keys the composed config
    lacks (naming the closest known key) and any '+' that would add a key Hydra would then ignore."""
    keys = known_keys(config)
    known = set(keys)
    for key, prefix in overrides:
        if key.startswith("hydra.") or key in ("alg", "env"):
            continue
        if key in known and prefix in ("+", "~"):
            hint = f"write {key}=VALUE" if prefix == "+" else "keys cannot be removed"
            raise ConfigError(f"{prefix}{key}: {key} exists; {hint}")
        if key not in known:
            near = closest_key(key, keys)
            what = "adding keys is not supported" if prefix in ("+", "++") else "unknown config key"
            raise ConfigError(f"{prefix or ''}{key}: {what}" + (f"; did you mean {near}?" if near else ""))
