from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpuprobe_pwm import checkpoint
from gpuprobe_pwm.checkpoint import (
    CHECKPOINT_FILES,
    CheckpointSet,
    atomic_torch_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from gpuprobe_pwm.safe_load import CheckpointError, UnsafeCheckpoint, safe_torch_load
from gpuprobe_pwm.train import compose_config, resolve_config, run


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


# ---- safe loading (issue 10, item 6) --------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
TINY_RUN = ["alg=pwm_tiny", "env=cartpole_swingup", "env.config.num_envs=4", "env.config.episode_length=16",
            "alg.max_epochs=2", "general.eval_runs=1", "alg.save_interval=1", "general.device=cpu"]


class _Payload:
    """Unpickling this calls os.system: what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path, how: str) -> Path:
    state = {"actor": {}, "rng": {}, "iteration": 0, "config": _Payload(marker)}
    if how == "torch.save":
        torch.save(state, path)
    else:  # a bare pickle of a newer protocol, renamed .pt
        with open(path, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_crafted_checkpoint_is_refused_in_process_and_its_payload_does_not_run(tmp_path, how):
    marker = tmp_path / "payload-ran"
    evil = _crafted(tmp_path / "evil.pt", marker, how)
    with pytest.raises(UnsafeCheckpoint) as caught:
        load_checkpoint(evil, "cpu")
    message = str(caught.value)
    assert "\n" not in message and str(evil) in message and "refused" in message
    assert not marker.exists()


def test_crafted_checkpoint_stops_the_trainer_with_one_line(tmp_path):
    marker = tmp_path / "payload-ran"
    evil = _crafted(tmp_path / "evil.pt", marker, "torch.save")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "gpuprobe_pwm.train", *TINY_RUN, f"general.logdir={tmp_path / 'runs'}",
         f"general.checkpoint={evil}", "general.preflight=off"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    refusals = [line for line in out.splitlines() if "refused" in line]
    assert len(refusals) == 1 and str(evil) in refusals[0] and "posix.system" in refusals[0], out
    assert not marker.exists()


def test_a_damaged_or_missing_checkpoint_is_one_line(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"actor": {}, "rng": {}}, good)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(good.read_bytes()[:200])
    for path in (torn, tmp_path / "missing.pt", tmp_path):
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path, "cpu")
        assert "\n" not in str(caught.value) and not isinstance(caught.value, UnsafeCheckpoint)
    with pytest.raises(CheckpointError, match="not a checkpoint this trainer wrote"):
        torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt", "cpu")


def test_the_trainers_own_checkpoints_need_no_allowlist(tmp_path):
    """Every file a run writes loads with torch's plain weights-only loader, and resuming from
    latest_checkpoint.pt (RNG states included) still works."""
    cfg = compose_config([*TINY_RUN, f"general.logdir={tmp_path / 'runs'}"])
    rc = resolve_config(cfg, tmp_path, ["gpuprobe_pwm.train"])
    assert run(rc) == 0
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.is_symlink()
                   and (p / "latest_checkpoint.pt").exists())
    for name in ("init_policy.pt", "best_policy.pt", "latest_checkpoint.pt", "final_policy.pt",
                 "final_policy.buffer"):
        if (run_dir / name).exists():
            torch.load(run_dir / name, weights_only=True)  # raises on anything but plain data
    state = load_checkpoint(run_dir / "latest_checkpoint.pt", "cpu")
    set_rng_state(state["rng"])
    first = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(state["rng"])
    assert torch.equal(first[0], torch.rand(2)) and np.array_equal(first[1], np.random.rand(2))
    assert first[2] == random.random()


def test_checkpoints_written_before_the_plain_rng_form_still_load(tmp_path):
    """Older files hold np.random.get_state()'s ndarray: numpy's array reconstruction is the one
    allowlisted extra, and their RNG state restores."""
    np.random.seed(3)
    legacy_rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    expected = np.random.rand(3)
    torch.save({"actor": {}, "rng": legacy_rng, "iteration": 5}, tmp_path / "old.pt")
    with pytest.raises(UnsafeCheckpoint):  # not without the allowlist
        safe_torch_load(tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt", "cpu")
    np.random.seed(99)
    set_rng_state(state["rng"])
    assert np.array_equal(np.random.rand(3), expected)


def test_without_a_per_call_allowlist_plain_files_load_and_stand_ins_are_refused(tmp_path, monkeypatch):
    """torch 2.1-2.4 has weights-only loading but no torch.serialization.safe_globals."""
    monkeypatch.delattr(torch.serialization, "safe_globals")
    torch.save({"actor": {"w": torch.ones(2)}, "rng": {"python": [3, [1, 2], None]}}, tmp_path / "plain.pt")
    assert torch.equal(load_checkpoint(tmp_path / "plain.pt", "cpu")["actor"]["w"], torch.ones(2))

    class StandIn:
        pass

    with pytest.raises(CheckpointError, match="needs torch >= 2.5") as caught:
        safe_torch_load(tmp_path / "plain.pt", allow=[(StandIn, "elsewhere.Thing")])
    assert "\n" not in str(caught.value)
