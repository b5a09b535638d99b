"""The train stage: one iteration of the chosen alg's own update, and the first epoch, with toy sizes.

The default alg is upstream's (pwm*): its iteration must be UpstreamAgent's update (the actor's
rollout stepping the real env, the critic on that rollout, then the world model), not the bundled
PWMAgent's. The bundled variant stays reachable with --set train.alg=bundled_*.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprobe.probes import train as train_stage
from gpuprobe.probes.train import CONFIG_DIR, alg_config
from gpuprobe.run.optschema import ALG_NAMES, SCHEMA, OptionValueError, coerce
from tests.stalling_buffers import mark_names, run_gpuprobe, stage

TOY = ["--set", "train.env=cartpole_swingup", "--set", "train.num_envs=4", "--set", "train.episode_length=24"]


def test_one_upstream_iteration_and_the_first_epoch_pass_with_their_marks(tmp_path):
    args = ["--device", "cpu", "--only", "--stage", "train", "--model-size", "tiny", "--train-epoch",
            *TOY, "--set", "train.buffer_size=2000"]
    code, doc = run_gpuprobe(args, str(tmp_path))
    res = stage(doc, "train")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    names = mark_names(res)
    for name in ("env", "build", "sample", "wm_update", "actor_update", "critic_update", "epoch.build",
                 "epoch.collect", "epoch.buffer.storage_decision", "epoch.buffer.fill", "epoch.first_episode",
                 "epoch.update", "epoch.buffer.first_sample"):
        assert f"train.{name}" in names, name
    # upstream's order: the env first (its actor steps it), then actor, critic, world model
    order = [names.index(f"train.{n}") for n in ("env", "build", "sample", "actor_update", "critic_update",
                                                  "wm_update")]
    assert order == sorted(order), names
    # the first buffer add comes with (just before) the first complete episode, then the first update
    assert names.index("train.epoch.buffer.fill") < names.index("train.epoch.first_episode") < names.index(
        "train.epoch.update")
    data = res["data"]
    assert data["alg"] == "pwm_tiny" and data["variant"] == "upstream"
    assert data["update_order"] == ["actor", "critic", "wm"]
    for key in ("wm_update_s", "actor_update_s", "critic_update_s"):
        assert data[key] > 0
    # only upstream's update steps the env: H steps with every env, booked as collected data
    assert data["env"] == "cartpole_swingup" and data["num_envs"] == 4 and data["actor_batch"] == 4
    assert data["env_steps"] == 4 * data["horizon"] and data["obs_dim"] == 5 and data["act_dim"] == 1
    actor_mark = next(m["data"] for m in res["marks"] if m["name"] == "train.actor_update")
    assert actor_mark["rollout"] == "real env in lockstep" and actor_mark["env_steps"] == 4 * data["horizon"]
    critic_mark = next(m["data"] for m in res["marks"] if m["name"] == "train.critic_update")
    assert critic_mark["rollout_rows"] == 4 * data["horizon"]
    row = data["iterations"][0]
    assert "actor/model_return" in row["actor"]            # UpstreamAgent.rollout's, not PWMAgent's
    assert {"wm/dynamics", "wm/reward"} <= set(row["wm"])
    assert data["memory"]["peak_bytes"] > 0 and "getrusage" in data["memory"]["source"]
    epoch = data["first_epoch"]
    assert epoch["first_episode_steps"] == 24 and epoch["buffer_rows"] == 4 * 25
    assert {"time/wm", "time/actor", "time/critic"} <= set(epoch["update_times_s"])
    # upstream collects in whole H-step rollouts without gradients (H=4 here), not step by step
    assert epoch["collect"].startswith("upstream: H-step actor rollouts")
    collect = [m["data"] for m in res["marks"] if m["name"] == "train.epoch.collect"]
    assert collect[-1]["total"] == 24 and collect[-1]["done"] == 24
    assert [c["done"] for c in collect] == [4, 8, 12, 16, 20, 24]
    # its first update is the world-model warm-up (episode_length iterations): progress the watchdog sees
    update_mark = next(m["data"] for m in res["marks"] if m["name"] == "train.epoch.update")
    assert update_mark["samples"] == 24 and epoch["update_wm_iterations"] == 24
    samples = [m["data"] for m in res["marks"] if m["name"] == "train.epoch.update.samples"]
    assert samples[0]["done"] == 4 and samples[-1] == {"done": 24, "total": 24}


def test_the_bundled_variant_stays_reachable_by_name(tmp_path):
    code, doc = run_gpuprobe(["--device", "cpu", "--only", "--stage", "train", "--set", "train.alg=bundled_tiny",
                              "--train-epoch", *TOY, "--set", "train.buffer_size=2000"], str(tmp_path))
    res = stage(doc, "train")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    names = mark_names(res)
    assert "train.env" not in names  # its update needs no env
    order = [names.index(f"train.{n}") for n in ("build", "sample", "wm_update", "actor_update", "critic_update")]
    assert order == sorted(order), names
    data = res["data"]
    assert data["alg"] == "bundled_tiny" and data["variant"] == "bundled" and data["model_size"] is None
    assert data["update_order"] == ["wm", "actor", "critic"] and "env_steps" not in data
    assert data["obs_dim"] == 37 and data["actor_batch"] == 16   # Ant's sizes, bundled.actor_batch_size
    assert all(data[k] > 0 for k in ("wm_update_s", "actor_update_s", "critic_update_s"))
    epoch = data["first_epoch"]   # the bundled loop: closed-loop steps, then Trainer.update
    assert epoch["collect"].startswith("bundled: one closed-loop step") and epoch["first_episode_steps"] == 24
    assert set(epoch["update_times_s"]) == {"time/wm", "time/actor", "time/critic"}
    assert epoch["update_wm_iterations"] == 2   # wm_iterations, no warm-up
    collect = [m["data"] for m in res["marks"] if m["name"] == "train.epoch.collect"]
    assert collect[-1]["total"] == 25 and collect[-1]["done"] == 24


class FakeContext:
    """The StageContext surface the stage uses, in-process, so that the agents' methods can be watched."""

    def __init__(self, options: dict):
        self.options, self.marks = options, []

    def mark(self, name: str, **data) -> None:
        self.marks.append((name, data))

    def progress(self, name: str, done, total=None, **data) -> None:
        self.mark(name, done=done, total=total, **data)

    def log(self, msg: str, level: str = "info", **data) -> None:
        self.marks.append(("log", {"msg": msg, "level": level}))


def _watch_updates(monkeypatch) -> list[str]:
    """Record every agent update called, as Class.method (the class that defines the method run)."""
    from gpuprobe_pwm.agent import PWMAgent
    from gpuprobe_pwm.agent_upstream import UpstreamAgent

    calls: list[str] = []
    for cls, names in ((PWMAgent, ("update_world_model", "update_actor", "update_critic")),
                       (UpstreamAgent, ("update_world_model", "update_actor_in_env", "update_critic_on"))):
        for name in names:
            original = cls.__dict__[name]

            def spy(self, *args, _original=original, _label=f"{cls.__name__}.{name}", **kwargs):
                calls.append(_label)
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, spy)
    return calls


@pytest.mark.parametrize("alg, expected", [
    ("pwm_tiny", ["UpstreamAgent.update_actor_in_env", "UpstreamAgent.update_critic_on",
                  "UpstreamAgent.update_world_model"] * 2),
    ("bundled_tiny", ["PWMAgent.update_world_model", "PWMAgent.update_actor", "PWMAgent.update_critic"] * 2),
])
def test_the_iteration_runs_the_variants_own_update(monkeypatch, alg, expected):
    import torch

    calls = _watch_updates(monkeypatch)
    ctx = FakeContext({"env": "cartpole_swingup", "num_envs": 3, "episode_length": 10, "iterations": 2})
    out = train_stage.one_iteration(ctx, torch, "cpu", alg_config(alg))
    assert calls == expected
    assert len(out["iterations"]) == 2
    if alg.startswith("pwm"):
        assert out["env_steps"] == 2 * 3 * out["horizon"]
        # a hang inside names the part: each update's mark comes right before it
        assert [n for n, _ in ctx.marks] == ["env", "build", "sample"] + ["actor_update", "critic_update",
                                                                          "wm_update"] * 2


def test_an_unusable_dflex_falls_back_to_the_bundled_env_and_says_so(monkeypatch):
    """dflex found but not importable (e.g. CUDA 13's nvcc refusing its kernels): the sim stage reports
    that; the train stage still times upstream's update, on the bundled cart-pole, and records why."""
    import torch

    import gpuprobe_pwm.envs as envs

    real = envs.make_env

    def make_env(name, *args, **kwargs):
        if name.startswith("dflex_"):
            raise envs.EnvUnavailable(f"{name}: kernel build failed (test)")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(envs, "dflex_status", lambda: (True, "0.0.1"))
    monkeypatch.setattr(envs, "make_env", make_env)
    ctx = FakeContext({"num_envs": 3, "episode_length": 10})
    out = train_stage.one_iteration(ctx, torch, "cpu", alg_config("pwm_tiny"))
    assert out["env"] == "cartpole_swingup" and out["env_fallback"]["env"] == "dflex_ant"
    assert "kernel build failed (test)" in out["env_fallback"]["reason"]
    envs_marked = [d for n, d in ctx.marks if n == "env"]
    assert [d["env"] for d in envs_marked] == ["dflex_ant", "cartpole_swingup"]
    assert envs_marked[1]["fallback_from"] == "dflex_ant"
    # asked for by name, its failure is the stage's
    with pytest.raises(envs.EnvUnavailable):
        train_stage.one_iteration(FakeContext({"env": "dflex_ant", "num_envs": 3}), torch, "cpu",
                                  alg_config("pwm_tiny"))


def test_alg_names_are_the_trainer_configs_and_checked_before_the_run():
    assert set(ALG_NAMES) == {p.stem for p in (CONFIG_DIR / "alg").glob("*.yaml")}
    assert coerce(SCHEMA["train"]["alg"], "BUNDLED_5m") == "bundled_5M"
    with pytest.raises(OptionValueError):
        coerce(SCHEMA["train"]["alg"], "bundled_1M")
    for size in SCHEMA["train"]["model_size"].choices:
        assert alg_config(size)["variant"] == "upstream"  # a size means upstream's config


def test_model_sizes_come_from_the_trainer_configs():
    assert alg_config("5M")["latent_dim"] == 512
    big = alg_config("48M")
    assert big["latent_dim"] == 768 and big["world_model_config"]["encoder_units"] == [1792, 1792, 1792]
    assert big["horizon"] == 16 and big["variant"] == "upstream"  # inherited from pwm.yaml
    assert alg_config("bundled_5M")["variant"] == "bundled"
    assert Path(CONFIG_DIR).is_dir()
