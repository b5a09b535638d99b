"""Upstream PWM's own ``pwm`` package installed beside gpuprobe: neither shadows the other.

Every user of this tool has upstream PWM (``src/pwm``: ``pwm.models`` a package,
``pwm.utils``, ``pwm.algorithms``) in the same environment as the bundled trainer, whose
import name is therefore ``gpuprobe_pwm``. The real upstream source (the tarball in
``../shared/vendor/pwm-upstream``) is unpacked and put first on PYTHONPATH, as an
editable install of it would be; then the user's imports, the bundled trainer and
``gpuprobe run --stage train`` must all work in that one environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_PWM

ROOT = Path(__file__).resolve().parent.parent
TARBALL = "vendor/pwm-upstream/PWM-aa5a1d8.tar.gz"   # as named in skip reasons


def _tarball() -> Path | None:
    """Upstream PWM's source beside the checkout (``../shared/vendor/pwm-upstream``), if it is there."""
    return UPSTREAM_PWM if UPSTREAM_PWM.is_file() else None


@pytest.fixture(scope="module")
def upstream_src(tmp_path_factory) -> Path:
    tarball = _tarball()
    if tarball is None:
        pytest.skip(f"upstream PWM source not found (../shared/{TARBALL})")
    dest = tmp_path_factory.mktemp("pwm-upstream")
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    src = dest / "PWM" / "src"
    assert (src / "pwm" / "models" / "world_model.py").is_file()
    return src


def _env(upstream_src: Path, results: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(upstream_src), str(ROOT)])   # upstream first: the worst case
    env["GPUPROBE_RESULTS"] = str(results)
    return env


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_the_users_pwm_and_the_bundled_trainer_import_side_by_side(upstream_src, tmp_path):
    env = _env(upstream_src, tmp_path)
    for dep in ("torchrl", "tensordict"):   # what upstream's pwm.utils.buffer imports
        if _python(f"import {dep}", env).returncode != 0:
            pytest.skip(f"{dep} is not installed (the test extra installs it): pwm.utils.buffer cannot import")
    res = _python(
        "import pwm, pwm.models.world_model, pwm.utils.buffer, pwm.models.actor, pwm.models.critic\n"
        "from gpuprobe_pwm.models import ModelConfig\n"
        "import gpuprobe_pwm.train, gpuprobe_pwm.buffer, gpuprobe_pwm.agent\n"
        "import gpuprobe.probes.train, gpuprobe.probes.buffer\n"
        "import json; print(json.dumps({'pwm': pwm.__file__, 'world_model': pwm.models.world_model.__file__,"
        " 'ModelConfig': ModelConfig.__module__}))", env)
    assert res.returncode == 0, res.stderr
    where = json.loads(res.stdout.splitlines()[-1])
    assert where["pwm"].startswith(str(upstream_src)) and where["world_model"].startswith(str(upstream_src))
    assert where["ModelConfig"] == "gpuprobe_pwm.models"


def test_the_bundled_trainer_trains_with_upstream_pwm_installed(upstream_src, tmp_path):
    cmd = [sys.executable, "-m", "gpuprobe_pwm.train", "alg=pwm_tiny", "env=cartpole_swingup", "env.config.num_envs=4",
           "env.config.episode_length=16", "alg.max_epochs=2", "general.eval_runs=1", "alg.save_interval=2",
           "general.device=cpu", f"general.logdir={tmp_path / 'runs'}"]
    (tmp_path / "results").mkdir()   # the trainer's preflight: a results folder named but missing is an error
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(upstream_src, tmp_path / "results"),
                         cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert list((tmp_path / "runs").rglob("final_policy.pt")), "the run left no final policy"


def test_gpuprobe_run_stage_train_passes_with_upstream_pwm_installed(upstream_src, tmp_path):
    args = ["run", "--device", "cpu", "--stage", "train", "--model-size", "tiny", "--set", "alloc.cpu_max_mib=64",
            "--set", "sim.bundled_steps=3", "--set", "sim.bundled_num_envs=2", "--set", "buffer.capacities=[]",
            "--set", "buffer.capacity=2000", "--set", "buffer.samples=3", "--set", "train.num_envs=4",
            "--set", "train.episode_length=24", "--set", "train.buffer_size=2000",
            "--results", str(tmp_path / "results"), "--json"]
    res = subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True,
                         env=_env(upstream_src, tmp_path / "results"), cwd=ROOT, timeout=600)
    doc = json.loads(res.stdout)
    statuses = {s["stage"]: (s["status"], s.get("reason")) for s in doc["stages"]}
    assert res.returncode == 0, statuses
    assert statuses["train"][0] == "pass" and statuses["buffer"][0] == "pass", statuses
