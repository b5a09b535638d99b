"""general.pretrain: the world model pretrained on replay data an earlier run of this trainer wrote.

Smoke runs at toy sizes on the bundled cart-pole: where the data goes, what the statistics see, what
the loop does after it, resume after a SIGTERM, and one-line refusals. No learning assertions."""
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
from gpuprobe_pwm.buffer import Buffer
from gpuprobe_pwm.normalizer import RunningMeanStd
from gpuprobe_pwm.pretrain import read_replay, update_statistics
from gpuprobe_pwm.safe_load import CheckpointError
from gpuprobe_pwm.settings import ConfigError
from gpuprobe_pwm.train import compose_config, resolve_config, run

REPO = Path(__file__).resolve().parents[2]
ENV = ["env=cartpole_swingup", "env.config.num_envs=4", "env.config.episode_length=12", "general.eval_runs=2",
       "general.device=cpu", "alg.save_interval=3"]
UPSTREAM = ["alg=pwm_tiny", *ENV]     # H = 4 env steps per epoch: the first episodes end in epoch 3
BUNDLED = ["alg=bundled_tiny", *ENV]


def train(tmp_path: Path, name: str, *overrides: str) -> tuple[int, Path]:
    cfg = compose_config([*overrides, f"general.logdir={tmp_path / 'runs'}"])
    rc = resolve_config(cfg, tmp_path, ["gpuprobe_pwm.train", *overrides])
    code = run(rc)
    return code, runs.find_run(rc.logdir, name)


def epochs(run_dir: Path) -> list[dict]:
    return [r for r in runs.read_metrics(run_dir / "metrics.jsonl") if not r.get("final")]


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    """A short upstream-variant run whose replay buffer is the pretraining data."""
    tmp = tmp_path_factory.mktemp("collect")
    code, run_dir = train(tmp, "pwm_tiny_cartpole_swingup_seed42", *UPSTREAM, "alg.max_epochs=9")
    assert code == 0
    return run_dir


def test_after_pretraining_the_loop_neither_collects_first_nor_warms_up(tmp_path, collected):
    data = Buffer.load(collected / "final_policy.buffer")
    code, run_dir = train(tmp_path, "pwm_tiny_cartpole_swingup_seed42", *UPSTREAM, "alg.max_epochs=3",
                          f"general.pretrain={collected / 'final_policy.buffer'}", "general.pretrain_steps=7")
    assert code == 0
    records = epochs(run_dir)
    # From scratch the first three epochs only collect and the fourth warms up for 12 iterations
    # (test_train_upstream.py); with the data in the buffer every epoch updates, at wm_iterations.
    assert [r.get("wm/iterations") for r in records] == [2, 2, 2]
    assert records[0]["buffer_size"] == len(data)  # 4 steps of 12-step episodes add none yet
    # the data's env steps are not counted as the run's
    assert [r["env_steps"] for r in records] == [16, 32, 48]
    meta = json.loads((run_dir / "run.json").read_text())["pretrain"]
    assert meta["steps"] == 7 and meta["rows"] == len(data) and meta["episodes"] == data.num_episodes
    assert meta["files"] == [str(collected / "final_policy.buffer")]
    state = torch.load(run_dir / "final_policy.pt", weights_only=True)
    assert state["pretrain_done"] == 7 and state["warmed_up"] is True
    # the pretraining updated the world model before the first epoch
    init = torch.load(run_dir / "init_policy.pt", weights_only=True)
    best = torch.load(run_dir / "best_policy.pt", weights_only=True)
    changed = [k for k in init["world_model"] if not torch.equal(init["world_model"][k], best["world_model"][k])]
    assert changed


def test_a_checkpoint_that_carries_its_buffer_is_data_too(tmp_path, collected):
    code, run_dir = train(tmp_path, "bundled_tiny_cartpole_swingup_seed42", *BUNDLED, "alg.max_epochs=2",
                          f"general.pretrain=[{collected / 'latest_checkpoint.pt'},{collected / 'final_policy.buffer'}]",
                          "general.pretrain_steps=3")
    assert code == 0
    latest = torch.load(collected / "latest_checkpoint.pt", weights_only=True)["buffer"]
    final = torch.load(collected / "final_policy.buffer", weights_only=True)
    meta = json.loads((run_dir / "run.json").read_text())["pretrain"]
    assert meta["rows"] == sum(latest["episode_rows"]) + sum(final["episode_rows"])


def test_statistics_come_from_the_data_without_the_rows_that_close_episodes(tmp_path):
    buffer = Buffer(1000, 2, 1, horizon=2, batch_size=4)
    obs = torch.arange(14, dtype=torch.float32).reshape(7, 1, 2)
    buffer.add(obs[:4], torch.zeros(3, 1, 1), torch.tensor([[1.0], [2.0], [3.0]]))
    buffer.add(obs[4:], torch.zeros(2, 1, 1), torch.tensor([[5.0], [9.0]]))
    buffer.save(tmp_path / "stats.buffer")
    data = read_replay([tmp_path / "stats.buffer"], obs_dim=2, act_dim=1)
    assert (data.rows, data.episodes, data.env_steps) == (7, 2, 5)

    class Agent:
        obs_rms, rew_rms = RunningMeanStd((2,)), RunningMeanStd(())

    update_statistics(Agent, data)
    assert torch.allclose(Agent.obs_rms.mean, obs.reshape(7, 2).double().mean(0), atol=1e-4)
    # five rewards, none of them the NaN of a closing row
    assert Agent.rew_rms.mean.item() == pytest.approx(4.0, abs=1e-3) and Agent.rew_rms.count == pytest.approx(5, abs=1e-3)


def test_data_of_another_env_or_without_a_buffer_is_refused_in_one_line(tmp_path, collected):
    with pytest.raises(CheckpointError, match="collected on another env") as info:
        read_replay([collected / "final_policy.buffer"], obs_dim=11, act_dim=3)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="holds no replay buffer"):
        read_replay([collected / "final_policy.pt"], obs_dim=5, act_dim=1)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_replay([tmp_path / "nope.buffer"], obs_dim=5, act_dim=1)
    (tmp_path / "empty.buffer").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_replay([tmp_path / "empty.buffer"], obs_dim=5, act_dim=1)
    # through the trainer: exit 1, the run marked failed with that line
    code, run_dir = train(tmp_path, "bundled_tiny_cartpole_swingup_seed42", *BUNDLED,
                          f"general.pretrain={collected / 'final_policy.pt'}")
    assert code == 1
    assert "holds no replay buffer" in json.loads((run_dir / "run.json").read_text())["error"]


def test_pretrain_files_and_steps_are_checked_before_anything_is_built(tmp_path):
    cfg = compose_config([*BUNDLED, "general.pretrain=x.buffer"])
    with pytest.raises(ConfigError, match="x.buffer does not exist"):
        resolve_config(cfg, tmp_path, [])
    (tmp_path / "x.buffer").write_bytes(b"")
    cfg = compose_config([*BUNDLED, "general.pretrain=x.buffer", "general.pretrain_steps=0"])
    with pytest.raises(ConfigError, match="pretrain_steps=0"):
        resolve_config(cfg, tmp_path, [])
    cfg = compose_config([*BUNDLED, "general.pretrain=x.buffer"])
    assert resolve_config(cfg, tmp_path, []).general["pretrain"] == [str((tmp_path / "x.buffer").resolve())]


def test_sigterm_during_pretraining_saves_it_and_resuming_finishes_it(tmp_path, collected):
    data = collected / "final_policy.buffer"
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "gpuprobe_pwm.train", *BUNDLED, "alg.max_epochs=2", f"general.pretrain={data}",
           "general.pretrain_steps=10000000", f"general.logdir={logs}", "general.preflight=off"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        for line in proc.stdout:  # the data is in the buffer once this is logged; updates follow
            out.append(line)
            if "pretraining data:" in line:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        out.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 143, "".join(out)[-2000:]
    (run_dir,) = logs.glob("bundled_tiny_cartpole_swingup_seed42_2*")
    latest = torch.load(run_dir / "latest_checkpoint.pt", weights_only=True)
    done = latest["pretrain_done"]
    assert latest["iteration"] == 0 and 0 < done < 10_000_000 and not latest["warmed_up"]
    assert sum(latest["buffer"]["episode_rows"]) == sum(torch.load(data, weights_only=True)["episode_rows"])
    # resumed with the remaining updates set to 4: it finishes them, then trains
    time.sleep(1.0)
    code, resumed = train(tmp_path, "bundled_tiny_cartpole_swingup_seed42", *BUNDLED, "alg.max_epochs=2",
                          f"general.pretrain={data}", f"general.pretrain_steps={done + 4}",
                          f"general.checkpoint={run_dir / 'latest_checkpoint.pt'}")
    assert code == 0
    assert torch.load(resumed / "final_policy.pt", weights_only=True)["pretrain_done"] == done + 4
    assert json.loads((resumed / "run.json").read_text())["pretrain"]["steps"] == done + 4
    assert [r["iteration"] for r in epochs(resumed)] == [1, 2]


def test_upstreams_pretraining_normalises_with_the_datas_statistics_and_leaves_them_be(tmp_path):
    from gpuprobe_pwm.pretrain import pretrain_world_model
    from tests.pwm.test_agent_upstream import tiny_agent

    agent = tiny_agent(obs_rms=True, rew_rms=True, horizon=2, wm_batch_size=4)
    buffer = Buffer(100, 1, 1, horizon=2, batch_size=4)
    buffer.add(torch.randn(9, 2, 1), torch.randn(8, 2, 1), torch.randn(8, 2))
    before = (agent.obs_rms.count, agent.rew_rms.count)
    done, loss = pretrain_world_model(agent, buffer, steps=3)
    assert done == 3 and loss is not None
    assert (agent.obs_rms.count, agent.rew_rms.count) == before  # the batches did not update them
    agent.update_world_model(*buffer.sample())  # an online update does
    assert agent.obs_rms.count > before[0]
