"""The sim stage through the real CLI: dflex missing, a fake dflex with and without a stale lock."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time

import pytest

from gpuprobe.probes import _dflex_lock
from tests.stalling_buffers import mark_names, run_gpuprobe, stage

ARGS = ["--device", "cpu", "--only", "--stage", "sim", "-o", "sim.bundled_steps=5", "-o", "sim.bundled_num_envs=4",
        "-o", "sim.envs=[\"cartpole_swingup\",\"pendulum\"]"]

# A dflex as DiffRL lays it out, small enough to read: the package imports torch's FileBaton on
# kernels/lock exactly as cpp_extension's load_inline does (take it, build, release; or wait),
# and dflex.envs holds an Ant-like env with dflex's constructor and step contract.
FAKE_INIT = '''
import os
from torch.utils.file_baton import FileBaton

_baton = FileBaton(os.path.join(os.path.dirname(__file__), "kernels", "lock"))
if _baton.try_acquire():
    _baton.release()   # "the build" finished
else:
    _baton.wait()      # another build holds the lock: wait for it to go away (forever if stale)
'''
FAKE_ENVS = '''
import torch

class AntEnv:
    # DiffRL's AntEnv constructor arguments
    def __init__(self, render=False, device="cuda:0", num_envs=4096, seed=0, episode_length=1000, no_grad=True,
                 stochastic_init=False, MM_caching_frequency=1, early_termination=True):
        self.num_envs, self.device, self.episode_length = num_envs, device, episode_length
        self.num_obs, self.num_actions = 37, 8
        self.t = 0

    def reset(self):
        return torch.zeros(self.num_envs, self.num_obs, device=self.device)

    def step(self, actions):
        assert actions.shape == (self.num_envs, self.num_actions)
        self.t += 1
        obs = torch.full((self.num_envs, self.num_obs), float(self.t), device=self.device)
        done = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return obs, actions.sum(-1), done, {}
'''


@pytest.fixture
def fake_dflex(tmp_path):
    root = tmp_path / "site"
    pkg = root / "dflex"
    (pkg / "kernels").mkdir(parents=True)
    (pkg / "envs").mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_INIT))
    (pkg / "envs" / "__init__.py").write_text(textwrap.dedent(FAKE_ENVS))
    env = {"PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")}
    return pkg, env


@pytest.mark.skipif(importlib.util.find_spec("dflex") is not None, reason="dflex is installed here")
def test_without_dflex_the_dflex_part_skips_and_the_bundled_envs_pass(tmp_path):
    code, doc = run_gpuprobe(ARGS, str(tmp_path))
    res = stage(doc, "sim")
    assert code == 0 and res["status"] == "pass"
    assert res["data"]["dflex"]["status"] == "skip" and "not installed" in res["data"]["dflex"]["reason"]
    assert "pip install" in res["data"]["dflex"]["reason"]  # the install hint travels with it
    assert res["reason"].startswith("dflex: skipped (not installed: ") and res["reason"].endswith(
        "bundled envs: pass (cartpole_swingup, pendulum)")
    for env in ("cartpole_swingup", "pendulum"):
        assert res["data"]["bundled"][env]["steps_per_s"] > 0
        assert {f"sim.{env}.construct", f"sim.{env}.reset", f"sim.{env}.step"} <= set(mark_names(res))
    shown = subprocess.run([sys.executable, "-m", "gpuprobe", "show", "latest", "--results", str(tmp_path)],
                           capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert "dflex: skipped (not installed:" in shown.stdout and "bundled envs: pass" in shown.stdout


def test_fake_dflex_runs_through_the_adapter(tmp_path, fake_dflex):
    _pkg, env = fake_dflex
    code, doc = run_gpuprobe(ARGS + ["-o", "sim.env=Ant", "-o", "sim.num_envs=3", "-o", "sim.steps=7"],
                             str(tmp_path), extra_env=env)
    res = stage(doc, "sim")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    dflex = res["data"]["dflex"]
    assert dflex["status"] == "pass" and dflex["env"] == "dflex_ant" and dflex["num_envs"] == 3
    assert dflex["steps"] == 7 and dflex["steps_per_s"] > 0 and dflex["lock"]["locks"] == []
    assert "import_s" in dflex and "kernel_build_s" in dflex
    names = mark_names(res)
    order = ["sim.lock_check", "sim.import_dflex", "sim.kernel_build", "sim.dflex.construct", "sim.dflex.reset",
             "sim.dflex.step"]
    assert [n for n in names if n in order][: len(order)] == order
    assert res["reason"].startswith("dflex: pass (dflex_ant")


def test_stale_lock_is_found_before_the_import_and_named(tmp_path, fake_dflex):
    pkg, env = fake_dflex
    (pkg / "kernels" / "lock").write_text("")
    code, doc = run_gpuprobe(ARGS, str(tmp_path), extra_env=env)
    res = stage(doc, "sim")
    assert code == 1 and res["status"] == "fail"
    lock = res["data"]["dflex"]["lock"]
    assert lock["stale"] and lock["locks"][0]["path"] == str(pkg / "kernels" / "lock")
    assert lock["locks"][0]["holders"] == [] and lock["locks"][0]["age_s"] >= 0
    assert "sim.import_dflex" not in mark_names(res)  # it would have waited forever
    assert "FileBaton.wait" in res["reason"] and "bundled envs: pass" in res["reason"]
    assert [m["id"] for m in res["signatures"]] == ["stale-kernel-build-lock"]


def test_importing_despite_a_stale_lock_hangs_in_filebaton_wait(tmp_path, fake_dflex):
    pkg, env = fake_dflex
    (pkg / "kernels" / "lock").write_text("")
    code, doc = run_gpuprobe(ARGS + ["-o", "sim.import_despite_lock=true", "--timeout", "4", "--stall-window", "1.5"],
                             str(tmp_path), extra_env=env)
    res = stage(doc, "sim")
    assert code == 3 and res["status"] == "hang" and res["last_mark"] == "sim.import_dflex"
    assert "file_baton" in res["evidence"]["stacks"]["text"]
    assert [m["id"] for m in res["signatures"]] == ["stale-kernel-build-lock"]


def test_a_lock_with_a_live_build_in_its_folder_is_not_stale(tmp_path, monkeypatch):
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "lock").write_text("")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "none"))
    builder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=kernels)
    try:
        deadline = time.monotonic() + 10
        locks = _dflex_lock.find_locks(kernels)
        while not locks[0].holders and time.monotonic() < deadline:  # until the child has its cwd
            locks = _dflex_lock.find_locks(kernels)
        assert [h["pid"] for h in locks[0].holders] == [builder.pid] and not locks[0].stale
    finally:
        builder.kill()
        builder.wait()
    assert _dflex_lock.find_locks(kernels)[0].stale
