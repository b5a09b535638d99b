"""The gymnasium adapter: dflex's step contract on top of a gymnasium vector env."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from gpuprobe_pwm import runs
from gpuprobe_pwm.envs import EnvUnavailable, make_env
from gpuprobe_pwm.train import compose_config, resolve_config, run

gym = pytest.importorskip("gymnasium", reason="gymnasium is the [gym] extra (also in [test])")


def test_contract_matches_a_plain_gymnasium_env_step_for_step():
    env = make_env("gym:Pendulum-v1", 3, seed=7, episode_length=5)
    assert (env.num_envs, env.num_obs, env.num_acts, env.episode_length) == (3, 3, 1, 5)
    reference = gym.make("Pendulum-v1", max_episode_steps=5)
    ref_obs, _ = reference.reset(seed=7)  # SyncVectorEnv seeds copy i with seed + i
    obs = env.reset()
    assert obs.dtype == torch.float32 and obs.shape == (3, 3)
    np.testing.assert_allclose(obs[0].numpy(), ref_obs, rtol=1e-6)
    for t in range(5):
        # Our actions live in [-1, 1]; Pendulum's torque in [-2, 2]: 0.5 must arrive as 1.0.
        obs, rew, done, info = env.step(torch.full((3, 1), 0.5))
        ref_obs, ref_rew, term, trunc, _ = reference.step(np.array([1.0], dtype=np.float32))
        assert rew.shape == (3,) and rew.dtype == torch.float32 and done.dtype == torch.bool
        assert rew[0].item() == pytest.approx(float(ref_rew), rel=1e-5)
        np.testing.assert_allclose(info["obs_before_reset"][0].numpy(), ref_obs, rtol=1e-5)
        if t < 4:
            assert not done.any() and torch.equal(obs, info["obs_before_reset"])
    # The 5th step ends every episode by the time limit: reset in the same step, as dflex does.
    assert done.all() and info["truncation"].all() and not info["termination"].any()
    assert trunc and not term
    assert not torch.allclose(obs, info["obs_before_reset"])  # obs is already the new episode's
    assert torch.equal(info["primal"], rew)  # one reward, no separate task term
    assert torch.equal(env.reset(grads=True), obs)  # DiffRL's "continue from here": nothing is reset


def test_discrete_actions_and_unknown_ids_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="Box"):
        make_env("gym:CartPole-v1", 2)
    with pytest.raises(EnvUnavailable, match="gym:NoSuchEnv-v0"):
        make_env("gym:NoSuchEnv-v0", 2)


def test_without_gymnasium_the_error_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gymnasium" else real(name, *a))
    with pytest.raises(EnvUnavailable, match=r"pip install 'gymnasium"):
        make_env("gym:Pendulum-v1", 2)


def test_trainer_runs_a_gymnasium_env_end_to_end(tmp_path):
    overrides = ["alg=pwm_tiny", "env=gym_pendulum", "env.config.num_envs=4", "env.config.episode_length=16",
                 "alg.max_epochs=6", "general.eval_runs=2", "general.device=cpu",  # H=4: episodes end in epoch 4
                 f"general.logdir={tmp_path / 'runs'}"]
    rc = resolve_config(compose_config(overrides), tmp_path, ["gpuprobe_pwm.train", *overrides])
    assert run(rc) == 0
    run_dir = runs.find_run(rc.logdir, "pwm_tiny_gym_Pendulum-v1_seed42")
    assert (run_dir / "final_policy.pt").is_file() and (run_dir / "final_policy.buffer").is_file()
    records = runs.read_metrics(run_dir / "metrics.jsonl")
    assert any("wm/loss" in r for r in records)  # episodes reached the buffer and were trained on
    final = next(r for r in records if r.get("final"))
    assert np.isfinite(final["eval/return"])
