"""alg=pwm* (upstream's algorithm) through the trainer's loop, and upstream's config surface.

Smoke runs with toy sizes: the loop's shape (collection epochs, the warm-up, resume, evaluation
only), never learning."""
from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from gpuprobe_pwm import runs
from gpuprobe_pwm.settings import ConfigError, known_keys
from gpuprobe_pwm.train import check_command_line, compose_config, resolve_config, run
from tests.conftest import UPSTREAM_PWM

REPO = Path(__file__).resolve().parents[2]
NAME = "pwm_tiny_cartpole_swingup_seed42"
# H = 4 env steps per epoch, 12-step episodes: the first episodes end in epoch 3.
TINY = ["alg=pwm_tiny", "env=cartpole_swingup", "env.config.num_envs=4", "env.config.episode_length=12",
        "alg.max_epochs=6", "general.eval_runs=2", "alg.save_interval=3", "general.device=cpu"]


def run_tiny(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    cfg = compose_config([*TINY, f"general.logdir={tmp_path / 'runs'}", *extra])
    rc = resolve_config(cfg, tmp_path, ["gpuprobe_pwm.train", *extra])
    code = run(rc)
    return code, runs.find_run(rc.logdir, NAME)


def epochs(run_dir: Path) -> list[dict]:
    return [r for r in runs.read_metrics(run_dir / "metrics.jsonl") if not r.get("final")]


def test_collection_epochs_then_the_warmup_then_wm_iterations(tmp_path):
    code, run_dir = run_tiny(tmp_path)
    assert code == 0
    records = epochs(run_dir)
    # epochs 1-3 only collect (no episode in the Buffer yet); epoch 4 warms the world model up for
    # env.episode_length = 12 iterations; then alg.wm_iterations = 2 per epoch
    assert [r.get("wm/iterations") for r in records] == [None, None, None, 12, 2, 2]
    assert [r["env_steps"] for r in records] == [16, 32, 48, 64, 80, 96]
    assert all("actor/loss" in r and "critic/loss" in r for r in records[3:])
    final = runs.read_metrics(run_dir / "metrics.jsonl")[-1]
    assert final["final"] and "eval/return" in final
    state = torch.load(run_dir / "final_policy.pt", weights_only=False)
    assert state["config"]["alg"]["variant"] == "upstream" and state["warmed_up"] is True


def test_resume_does_not_warm_up_again_and_train_false_only_evaluates(tmp_path):
    code, first = run_tiny(tmp_path)
    assert code == 0
    time.sleep(1.0)  # run directory names have one-second resolution
    code, second = run_tiny(tmp_path, f"general.checkpoint={first / 'latest_checkpoint.pt'}", "alg.max_epochs=8")
    assert code == 0
    assert [(r["iteration"], r.get("wm/iterations")) for r in epochs(second)] == [(7, 2), (8, 2)]
    time.sleep(1.0)
    code, third = run_tiny(tmp_path, f"general.checkpoint={second / 'final_policy.pt'}", "general.train=false")
    assert code == 0
    records = runs.read_metrics(third / "metrics.jsonl")
    assert len(records) == 1 and records[0]["evaluation_only"] and records[0]["iteration"] == 8


@pytest.mark.parametrize("override,expected", [
    ("+alg.max_epochs=2", "alg.max_epochs exists; write alg.max_epochs=VALUE"),
    ("alg.max_epoch=2", "did you mean alg.max_epochs?"),
    ("general.max_epochs=2", "did you mean alg.max_epochs?"),
    ("+alg.new_thing=1", "adding keys is not supported"),
    ("alg=pwm_99M", "alg is one of"),
    ("alg.horizon=abc", "bad config value"),
    ("alg.actor_config.activation_class=nn.ELU", "only nn.Mish"),
])
def test_bad_keys_and_values_are_refused_with_one_line(override, expected):
    with pytest.raises(ConfigError) as info:
        check_command_line(["env=dflex_hopper", "alg=pwm", override])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_cli_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gpuprobe_pwm.train", "alg=pwm", "+alg.max_epochs=2"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_upstream_command_line_keys_are_accepted():
    check_command_line(["env=dflex_hopper", "alg=pwm", "alg.max_epochs=3", "alg.save_interval=1",
                        "general.device=cpu", "alg.wm_buffer_size=1000", "alg.horizon=8", "alg.actor_lr=1e-4",
                        "alg.model_lr=1e-4", "alg.world_model_config.num_bins=101", "alg.obs_rms=True",
                        "general.run_wandb=False", "general.checkpoint_with_buffer=True", "general.eval_runs=4",
                        "general.train=True", "general.seed=3", "env.config.num_envs=16", "wandb.project=x",
                        "wandb.entity=y", "wandb.group=z", "env.config.termination_height=-0.4"])


# ---- upstream's own files: every key of theirs exists in ours, with their value ---------------
# Not carried over, on purpose (docs/TRAINER.md): Hydra's instantiate targets, the multitask
# world-model keys and pwm_5M's `planning`, which PWM.__init__ rejects.
DROPPED = ("_target_", "_recursive_", "task_dim", "multitask", "action_dims", "tasks", "planning")


def upstream_yaml(member: str) -> dict:
    if not UPSTREAM_PWM.is_file():
        pytest.skip(f"upstream PWM's source is not at {UPSTREAM_PWM}")
    with tarfile.open(UPSTREAM_PWM) as tar:
        return yaml.safe_load(tar.extractfile(f"PWM/scripts/cfg/{member}").read())


def leaves(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", ["pwm", "pwm_5M", "pwm_19M", "pwm_48M", "pwm_317M"])
def test_alg_configs_hold_upstreams_keys_and_values(name):
    theirs = leaves(upstream_yaml(f"alg/{name}.yaml"))
    ours = leaves(yaml.safe_load(yaml.safe_dump(  # resolved, as plain YAML types
        __import__("omegaconf").OmegaConf.to_container(compose_config([f"alg={name}"]).alg, resolve=True))))
    for key, value in theirs.items():
        assert key in ours, key
        if value == "${horizon}":
            value = 16  # config_mt30.yaml's horizon, what upstream evidently means
        if key == "device":
            continue  # ${general.device}, resolved
        if isinstance(value, str) and not isinstance(ours[key], str):
            value = type(ours[key])(value.replace("_", ""))  # 5e-4 is a string to PyYAML
        assert ours[key] == value, (key, ours[key], value)


def test_general_and_wandb_hold_upstreams_keys():
    theirs = upstream_yaml("config.yaml")
    ours = known_keys(__import__("omegaconf").OmegaConf.to_container(compose_config([]), resolve=False))
    for section in ("general", "wandb"):
        for key in theirs[section]:
            assert f"{section}.{key}" in ours, f"{section}.{key}"


def test_an_upstream_format_checkpoint_is_evaluated_with_train_false(tmp_path):
    """A file in upstream PWM.save's format (written by save_upstream_checkpoint, which upstream's
    PWM.load reads; i16-ckpt's tests check that against upstream's own code) evaluates with
    general.train=false, the file deciding which normalisers exist, as upstream's PWM.load does."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from gpuprobe_pwm.agent_upstream import UpstreamAgent
    from gpuprobe_pwm.settings import agent_config
    from gpuprobe_pwm.upstream import is_upstream_checkpoint, save_upstream_checkpoint

    alg = OmegaConf.to_container(compose_config(TINY).alg, resolve=True)
    agent = UpstreamAgent(5, 1, agent_config(alg), "cpu")  # cartpole_swingup: obs 5, act 1
    with torch.no_grad():
        agent.actor.logstd.fill_(-1.2)  # a mark to find after the round trip
    path = save_upstream_checkpoint(SimpleNamespace(
        world_model=agent.world_model, actor=agent.actor, critic=agent.critic, obs_rms=None,
        rew_rms=agent.rew_rms, ret_rms=agent.ret_rms, actor_opt=agent.actor_opt, critic_opt=agent.critic_opt,
        world_model_opt=agent.world_model_opt), tmp_path / "PWM_iter100_rew5.pt")
    assert is_upstream_checkpoint(path)
    code, run_dir = run_tiny(tmp_path, f"general.checkpoint={path}", "general.train=false", "alg.obs_rms=true")
    assert code == 0
    records = runs.read_metrics(run_dir / "metrics.jsonl")
    assert len(records) == 1 and records[0]["evaluation_only"] and "eval/return" in records[0]
    # refused, in one line, by the bundled variant (another network layout)
    code, _ = run_tiny(tmp_path, f"general.checkpoint={path}", "general.train=false", "alg=bundled_tiny")
    assert code == 1


def test_sigterm_in_the_upstream_loop_saves_latest_and_exits_143(tmp_path):
    import json
    import os
    import signal

    cmd = [sys.executable, "-m", "gpuprobe_pwm.train", *TINY, "alg.max_epochs=100000", "alg.save_interval=100000",
           f"general.logdir={tmp_path / 'logs'}", "general.preflight=off"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        metrics = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = [p for p in (tmp_path / "logs").glob(f"{NAME}_2*/metrics.jsonl") if p.stat().st_size > 0]
            if found:
                metrics = found[0]
                break
            time.sleep(0.1)
        assert metrics is not None, proc.stdout.read().decode() if proc.poll() is not None else "no metrics in 120 s"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 143, out.decode()[-2000:]
    state = torch.load(metrics.parent / "latest_checkpoint.pt", weights_only=False)
    assert state["iteration"] >= 1 and state["config"]["alg"]["variant"] == "upstream"
    assert json.loads((metrics.parent / "run.json").read_text())["status"] == "preempted"
