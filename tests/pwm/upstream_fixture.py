"""Run upstream PWM's own code (imgeorgiev/PWM, unpacked from the vendored tarball) to make fixtures.

Not a test module: tests/pwm/test_upstream_checkpoint.py runs it in a subprocess with upstream's
``src`` (and a no-op ``wandb``) on PYTHONPATH, so nothing of upstream is imported into the test
process or copied into the repository.

  python upstream_fixture.py save CFG OBS_DIM ACT_DIM OUT_DIR
      builds upstream's PWM agent from its own alg config CFG (pwm.yaml, or pwm_5M.yaml made
      single-task), with obs_rms on, takes one Adam step on every network (so weights, RMS
      statistics and optimiser state are all non-trivial), writes it with PWM.save to
      OUT_DIR/upstream.pt, and dumps its outputs on fixed inputs to OUT_DIR/outputs.pt.
  python upstream_fixture.py load CFG OBS_DIM ACT_DIM CHECKPOINT INPUTS OUT
      builds the same agent, runs upstream's PWM.load on CHECKPOINT, and dumps its outputs on the
      inputs in INPUTS (an outputs.pt) to OUT.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import pwm

BATCH = 7


def build_agent(cfg_name: str, obs_dim: int, act_dim: int, logdir: Path):
    cfg_dir = Path(pwm.__file__).resolve().parents[2] / "scripts" / "cfg" / "alg"
    alg = OmegaConf.load(cfg_dir / cfg_name)
    alg.device = "cpu"
    alg.obs_rms = True
    wm_cfg = alg.world_model_config
    if wm_cfg.get("multitask"):
        # pwm_5M.yaml as a single-task dflex run would use it: no task embedding, a fixed horizon,
        # and none of the keys PWM.__init__ rejects.
        wm_cfg.multitask = False
        wm_cfg.task_dim = 0
        for key in ("tasks", "action_dims"):
            del wm_cfg[key]
        alg.horizon = 16
        alg.pop("planning", None)
    return instantiate(alg, env=None, obs_dim=obs_dim, act_dim=act_dim, logdir=str(logdir), log=False)


def outputs(agent, inputs: dict) -> dict:
    obs, act = inputs["obs"], inputs["act"]
    with torch.no_grad():
        z = agent.wm.encode(obs, None)
        reward = agent.wm.reward(z, act, None)
        return {
            "obs": obs, "act": act,
            "encode": z,
            "next": agent.wm.next(z, act, None),
            "reward": reward,
            "reward_value": agent.wm.almost_two_hot_inv(reward),
            "actor_mean": agent.actor(z, deterministic=True),
            "logstd": agent.actor.logstd.detach().clone(),
            "critic": agent.critic(z),
            **{name: _rms(getattr(agent, name)) for name in ("obs_rms", "rew_rms", "ret_rms")},
            "obs_normalized": agent.obs_rms.normalize(obs),
            "lrs": torch.tensor([opt.param_groups[0]["lr"] for opt in
                                 (agent.actor_optimizer, agent.critic_optimizer, agent.wm_optimizer)],
                                dtype=torch.float64),
        }


def _rms(rms) -> list | None:
    return None if rms is None else [rms.mean, rms.var, torch.tensor(rms.count, dtype=torch.float64)]


def one_step(agent, obs_dim: int, act_dim: int) -> None:
    """One Adam step per optimiser on an arbitrary loss, and some RMS updates."""
    obs = torch.randn(32, obs_dim) * 3 + 1
    act = torch.rand(32, act_dim) * 2 - 1
    agent.obs_rms.update(obs)
    if agent.rew_rms is not None:  # pwm_5M.yaml has rew_rms off: saved as None
        agent.rew_rms.update(torch.randn(64, 1) * 2 + 0.5)
    agent.ret_rms.update(torch.randn(64, 1) * 10 - 3)
    for opt in (agent.actor_optimizer, agent.critic_optimizer, agent.wm_optimizer):
        opt.zero_grad()
    z = agent.wm.encode(obs, None)
    loss = (agent.wm.next(z, act, None).pow(2).sum() + agent.wm.reward(z, act, None).pow(2).sum()
            + agent.critic(z.detach()).pow(2).sum()
            + (agent.actor(z.detach()) - 0.3).pow(2).sum())
    loss.backward()
    for opt in (agent.actor_optimizer, agent.critic_optimizer, agent.wm_optimizer):
        opt.step()
    with torch.no_grad():
        # The reward head starts at exactly zero and gets no gradient from a zero output: give it
        # weights, so that comparing rewards means something.
        for p in agent.wm._reward[-1].parameters():
            p.normal_(0.0, 0.05)
    # Learning rates as a run some epochs in would have them (PWM.load reads them back).
    agent.update_lrs(3)


def main(argv: list[str]) -> None:
    mode, cfg_name, obs_dim, act_dim = argv[0], argv[1], int(argv[2]), int(argv[3])
    torch.manual_seed(0)
    if mode == "save":
        out = Path(argv[4])
        agent = build_agent(cfg_name, obs_dim, act_dim, out)
        one_step(agent, obs_dim, act_dim)
        agent.save("upstream")
        inputs = {"obs": torch.randn(BATCH, obs_dim) * 2, "act": torch.rand(BATCH, act_dim) * 2 - 1}
        torch.save(outputs(agent, inputs), out / "outputs.pt")
    elif mode == "load":
        checkpoint, inputs, out = Path(argv[4]), Path(argv[5]), Path(argv[6])
        agent = build_agent(cfg_name, obs_dim, act_dim, out.parent / "logs")
        agent.load(str(checkpoint))
        torch.save(outputs(agent, torch.load(inputs)), out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
