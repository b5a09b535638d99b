"""gpuprobe_pwm.envs: the VecEnv contract, determinism, auto-reset, the swing-up yardstick, dflex's absence."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from gpuprobe_pwm.envs import (
    DFLEX_ENVS,
    ENV_NAMES,
    TORCH_ENV_NAMES,
    EnvUnavailable,
    dflex_status,
    make_env,
    reference_return,
    scripted_swingup_controller,
)

SIZES = {"cartpole_swingup": (5, 1), "pendulum": (3, 1), "double_pendulum": (6, 1)}


def random_actions(n: int, acts: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, acts, generator=g) * 2 - 1


@pytest.mark.parametrize("name", TORCH_ENV_NAMES)
def test_step_contract(name: str) -> None:
    env = make_env(name, num_envs=8, seed=0)
    assert (env.num_obs, env.num_acts) == SIZES[name] and env.name == name
    obs = env.reset()
    assert obs.shape == (8, env.num_obs) and obs.dtype == torch.float32
    obs, rew, done, info = env.step(random_actions(8, env.num_acts, 0))
    assert obs.shape == (8, env.num_obs) and obs.dtype == torch.float32
    assert rew.shape == (8,) and rew.dtype == torch.float32
    assert done.shape == (8,) and done.dtype == torch.bool
    assert set(info) >= {"termination", "truncation", "obs_before_reset"}
    assert info["obs_before_reset"].shape == obs.shape
    assert info["termination"].dtype == info["truncation"].dtype == torch.bool
    assert ((rew >= 0) & (rew <= 1)).all()


@pytest.mark.parametrize("name", TORCH_ENV_NAMES)
def test_upstream_loop_interface_primal_and_reset_grads(name: str) -> None:
    """What upstream PWM's loop takes from a DiffRL env, the bundled envs offer too."""
    env = make_env(name, 3, seed=2, stochastic_init=True)
    env.reset()
    obs, rew, done, info = env.step(torch.rand(3, env.num_acts) * 2 - 1)
    assert set(info) == {"termination", "truncation", "obs_before_reset", "primal"}
    assert info["primal"].shape == rew.shape and info["primal"].grad_fn is None
    assert torch.all(info["primal"] >= rew - 1e-6)  # the task term before the shaping factors (in [0, 1])
    # a differentiable rollout: actions that require grad put the state on the tape ...
    obs, rew, done, info = env.step((torch.rand(3, env.num_acts) * 2 - 1).requires_grad_())
    assert obs.grad_fn is not None and env.state.grad_fn is not None
    # ... and reset(grads=True) keeps the states and cuts the graph, as DiffRL's does
    cut = env.reset(grads=True)
    assert cut.grad_fn is None and env.state.grad_fn is None
    assert torch.allclose(cut, obs.detach()) and env.progress.tolist() == [2, 2, 2]


@pytest.mark.parametrize("name", TORCH_ENV_NAMES)
def test_same_seed_same_trajectory(name: str) -> None:
    def rollout(seed: int) -> torch.Tensor:
        env = make_env(name, num_envs=16, seed=seed, episode_length=10)
        out = [env.reset()]
        for i in range(25):  # crosses two auto-resets, which draw from the env's generator
            out.append(env.step(random_actions(16, env.num_acts, i))[0])
        return torch.stack(out)

    assert torch.equal(rollout(1), rollout(1))
    assert not torch.equal(rollout(1), rollout(2))


@pytest.mark.parametrize("name", TORCH_ENV_NAMES)
def test_auto_reset_at_episode_length(name: str) -> None:
    env = make_env(name, num_envs=4, seed=0, episode_length=5)
    first = env.reset()
    for step in range(1, 11):
        obs, _, done, info = env.step(torch.ones(4, env.num_acts))
        finished = step % 5 == 0
        assert bool(done.all()) is finished and bool(done.any()) is finished
        assert torch.equal(info["truncation"], done) and not info["termination"].any()
        if finished:  # the returned obs starts a new episode; the old end is kept in info
            assert not torch.equal(obs, info["obs_before_reset"])
            assert torch.allclose(obs, first, atol=0.2)
        else:
            assert torch.equal(obs, info["obs_before_reset"])


def test_actions_are_clipped_to_unit_range() -> None:
    a, b = make_env("cartpole_swingup", 4, seed=0), make_env("cartpole_swingup", 4, seed=0)
    a.reset(), b.reset()
    assert torch.equal(a.step(torch.full((4, 1), 50.0))[0], b.step(torch.ones(4, 1))[0])


def test_unknown_env_name() -> None:
    with pytest.raises(ValueError, match="cartpole_swingup"):
        make_env("cartpol", 1)


# -- stochastic_init (training starts) ---------------------------------------------------------


def pole_angles(obs: torch.Tensor) -> torch.Tensor:
    """Pole angle from upright, from cart-pole obs [x, cos, sin, x_dot, theta_dot]."""
    return torch.atan2(obs[:, 2], obs[:, 1])


def test_stochastic_init_spreads_training_resets_over_the_circle() -> None:
    env = make_env("cartpole_swingup", 512, seed=0, episode_length=3, stochastic_init=True)
    starts = [env.reset()]
    for _ in range(2):  # two auto-resets: every reset is spread, not only the first one
        for _ in range(3):
            obs, _, done, _ = env.step(torch.zeros(512, 1))
        assert done.all()
        starts.append(obs)
    for obs in starts:
        theta = pole_angles(obs)
        assert (obs[:, 1] > 0.9).float().mean() > 0.05, "no near-upright starts"
        assert (obs[:, 1] < -0.9).float().mean() > 0.05, "no near-hanging starts"
        counts = torch.histc(theta, bins=8, min=-torch.pi, max=torch.pi)
        assert counts.min() > 0.5 * 512 / 8, "pole angle is not spread over the whole circle"
        assert obs[:, 0].abs().max() <= 1.0 + 1e-6, "cart starts more than a third of the track out"
    assert not torch.equal(starts[1], starts[2])


def test_default_start_is_unchanged_hanging_down() -> None:
    env = make_env("cartpole_swingup", 256, seed=0)
    assert env.stochastic_init is False
    obs = env.reset()
    assert (obs[:, 1] < -0.99).all(), "the default start must hang down"
    assert obs[:, 0].abs().max() <= 0.05 and obs[:, 3:].abs().max() <= 0.05
    # Same draws as before stochastic_init existed: seed 0's first start is still pinned.
    same = make_env("cartpole_swingup", 256, seed=0, stochastic_init=False).reset()
    assert torch.equal(obs, same)


@pytest.mark.parametrize("name", ["pendulum", "double_pendulum"])
def test_pendulum_stochastic_init_reaches_upright(name: str) -> None:
    nominal = make_env(name, 256, seed=0).reset()
    spread = make_env(name, 256, seed=0, stochastic_init=True).reset()
    assert (nominal[:, 0] < -0.99).all()  # cos of the (base) angle: hanging
    assert (spread[:, 0] > 0.9).float().mean() > 0.05 and (spread[:, 0] < -0.9).float().mean() > 0.05


# -- the swing-up yardstick ----------------------------------------------------------------


def run_episode(policy, seed: int, num_envs: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-env return, final-step obs before reset) for one full cart-pole episode."""
    env = make_env("cartpole_swingup", num_envs, seed=seed)
    obs = env.reset()
    total = torch.zeros(num_envs)
    for i in range(env.episode_length):
        obs, rew, done, info = env.step(policy(obs, i))
        total += rew
    assert done.all()
    return total, info["obs_before_reset"]


@pytest.mark.parametrize("seed", [0, 11])
def test_scripted_controller_swings_up_and_balances(seed: int) -> None:
    returns, final = run_episode(lambda obs, _: scripted_swingup_controller(obs), seed)
    cos_angle, cart_x = final[:, 1], final[:, 0]
    assert (cos_angle > 0.95).float().mean() >= 0.9, "the pole is not upright at the end"
    assert cart_x.abs().max() < 1.0, "the cart drifted away from the centre"
    episode_length = make_env("cartpole_swingup", 1).episode_length
    # ~2 s of the 4.8 s episode go to the swing-up; the rest is balanced at reward ~1.
    assert returns.mean() > 0.55 * episode_length
    assert returns.min() > 0.5 * episode_length


def test_random_actions_earn_almost_nothing() -> None:
    returns, _ = run_episode(lambda obs, i: random_actions(obs.shape[0], 1, i), seed=0)
    episode_length = make_env("cartpole_swingup", 1).episode_length
    assert returns.mean() < 0.05 * episode_length
    assert reference_return() > 10 * float(returns.mean())


def test_reference_return_is_deterministic() -> None:
    assert reference_return(seed=3) == reference_return(seed=3)
    assert reference_return(episode_length=120, seed=0) < reference_return(seed=0)


# -- dflex -----------------------------------------------------------------------------------


def test_dflex_specs_match_pwm() -> None:
    ant = DFLEX_ENVS["dflex_ant"]
    assert (ant.num_obs, ant.num_acts, ant.num_envs, ant.episode_length) == (37, 8, 128, 1000)
    assert set(DFLEX_ENVS) <= set(ENV_NAMES)


def test_dflex_status_does_not_import_dflex() -> None:
    # in a fresh interpreter: other tests import the real dflex into this one
    code = ("import sys; from gpuprobe_pwm.envs import dflex_status; installed, detail = dflex_status(); "
            "assert isinstance(installed, bool) and detail; assert 'dflex' not in sys.modules, sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(dflex_status()[0], reason="dflex is installed here")
def test_dflex_env_without_dflex_says_how_to_install() -> None:
    with pytest.raises(EnvUnavailable) as err:
        make_env("dflex_ant", num_envs=2)
    message = str(err.value)
    assert "\n" not in message
    assert "pip install -e <PWM>/external/DiffRL" in message and "PYTHONPATH" in message
    assert isinstance(err.value, RuntimeError)
