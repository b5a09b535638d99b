from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpuprobe_pwm import runs
from gpuprobe_pwm.agent import PWMAgent
from gpuprobe_pwm.envs import make_env
from gpuprobe_pwm.train import agent_config, compose_config, resolve_config, run
from gpuprobe_pwm.trainer import evaluate

REPO = Path(__file__).resolve().parents[2]
NAME = "bundled_tiny_cartpole_swingup_seed42"
# 8 env steps per epoch, 16-step episodes: an episode ends every second epoch.
TINY = ["alg=bundled_tiny", "env=cartpole_swingup", "env.config.num_envs=4", "env.config.episode_length=16",
        "alg.max_epochs=4", "general.eval_runs=2", "alg.save_interval=2", "general.device=cpu"]


def run_tiny(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    cfg = compose_config([*TINY, f"general.logdir={tmp_path / 'runs'}", *extra])
    rc = resolve_config(cfg, tmp_path, ["gpuprobe_pwm.train", *extra])
    code = run(rc)
    return code, runs.find_run(rc.logdir, NAME)


def test_short_run_writes_exactly_the_checkpoint_set(tmp_path):
    code, run_dir = run_tiny(tmp_path)
    assert code == 0
    assert run_dir.name.startswith(NAME + "_") and run_dir.parent == (tmp_path / "runs").resolve()
    checkpoints = sorted(p.name for p in run_dir.iterdir() if p.suffix in (".pt", ".buffer"))
    assert checkpoints == ["best_policy.pt", "final_policy.buffer", "final_policy.pt",
                           "init_policy.pt", "latest_checkpoint.pt"]
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    state = torch.load(run_dir / "final_policy.pt", weights_only=False)
    for key in ("actor", "critic", "world_model", "obs_rms", "rew_rms", "ret_rms", "actor_opt",
                "critic_opt", "world_model_opt", "iteration", "rng", "config"):
        assert key in state
    assert state["iteration"] == 4
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and "git_commit" in meta
    assert meta["config"]["alg"]["name"] == "bundled_tiny"
    assert {"hostname", "python", "torch", "device_name"} <= set(meta["fingerprint"])
    assert all(Path(p).is_absolute() for p in meta["paths"].values() if p)
    records = runs.read_metrics(run_dir / "metrics.jsonl")
    assert [r["iteration"] for r in records if not r.get("final")] == [1, 2, 3, 4]
    index = json.loads((tmp_path / "runs" / "index.json").read_text())
    assert index["runs"][-1]["path"] == str(run_dir)
    assert runs.latest_link(tmp_path / "runs", NAME).resolve() == run_dir


def test_evaluation_after_full_run(tmp_path):
    code, run_dir = run_tiny(tmp_path)
    assert code == 0
    final = next(r for r in runs.read_metrics(run_dir / "metrics.jsonl") if r.get("final"))
    assert isinstance(final["eval/return"], float)
    # And from the saved policy, as a user evaluating a finished run would.
    state = torch.load(run_dir / "final_policy.pt", weights_only=False)
    env = make_env("cartpole_swingup", 3, "cpu", seed=5, episode_length=16)
    agent = PWMAgent(env.num_obs, env.num_acts, agent_config(state["config"]["alg"]), "cpu")
    agent.load_state_dict(state)
    result = evaluate(agent, env)
    assert set(result) == {"eval/return", "eval/return_std", "eval/wm_reward_mae"}
    assert all(torch.isfinite(torch.tensor(v)) for v in result.values())


def test_training_envs_use_config_stochastic_init_and_eval_env_never(tmp_path, monkeypatch):
    import gpuprobe_pwm.envs

    built = []

    def recording_make_env(*args, **kwargs):
        env = make_env(*args, **kwargs)
        built.append(env)
        return env

    monkeypatch.setattr(gpuprobe_pwm.envs, "make_env", recording_make_env)
    code, _ = run_tiny(tmp_path, "alg.max_epochs=1")
    assert code == 0
    train_env, eval_env = built
    assert train_env.num_envs == 4 and eval_env.num_envs == 2
    # env/cartpole_swingup.yaml sets stochastic_init: true, as PWM's dflex configs do.
    assert train_env.stochastic_init is True
    assert eval_env.stochastic_init is False
    assert (eval_env.reset()[:, 1] < -0.99).all(), "evaluation must start hanging down"


def test_resume_continues_iteration_and_restores_optimizers(tmp_path):
    warmup = "alg.bundled.wm_warmup_iterations=3"
    code, first = run_tiny(tmp_path, warmup)
    assert code == 0
    saved = torch.load(first / "latest_checkpoint.pt", weights_only=False)
    step = lambda s: int(s["world_model_opt"]["state"][0]["step"])
    first_records = [r for r in runs.read_metrics(first / "metrics.jsonl") if not r.get("final")]
    assert step(saved) == sum(1 for r in first_records if "wm/loss" in r) * 2 + 3  # incl. the warm-up
    time.sleep(1.0)  # a new run directory (names have one-second resolution; a clash gets a suffix)
    code, second = run_tiny(tmp_path, f"general.checkpoint={first / 'latest_checkpoint.pt'}",
                            "alg.max_epochs=8", warmup)
    assert code == 0 and second != first
    records = [r for r in runs.read_metrics(second / "metrics.jsonl") if not r.get("final")]
    assert [r["iteration"] for r in records] == [5, 6, 7, 8]
    # The replay buffer came back with the checkpoint: epoch 5 completes no new episode
    # (16-step episodes, 8 steps per epoch, fresh envs), so it holds exactly the saved rows.
    saved_rows = sum(saved["buffer"]["episode_rows"])
    assert saved_rows > 0 and records[0]["buffer_size"] == saved_rows
    resumed = torch.load(second / "final_policy.pt", weights_only=False)
    assert resumed["iteration"] == 8
    wm_updates = sum(1 for r in records if "wm/loss" in r) * 2  # bundled_tiny: 2 wm iterations
    assert wm_updates > 0
    # Adam continued, not restarted, and the world model's warm-up did not run a second time.
    assert step(resumed) == step(saved) + wm_updates
    assert not (second / "init_policy.pt").exists()  # a resumed run has no fresh init policy


def test_resume_without_buffer_refills_from_scratch(tmp_path):
    code, first = run_tiny(tmp_path, "general.save_buffer=false")
    assert code == 0
    assert "buffer" not in torch.load(first / "latest_checkpoint.pt", weights_only=False)
    time.sleep(1.0)
    code, second = run_tiny(tmp_path, f"general.checkpoint={first / 'latest_checkpoint.pt'}", "alg.max_epochs=6")
    assert code == 0
    records = [r for r in runs.read_metrics(second / "metrics.jsonl") if not r.get("final")]
    assert [(r["iteration"], r["buffer_size"]) for r in records][0] == (5, 0)


def test_sigterm_saves_latest_checkpoint_and_exits_nonzero(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cmd = [sys.executable, "-m", "gpuprobe_pwm.train", *TINY, "alg.max_epochs=100000", "alg.save_interval=100000",
           "general.logdir=logs"]  # relative: must resolve against the cwd at start-up
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        metrics = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((work / "logs").glob(f"{NAME}_2*/metrics.jsonl"))
            if found and found[0].stat().st_size > 0:
                metrics = found[0]
                break
            time.sleep(0.1)
        assert metrics is not None, proc.stdout.read().decode() if proc.poll() is not None else "no metrics in 60 s"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 143, out.decode()[-2000:]
    run_dir = metrics.parent
    state = torch.load(run_dir / "latest_checkpoint.pt", weights_only=False)
    assert state["iteration"] >= 1
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"
    assert not (work / "outputs").exists() and not (work / ".hydra").exists()  # Hydra wrote nothing in the cwd
    # The pre-empted run resumes from what SIGTERM saved and continues its count.
    stopped_at = int(state["iteration"])
    code, resumed = run_tiny(tmp_path, f"general.checkpoint={run_dir / 'latest_checkpoint.pt'}",
                             f"alg.max_epochs={stopped_at + 2}")
    assert code == 0 and resumed != run_dir
    records = [r for r in runs.read_metrics(resumed / "metrics.jsonl") if not r.get("final")]
    assert [r["iteration"] for r in records] == [stopped_at + 1, stopped_at + 2]
    assert torch.load(resumed / "final_policy.pt", weights_only=False)["iteration"] == stopped_at + 2


def test_paths_resolved_at_start(tmp_path, monkeypatch):
    cfg = compose_config(TINY)
    rc = resolve_config(cfg, tmp_path)
    root = runs.repo_root()
    expected = (root / "runs") if root is not None else (tmp_path / "runs")
    assert rc.logdir == expected.resolve() and rc.logdir.is_absolute()
    monkeypatch.chdir(tmp_path)  # a later chdir (Hydra, job scripts) changes nothing
    assert resolve_config(cfg, tmp_path).logdir == rc.logdir
    rel = resolve_config(compose_config([*TINY, "general.logdir=out/logs", "general.checkpoint=x.pt"]), tmp_path)
    assert rel.logdir == (tmp_path / "out" / "logs").resolve()
    assert rel.checkpoint == (tmp_path / "x.pt").resolve()
    assert resolve_config(compose_config([*TINY, "alg.max_epochs=7"]), tmp_path).config["alg"]["max_epochs"] == 7


def test_metadata_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(runs.subprocess, "run", no_git)
    assert runs.git_commit(REPO) is None
    assert runs.git_commit(None) is None
    fp = runs.node_fingerprint("cpu")
    assert fp.device == "cpu" and fp.torch == torch.__version__


def test_find_run_through_index_without_link(tmp_path):
    logdir = tmp_path / "logs"
    a = runs.make_run_dir(logdir, "pwm_5M_pendulum_seed1", now=0)
    b = runs.make_run_dir(logdir, "pwm_5M_pendulum_seed1", now=0)  # same second: suffixed
    assert a != b and b.name.endswith("-1")
    runs.register_run(logdir, a, "pwm_5M_pendulum_seed1")
    runs.register_run(logdir, b, "pwm_5M_pendulum_seed1")
    assert runs.find_run(logdir, "pwm_5M_pendulum_seed1") == b
    runs.latest_link(logdir, "pwm_5M_pendulum_seed1").unlink()
    assert runs.find_run(logdir, "pwm_5M_pendulum_seed1") == b
    with pytest.raises(FileNotFoundError):
        runs.find_run(logdir, "nothing_here")


def test_time_limit_finishes_normally(tmp_path):
    code, run_dir = run_tiny(tmp_path, "alg.max_epochs=1000", "general.time_limit_minutes=0.00001")
    assert code == 0
    state = torch.load(run_dir / "final_policy.pt", weights_only=False)
    assert state["iteration"] < 1000
    assert (run_dir / "final_policy.buffer").is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


class _EarlyEndEnv:
    """Three envs whose episodes end after 3, 6 and 3 steps; obs = [step in episode, env id]."""

    num_envs, num_obs, num_acts, episode_length, device = 3, 2, 1, 6, torch.device("cpu")
    lengths = torch.tensor([3, 6, 3])

    def __init__(self) -> None:
        self.t = torch.zeros(3, dtype=torch.long)

    def _obs(self) -> torch.Tensor:
        return torch.stack([self.t.float(), torch.arange(3.0)], dim=1)

    def reset(self) -> torch.Tensor:
        self.t.zero_()
        return self._obs()

    def step(self, act):
        self.t += 1
        rew = self.t.float() * 10 + torch.arange(3.0)
        done = self.t >= self.lengths
        before = self._obs()
        self.t[done] = 0
        return self._obs(), rew, done, {"obs_before_reset": before, "termination": done, "truncation": done & False}


class _RecordingBuffer:
    def __init__(self) -> None:
        self.adds: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, obs, act, rew) -> None:
        self.adds.append((obs, act, rew))


def test_collector_pushes_early_terminated_episodes_grouped_by_length():
    from gpuprobe_pwm.agent import AgentConfig
    from gpuprobe_pwm.models import ModelConfig
    from gpuprobe_pwm.trainer import EpisodeCollector

    model = ModelConfig(latent_dim=8, encoder_dims=[8], dynamics_dims=[8], reward_dims=[8],
                        actor_dims=[8], critic_dims=[8])
    agent = PWMAgent(2, 1, AgentConfig(model=model), "cpu")
    buf = _RecordingBuffer()
    collector = EpisodeCollector(_EarlyEndEnv(), buf, agent, min_length=1)
    for _ in range(6):
        collector.step()
    # Envs 0 and 2 end at steps 3 and 6 (length 3, one add of two episodes each time); env 1 ends
    # at step 6 with length 6, a separate add in the same step.
    shapes = [(o.shape[0] - 1, o.shape[1]) for o, _, _ in buf.adds]
    assert shapes == [(3, 2), (3, 2), (6, 1)]  # (length, episodes)
    for obs, act, rew in buf.adds:
        length, n = obs.shape[0] - 1, obs.shape[1]
        for k in range(n):
            env_id = obs[0, k, 1]
            assert torch.equal(obs[:, k, 0], torch.arange(length + 1.0))  # terminal obs from obs_before_reset
            assert torch.equal(rew[:, k], torch.arange(1.0, length + 1) * 10 + env_id)
        assert act.shape == (length, n, 1)
    assert collector.episodes == 5 and len(collector.episode_returns) == 5
