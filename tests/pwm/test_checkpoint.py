from __future__ import annotations

import random

import pytest
import torch

from gpuprobe_pwm import checkpoint
from gpuprobe_pwm.checkpoint import (
    CHECKPOINT_FILES,
    CheckpointSet,
    atomic_torch_save,
    rng_state,
    set_rng_state,
)


def test_atomic_save_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "latest_checkpoint.pt"
    atomic_torch_save({"iteration": 1}, path)
    real_save = torch.save

    def torn_save(obj, fh, *args, **kwargs):
        fh.write(b"partial garbage")  # some bytes reach the disk, then the job dies
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"iteration": 2}, path)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert torch.load(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest_checkpoint.pt"]  # no temporary left


def test_checkpoint_set_names(tmp_path):
    ckpts = CheckpointSet(tmp_path)
    assert set(CHECKPOINT_FILES) == {"init_policy.pt", "best_policy.pt", "latest_checkpoint.pt",
                                     "final_policy.pt", "final_policy.buffer"}
    ckpts.save("best_policy.pt", {"iteration": 3})
    assert torch.load(tmp_path / "best_policy.pt")["iteration"] == 3
    with pytest.raises(ValueError):
        ckpts.save("PWM_iter500_rew1.0.pt", {})


def test_rng_state_round_trip():
    state = rng_state()
    a = (torch.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
