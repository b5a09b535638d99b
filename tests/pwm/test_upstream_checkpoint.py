"""Upstream PWM checkpoints in and out (issue 16, item 3).

The fixtures are made by upstream's own code (imgeorgiev/PWM aa5a1d8, from the vendored tarball
in ../shared/vendor/pwm-upstream), run in a subprocess by tests/pwm/upstream_fixture.py: it
builds upstream's PWM agent from upstream's alg configs, steps it once, writes it with PWM.save
and dumps its outputs on fixed inputs; or runs PWM.load on a file we wrote. The tests that need
it skip, saying why, where the tarball or upstream's dependencies are absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gpuprobe_pwm.agent import AgentConfig, PWMAgent
from gpuprobe_pwm.checkpoint import load_checkpoint
from gpuprobe_pwm.models import ModelConfig, build_models, upstream_layout
from gpuprobe_pwm.safe_load import CheckpointError, UnsafeCheckpoint
from gpuprobe_pwm.upstream import (
    UpstreamActor,
    UpstreamAgent,
    UpstreamCritic,
    UpstreamWorldModel,
    is_upstream_checkpoint,
    load_upstream_checkpoint,
    read_upstream_checkpoint,
    save_upstream_checkpoint,
)
from gpuprobe_pwm.upstream_format import (
    actor_from_upstream,
    actor_to_upstream,
    critic_from_upstream,
    critic_to_upstream,
    wm_from_upstream,
    wm_to_upstream,
)
from tests.conftest import UPSTREAM_PWM

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARBALL = "vendor/pwm-upstream/PWM-aa5a1d8.tar.gz"   # as named in skip reasons
OBS, ACT = 11, 3  # dflex Hopper's sizes
TOL = 1e-5
# Upstream's alg configs: pwm.yaml (one reward output) and pwm_5M.yaml (101 two-hot bins), made
# single-task by the fixture script.
CONFIGS = {"pwm.yaml": 0, "pwm_5M.yaml": 101}
OUTPUTS = ("encode", "next", "reward", "reward_value", "actor_mean", "critic", "logstd")


def _tarball() -> Path | None:
    """Upstream PWM's source beside the checkout (``../shared/vendor/pwm-upstream``), if it is there."""
    return UPSTREAM_PWM if UPSTREAM_PWM.is_file() else None


@pytest.fixture(scope="module")
def upstream_env(tmp_path_factory) -> dict[str, str]:
    tarball = _tarball()
    if tarball is None:
        pytest.skip(f"upstream PWM source not found (../shared/{TARBALL}): no upstream-made fixtures")
    dest = tmp_path_factory.mktemp("pwm-upstream")
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    # Upstream imports wandb at module level; these runs never log, so a no-op module does.
    stub = dest / "stub" / "wandb"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("def init(*a, **k):\n    return None\n\n\nlog = finish = init\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUPROBE_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(dest / "PWM" / "src"), str(dest / "stub")])
    env["OMP_NUM_THREADS"] = "1"
    probe = subprocess.run([sys.executable, "-c", "import pwm.algorithms.pwm"], capture_output=True, text=True,
                           env=env, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"upstream PWM does not import here (its dependencies: hydra, torchrl, tensordict, gym): {last}")
    return env


def _upstream(env: dict[str, str], *args: str, trusted_load: bool = False) -> None:
    run_env = dict(env)
    if trusted_load:
        # Upstream's PWM.load calls torch.load(path) with torch's default, which since torch 2.6
        # is weights-only and refuses upstream's own files (their RunningMeanStd). This is how a
        # user of upstream on a current torch loads a file they trust.
        run_env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    proc = subprocess.run([sys.executable, str(HERE / "upstream_fixture.py"), *args], capture_output=True,
                          text=True, env=run_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module", params=list(CONFIGS))
def upstream_made(request, upstream_env, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param.replace(".yaml", ""))
    _upstream(upstream_env, "save", request.param, str(OBS), str(ACT), str(out))
    return request.param, out


def _ours(agent: UpstreamAgent, obs: torch.Tensor, act: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        z = agent.wm.encode(obs, None)
        reward = agent.wm.reward(z, act, None)
        return {"encode": z, "next": agent.wm.next(z, act, None), "reward": reward,
                "reward_value": agent.wm.almost_two_hot_inv(reward),
                "actor_mean": agent.actor(z, deterministic=True), "critic": agent.critic(z),
                "logstd": agent.actor.logstd.detach()}


def _max_diffs(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, float]:
    diffs = {}
    for key in OUTPUTS:
        assert ours[key].shape == theirs[key].shape, key
        if key != "logstd":  # a comparison of constants would prove nothing
            assert theirs[key].std() > 1e-2, f"{key} is (nearly) constant: {theirs[key]}"
        diffs[key] = (ours[key] - theirs[key]).abs().max().item()
    for head in range(theirs["critic"].shape[0]):
        diffs[f"critic[{head}]"] = (ours["critic"][head] - theirs["critic"][head]).abs().max().item()
    return diffs


# ---- in: upstream's PWM.save -> ours ------------------------------------------------------------------

def test_loaded_networks_reproduce_upstreams_outputs(upstream_made):
    cfg_name, out = upstream_made
    theirs = torch.load(out / "outputs.pt", weights_only=True)
    assert is_upstream_checkpoint(out / "upstream.pt")
    agent = load_upstream_checkpoint(out / "upstream.pt")
    assert agent.model.is_upstream_layout and agent.model.reward_bins == CONFIGS[cfg_name]
    assert (agent.obs_dim, agent.act_dim, agent.model.latent_dim, agent.model.num_critics) == (OBS, ACT, 512, 3)
    ours = _ours(agent, theirs["obs"], theirs["act"])
    diffs = _max_diffs(ours, theirs)
    print(f"{cfg_name}: max abs differences against upstream: {diffs}")
    assert max(diffs.values()) <= TOL, diffs
    assert ours["critic"].shape == (3, theirs["obs"].shape[0], 1)
    # The trainer's own reading of the reward is upstream's (symlog space) in the upstream layout.
    with torch.no_grad():
        z = agent.wm.module.encode(theirs["obs"])
        assert torch.allclose(agent.wm.module.predict_reward(z, theirs["act"]), theirs["reward_value"], atol=TOL)
    for name in ("obs_rms", "rew_rms", "ret_rms"):
        rms, expected = getattr(agent, name), theirs[name]
        if expected is None:
            assert rms is None
        else:
            assert torch.equal(rms.mean, expected[0]) and torch.equal(rms.var, expected[1])
            assert rms.count == pytest.approx(expected[2].item())
    # The normalisers normalise as upstream's (eps 1e-5, clipped to +-5).
    assert torch.allclose(agent.obs_rms.normalize(theirs["obs"]), theirs["obs_normalized"], atol=TOL)
    lrs = theirs["lrs"].tolist()
    assert [agent.learning_rates[k] for k in ("actor", "critic", "world_model")] == pytest.approx(lrs)


def test_the_loaded_agent_is_the_trainers_agent(upstream_made):
    """trainer_state() fits PWMAgent (built from the checkpoint's ModelConfig) and its optimisers."""
    cfg_name, out = upstream_made
    if cfg_name != "pwm.yaml":
        pytest.skip("pwm_5M.yaml runs without rew_rms: PWMAgent always has one, the wiring decides")
    loaded = load_upstream_checkpoint(out / "upstream.pt")
    agent = PWMAgent(loaded.obs_dim, loaded.act_dim, AgentConfig(model=loaded.model), "cpu")
    agent.load_state_dict(loaded.trainer_state())
    theirs = torch.load(out / "outputs.pt", weights_only=True)
    with torch.no_grad():
        z = agent.world_model.encode(theirs["obs"])
        assert (z - theirs["encode"]).abs().max() <= TOL
        assert (agent.critic(z) - theirs["critic"]).abs().max() <= TOL
        assert (agent.actor.mean(z) - theirs["actor_mean"]).abs().max() <= TOL
    # Adam's moments came along: one more step moves the weights as upstream's would continue.
    assert len(agent.actor_opt.state_dict()["state"]) == 15
    assert len(agent.critic_opt.state_dict()["state"]) == 3 * 10


def test_loading_never_imports_upstream_nor_runs_pickled_code(upstream_made, tmp_path):
    _, out = upstream_made
    with pytest.raises(CheckpointError, match="load_upstream_checkpoint"):  # the resume path points the way
        load_checkpoint(out / "upstream.pt", "cpu")
    load_upstream_checkpoint(out / "upstream.pt")
    assert not [m for m in sys.modules if m == "pwm" or m.startswith("pwm.")]
    raw = read_upstream_checkpoint(out / "upstream.pt")
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({**raw, "obs_rms": Payload()}, tmp_path / "crafted.pt")
    with pytest.raises(UnsafeCheckpoint) as caught:
        load_upstream_checkpoint(tmp_path / "crafted.pt")
    assert "\n" not in str(caught.value) and "posix.system" in str(caught.value)
    assert not marker.exists()


# ---- out: ours -> upstream's PWM.load -----------------------------------------------------------------

def _trainer_agent(bins: int) -> PWMAgent:
    torch.manual_seed(5)
    agent = PWMAgent(OBS, ACT, AgentConfig(model=upstream_layout(ModelConfig(reward_bins=bins))), "cpu")
    obs, act = torch.randn(40, OBS) * 2 + 1, torch.rand(40, ACT) * 2 - 1
    agent.obs_rms.update(obs)
    agent.rew_rms.update(torch.randn(40) * 3)
    agent.ret_rms.update(torch.randn(40) * 20)
    z = agent.world_model.encode(obs)
    loss = (agent.world_model.step_head(z, act)[1].pow(2).sum() + agent.world_model.next(z, act).pow(2).sum()
            + agent.critic(z.detach()).pow(2).sum() + (agent.actor(z.detach()) - 0.5).pow(2).sum())
    loss.backward()
    for opt in (agent.actor_opt, agent.critic_opt, agent.world_model_opt):
        opt.step()
    with torch.no_grad():  # the zero-initialised reward head gets no gradient from a zero output
        for p in agent.world_model.reward[-1].parameters():
            p.normal_(0.0, 0.05)
    agent.set_progress(0.25)
    return agent


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_upstreams_pwm_load_reads_what_we_write(cfg_name, upstream_env, tmp_path):
    agent = _trainer_agent(CONFIGS[cfg_name])
    path = save_upstream_checkpoint(agent, tmp_path / "ours.pt")
    assert is_upstream_checkpoint(path)
    inputs = {"obs": torch.randn(7, OBS) * 2, "act": torch.rand(7, ACT) * 2 - 1}
    torch.save(inputs, tmp_path / "inputs.pt")
    _upstream(upstream_env, "load", cfg_name, str(OBS), str(ACT), str(path), str(tmp_path / "inputs.pt"),
              str(tmp_path / "theirs.pt"), trusted_load=True)
    theirs = torch.load(tmp_path / "theirs.pt", weights_only=True)
    # The trainer's own networks, behind upstream's call signatures.
    view = UpstreamAgent(wm=UpstreamWorldModel(agent.world_model), actor=UpstreamActor(agent.actor),
                         critic=UpstreamCritic(agent.critic), model=agent.cfg.model, obs_dim=OBS, act_dim=ACT)
    diffs = _max_diffs(_ours(view, inputs["obs"], inputs["act"]), theirs)
    print(f"{cfg_name}: upstream's PWM.load on our file, max abs differences: {diffs}")
    assert max(diffs.values()) <= TOL, diffs
    assert torch.allclose(theirs["obs_rms"][0], agent.obs_rms.mean.float())
    assert torch.allclose(theirs["ret_rms"][1], agent.ret_rms.var.float().reshape(1))
    expected_lrs = [opt.param_groups[0]["lr"] for opt in (agent.actor_opt, agent.critic_opt, agent.world_model_opt)]
    assert theirs["lrs"].tolist() == pytest.approx(expected_lrs)


# ---- without upstream: the format conversions ---------------------------------------------------------

def test_key_conversions_round_trip_and_use_upstreams_names():
    cfg = upstream_layout(ModelConfig(latent_dim=16, encoder_dims=[8], dynamics_dims=[8, 8], reward_dims=[8],
                                      actor_dims=[8, 8, 8], critic_dims=[8, 8], reward_bins=101))
    wm, actor, critic, _ = build_models(5, 2, cfg, "cpu")
    up_wm, up_actor, up_critic = (wm_to_upstream(wm.state_dict()), actor_to_upstream(actor.state_dict()),
                                  critic_to_upstream(critic.state_dict()))
    assert {"_encoder.0.ln.weight", "_encoder.1.weight", "_dynamics.2.ln.bias", "_reward.1.weight"} <= set(up_wm)
    assert {"logstd", "mu_net.0.weight", "mu_net.2.weight", "mu_net.8.bias", "mu_net.9.weight"} <= set(up_actor)
    assert "mu_net.1.weight" not in up_actor  # index 1 is the Mish
    assert sorted(up_critic) == sorted(f"params.{j}" for j in range(10)) and up_critic["params.0"].shape == (3, 8, 16)
    for ours, back in ((wm.state_dict(), wm_from_upstream(up_wm)), (actor.state_dict(), actor_from_upstream(up_actor)),
                       (critic.state_dict(), critic_from_upstream(up_critic))):
        assert list(ours) == list(back) and all(torch.equal(ours[k], back[k]) for k in ours)


def test_save_refuses_the_bundled_layout_and_load_refuses_other_files(tmp_path):
    bundled = SimpleNamespace(**dict(zip(("world_model", "actor", "critic"),
                                         build_models(5, 2, ModelConfig(latent_dim=16), "cpu")[:3])))
    with pytest.raises(ValueError, match="mish_ln"):
        save_upstream_checkpoint(bundled, tmp_path / "x.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert not is_upstream_checkpoint(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    assert not is_upstream_checkpoint(tmp_path / "text.pt")
    for path in (tmp_path / "other.pt", tmp_path / "text.pt", tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError) as caught:
            load_upstream_checkpoint(path)
        assert "\n" not in str(caught.value)


def test_our_written_file_loads_back_exactly_without_upstream(tmp_path):
    agent = _trainer_agent(101)
    path = save_upstream_checkpoint(agent, tmp_path / "ours.pt")
    back = load_upstream_checkpoint(path)
    assert back.model == agent.cfg.model
    for ours, theirs in ((agent.world_model, back.wm.module), (agent.actor, back.actor.module),
                         (agent.critic, back.critic.module)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    state = back.trainer_state()
    for key in ("actor_opt", "critic_opt", "world_model_opt"):
        mine = getattr(agent, key).state_dict()
        assert sorted(state[key]["state"]) == sorted(mine["state"])
        for i, per in mine["state"].items():
            assert all(torch.equal(per[k], state[key]["state"][i][k]) for k in per)
    assert torch.allclose(state["rew_rms"]["var"], agent.rew_rms.var)


def test_a_damaged_upstream_file_is_one_line_and_a_bad_optimiser_state_starts_fresh(tmp_path, caplog):
    raw = read_upstream_checkpoint(save_upstream_checkpoint(_trainer_agent(0), tmp_path / "ours.pt"))
    plain = {**raw, "obs_rms": None, "rew_rms": None, "ret_rms": None}  # plain data: torch.save can write it
    torch.save({**plain, "critic": {**raw["critic"], "params.2": torch.zeros(3, 7)}}, tmp_path / "bad_critic.pt")
    with pytest.raises(CheckpointError, match="networks do not fit .*size mismatch") as caught:
        load_upstream_checkpoint(tmp_path / "bad_critic.pt")
    assert "\n" not in str(caught.value)
    torch.save({**plain, "obs_rms": "not a RunningMeanStd"}, tmp_path / "bad_rms.pt")
    with pytest.raises(CheckpointError, match="obs_rms"):
        load_upstream_checkpoint(tmp_path / "bad_rms.pt")
    torch.save({**plain, "actor_opt": {"state": {}, "param_groups": [{"lr": 1.0, "params": [0, 1]}]}},
               tmp_path / "bad_opt.pt")
    loaded = load_upstream_checkpoint(tmp_path / "bad_opt.pt")
    assert "actor_opt" not in loaded.optimizer_states and "critic_opt" in loaded.optimizer_states
    assert "actor_opt state not usable" in caplog.text
