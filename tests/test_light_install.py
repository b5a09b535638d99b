"""The core (CLI, preflight, matrix, report, info, signatures) runs without torch, matplotlib,
hydra, numpy or yaml: what ``pip install gpuprobe`` (no extras) gives a Prolog node.

Each command runs in a fresh interpreter that sees this environment's packages without
the heavy ones, as a light install would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIELD = ROOT / "tests" / "fixtures" / "field"
HEAVY = ("torch", "matplotlib", "mpl_toolkits", "hydra", "omegaconf", "numpy", "yaml", "_yaml", "pyyaml",
         "functorch", "torchgen", "gymnasium", "torchrl", "tensordict")


@pytest.fixture(scope="module")
def light_site(tmp_path_factory) -> Path:
    """site-packages as a light install has it: every package of this environment but the heavy ones."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest = tmp_path_factory.mktemp("light-site")
    for entry in site.iterdir():
        top = entry.name.split("-")[0].split(".")[0].lower()
        if top in HEAVY or entry.suffix == ".pth" or entry.name.startswith("__editable__"):
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


def light(site: Path, *args: str, results: Path) -> subprocess.CompletedProcess:
    # -S: no site-packages of this environment (nor its .pth files): only the light site and the checkout
    return subprocess.run([sys.executable, "-S", "-m", "gpuprobe", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{site}",
                                            "PYTHONDONTWRITEBYTECODE": "1",
                                            "GPUPROBE_RESULTS": str(results), "GPUPROBE_FAKE_NVML": "l40s"})


@pytest.fixture
def field(tmp_path: Path) -> Path:
    shutil.copytree(FIELD, tmp_path / "field")
    return tmp_path / "field"


def test_the_light_site_has_no_torch(light_site):
    res = subprocess.run([sys.executable, "-S", "-c", "import click, rich; import torch"], capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": f"{ROOT}:{light_site}"})
    assert res.returncode != 0 and "No module named 'torch'" in res.stderr


@pytest.mark.parametrize("args, code", [
    (["preflight"], 4), (["preflight", "--format", "prom"], 4), (["matrix"], 0),
    (["matrix", "--compare", "L40S", "H200"], 0), (["matrix", "--format", "html"], 0), (["report", "latest"], 0),
    (["show", "latest"], 0), (["info"], 0), (["signatures"], 0), (["--help"], 0), (["run", "--help"], 0),
    (["sweep", "--help"], 0),
])
def test_core_commands_run_without_the_heavy_stack(light_site, field, args, code):
    res = light(light_site, *args, results=field)
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr and res.stdout


def test_run_without_torch_skips_the_torch_stages_with_the_reason(light_site, tmp_path):
    res = light(light_site, "run", "--device", "cpu", "--stage", "alloc", "--json", results=tmp_path)
    assert res.returncode == 0, res.stderr
    import json

    stages = {s["stage"]: s for s in json.loads(res.stdout)["stages"]}
    assert stages["nvml"]["status"] == "pass"          # NVML needs no torch (here: the L40S fake)
    assert stages["alloc"]["status"] == "skip" and "gpuprobe[probes]" in stages["alloc"]["reason"]
