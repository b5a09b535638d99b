"""The dflex adapter against the real DiffRL dflex: upstream's arguments, the step contract,
gradients cut on the collection path and kept (then cut by reset(grads=True)) on a differentiable one."""

from __future__ import annotations

import inspect
import tarfile

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from gpuprobe_pwm.envs import DFLEX_ENVS, make_env
from gpuprobe_pwm.envs.dflex_adapter import constructor_kwargs, env_class
from gpuprobe_pwm.settings import env_settings
from gpuprobe_pwm.train import compose_config
from tests.conftest import UPSTREAM_PWM

# upstream's config file for each env the bundled trainer names after it
UPSTREAM_FILES = {name: f"PWM/scripts/cfg/env/{name}.yaml" for name in DFLEX_ENVS}


def upstream_env_config(name: str) -> dict:
    """``env.config`` of upstream's scripts/cfg/env/<name>.yaml, resolved as train_dflex.py does for
    PWM on the CPU: render from general.render (False), device from general.device, no_grad=True."""
    if not UPSTREAM_PWM.is_file():
        pytest.skip(f"upstream PWM's source is not at {UPSTREAM_PWM}")
    with tarfile.open(UPSTREAM_PWM) as tar:
        config = yaml.safe_load(tar.extractfile(UPSTREAM_FILES[name]).read())["config"]
    assert config.pop("render") == "${general.render}" and config.pop("device") == "${general.device}"
    target = config.pop("_target_")
    config.update(render=False, device="cpu", no_grad=True)  # train_dflex.py: no_grad=True unless SHAC/AHAC
    return {"_target_": target, **config}


def adapter_kwargs(name: str, num_envs: int | None = None) -> dict:
    env = env_settings(OmegaConf.to_container(compose_config([f"env={name}", "general.device=cpu"]),
                                              resolve=True)["env"])
    return constructor_kwargs(name, num_envs or env.num_envs, "cpu", env.episode_length,
                              env.stochastic_init, env.options)


@pytest.mark.parametrize("name", sorted(DFLEX_ENVS))
def test_each_config_passes_exactly_upstreams_arguments(name):
    upstream = upstream_env_config(name)
    module, cls = DFLEX_ENVS[name].class_path.split(":")
    assert upstream.pop("_target_") == f"{module}.{cls}"
    ours = adapter_kwargs(name)
    # numbers as upstream's YAML parses them (e.g. 5e-3 is a string to PyYAML, a float to OmegaConf)
    assert {k: type(ours[k])(v) if isinstance(v, str) and not isinstance(ours[k], str) else v
            for k, v in upstream.items()} == ours


@pytest.mark.parametrize("name", sorted(DFLEX_ENVS))
def test_upstreams_arguments_fit_the_real_constructor_and_the_env_steps(name, dflex_package):
    cls = env_class(name)
    kwargs = adapter_kwargs(name, num_envs=2)
    inspect.signature(cls).bind(**kwargs)  # a TypeError here is what seed= used to cause
    assert "seed" not in inspect.signature(cls).parameters and "seed" not in kwargs
    cfg = env_settings(OmegaConf.to_container(compose_config([f"env={name}"]), resolve=True)["env"])
    env = make_env(name, 2, "cpu", seed=0, stochastic_init=True, options=cfg.options)
    spec = DFLEX_ENVS[name]
    assert (env.num_obs, env.num_acts, env.episode_length) == (spec.num_obs, spec.num_acts, spec.episode_length)
    assert env._env.num_envs == 2 and env._env.no_grad is True
    obs = env.reset()
    assert obs.shape == (2, spec.num_obs) and not obs.requires_grad
    obs, rew, done, info = env.step(torch.rand(2, spec.num_acts) * 2 - 1)
    assert obs.shape == (2, spec.num_obs) and rew.shape == (2,) and done.dtype == torch.bool
    assert set(info) >= {"obs_before_reset", "termination", "truncation", "primal"}
    for key in ("obs_before_reset", "termination", "truncation", "primal"):
        assert info[key].shape[0] == 2 and info[key].grad_fn is None, key


def test_collection_path_returns_plain_tensors_and_grows_no_graph(dflex_package):
    """DiffRL's obs and rewards carry autograd history even with no_grad=True (its state tensors
    require grad); the adapter's collection path must hand the Buffer plain tensors."""
    from dflex.envs import HopperEnv

    raw = HopperEnv(num_envs=4, device="cpu", no_grad=True, stochastic_init=True)
    raw.reset()
    raw_obs, raw_rew, _, _ = raw.step(torch.zeros(4, 3))
    assert raw_obs.grad_fn is not None and raw_rew.grad_fn is not None  # what the adapter must cut

    env = make_env("dflex_hopper", 4, "cpu", stochastic_init=True)
    env.reset()
    for _ in range(40):  # long enough for early terminations and auto-resets
        obs, rew, done, info = env.step(torch.rand(4, 3) * 2 - 1)
        tensors = [obs, rew, done, *info.values()]
        assert all(t.grad_fn is None and not t.requires_grad for t in tensors)
    assert torch.isfinite(obs).all()


def test_differentiable_env_keeps_the_action_gradient_and_reset_grads_cuts_it(dflex_package):
    from gpuprobe_pwm.envs.dflex_adapter import make_dflex_env

    env = make_dflex_env("dflex_hopper", 4, "cpu", stochastic_init=False, differentiable=True)
    assert env._env.no_grad is False
    env.reset()
    first = (torch.rand(4, 3) * 2 - 1).requires_grad_()
    env.step(first)
    second = (torch.rand(4, 3) * 2 - 1).requires_grad_()
    obs, rew, _done, _info = env.step(second)
    (rew.sum() + obs.sum()).backward()
    assert second.grad.abs().sum() > 0
    assert first.grad is not None and first.grad.abs().sum() > 0  # through the simulated dynamics

    first.grad = None
    obs = env.reset(grads=True)
    assert obs.grad_fn is None  # the states are kept, the graph behind them is gone
    third = (torch.rand(4, 3) * 2 - 1).requires_grad_()
    obs, rew, _done, _info = env.step(third)
    (rew.sum() + obs.sum()).backward()
    assert third.grad.abs().sum() > 0 and first.grad is None


def test_resets_follow_torchs_global_seed_as_upstream(dflex_package):
    """DiffRL draws its stochastic resets from torch's global RNG: the trainer seeds it once."""
    def first_obs(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        env = make_env("dflex_hopper", 3, "cpu", seed=seed, stochastic_init=True)
        env.reset()
        return env.step(torch.zeros(3, 3))[0]

    assert torch.equal(first_obs(5), first_obs(5))
    assert not torch.equal(first_obs(5), first_obs(6))
