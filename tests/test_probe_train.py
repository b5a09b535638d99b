"""The train stage through the real CLI: one iteration and the first epoch, with toy sizes."""

from __future__ import annotations

from gpuprobe.probes.train import alg_config
from tests.stalling_buffers import mark_names, run_gpuprobe, stage


def test_one_iteration_and_the_first_epoch_pass_with_their_marks(tmp_path):
    args = ["--device", "cpu", "--only", "--stage", "train", "--model-size", "tiny", "--train-epoch",
            "--set", "train.num_envs=4", "--set", "train.episode_length=24", "--set", "train.buffer_size=2000"]
    code, doc = run_gpuprobe(args, str(tmp_path))
    res = stage(doc, "train")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    names = mark_names(res)
    for name in ("build", "sample", "wm_update", "actor_update", "critic_update", "epoch.build", "epoch.collect",
                 "epoch.buffer.storage_decision", "epoch.buffer.fill", "epoch.first_episode", "epoch.update",
                 "epoch.buffer.first_sample"):
        assert f"train.{name}" in names, name
    # the first buffer add comes with (just before) the first complete episode, then the first update
    assert names.index("train.epoch.buffer.fill") < names.index("train.epoch.first_episode") < names.index(
        "train.epoch.update")
    data = res["data"]
    for key in ("wm_update_s", "actor_update_s", "critic_update_s"):
        assert data[key] > 0
    assert data["memory"]["peak_bytes"] > 0 and "getrusage" in data["memory"]["source"]
    epoch = data["first_epoch"]
    assert epoch["first_episode_steps"] == 24 and epoch["buffer_rows"] == 4 * 25
    assert set(epoch["update_times_s"]) == {"time/wm", "time/actor", "time/critic"}
    collect = [m["data"] for m in res["marks"] if m["name"] == "train.epoch.collect"]
    assert collect[-1]["total"] == 25 and collect[-1]["done"] == 24


def test_model_sizes_come_from_the_trainer_configs():
    assert alg_config("5M")["latent_dim"] == 512
    big = alg_config("48M")
    assert big["latent_dim"] == 768 and big["world_model_config"]["encoder_units"] == [1792, 1792, 1792]
    assert big["horizon"] == 16 and big["variant"] == "upstream"  # inherited from pwm.yaml
