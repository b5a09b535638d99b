"""The layering contract (setup.cfg's [importlinter]) holds, and a violation of it fails the lint.

Run with import-linter (the test extra installs it), as .ci/run does: only the child side
may import torch, the probes or the trainer, and the trainer reaches gpuprobe through
``gpuprobe.api`` alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))

pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}   # the tree under test, not the installed package
    return subprocess.run([LINT, str(tree / "setup.cfg"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contract, to break on purpose."""
    for name in ("gpuprobe", "gpuprobe_pwm"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def test_the_checkout_keeps_the_contract():
    res = lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


def test_torch_in_the_parent_side_breaks_it(tree: Path):
    (tree / "gpuprobe" / "store" / "_violation.py").write_text("import torch\n")
    res = lint(tree)
    assert res.returncode != 0
    assert "gpuprobe.store._violation -> torch" in res.stdout, res.stdout


def test_parent_importing_the_trainer_breaks_it(tree: Path):
    (tree / "gpuprobe" / "run" / "_violation.py").write_text("def f():\n    from gpuprobe_pwm import buffer\n")
    res = lint(tree)
    assert res.returncode != 0
    assert "gpuprobe.run._violation -> gpuprobe_pwm.buffer" in res.stdout, res.stdout


def test_trainer_past_the_preflight_api_breaks_it(tree: Path):
    (tree / "gpuprobe_pwm" / "_violation.py").write_text("from gpuprobe.store.results import write_atomic\n")
    res = lint(tree)
    assert res.returncode != 0
    assert "gpuprobe_pwm._violation -> gpuprobe.store.results" in res.stdout, res.stdout
