"""The GPU device kit: the kit checker on real wheels, and the evidence script rehearsed here.

The rehearsal is the whole of scripts/gpu_evidence.sh on the CPU: what a lent GPU machine
will run, proven before one is lent. Its outputs must fit what the device tool brings back.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPUPROBE_SHARED") or ROOT.parent / "shared")   # ../shared, as CI lays it
DFLEX_WHEELS = sorted((SHARED / "vendor" / "dflex").glob("dflex-*.whl"))


def build_wheel(tmp: Path, name: str, version: str, requires: list[str]) -> Path:
    """A real wheel of a tiny project, built by pip (what the kit holds is wheels pip made)."""
    src = tmp / f"src-{name}-{version}"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text("")
    deps = ", ".join(json.dumps(r) for r in requires)
    (src / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{deps}]\n')
    out = tmp / "built"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True)
    return next(out.glob(f"{name}-{version}-*.whl"))


def check_kit(kit: Path, spec: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "device_kit.py"), "--check", "--kit", str(kit),
                           "--spec", str(spec)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """Built once: pip wheel is the slow part."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheels")
    return {(name, version): build_wheel(tmp, name, version, requires)
            for name, version, requires in (("ninja", "1.0", []), ("urchin", "1.0", ["trimesh>=2"]),
                                            ("trimesh", "2.0", []), ("trimesh", "1.5", []), ("trimesh", "3.0", []))}


@pytest.fixture
def kit(tmp_path, wheels):
    if not DFLEX_WHEELS:
        pytest.skip("the vendored dflex wheel (../shared/vendor/dflex) is absent: the kit must carry it")
    kit = tmp_path / "kit"
    (kit / "wheels").mkdir(parents=True)
    shutil.copy2(DFLEX_WHEELS[0], kit / "wheels")
    spec = tmp_path / "spec"
    spec.mkdir()
    # dflex's own metadata asks for ninja, torch, numpy, urchin, usd-core: the image has torch
    # and numpy; ninja and urchin are this kit's tiny stand-ins; usd-core is omitted on purpose
    (spec / "image-packages.txt").write_text("torch\nnumpy\n")
    (spec / "omit.txt").write_text("usd-core  # optional\n")
    (spec / "requirements.txt").write_text("urchin>=1\n")
    for key in (("ninja", "1.0"), ("urchin", "1.0"), ("trimesh", "2.0")):
        shutil.copy2(wheels[key], kit / "wheels")
    return kit, spec


def test_a_closed_kit_passes_the_check(kit):
    done = check_kit(*kit)
    assert done.returncode == 0, done.stderr
    assert "ready" in done.stdout


def test_a_missing_dependency_is_named(kit):
    path, spec = kit
    next((path / "wheels").glob("trimesh-*.whl")).unlink()
    done = check_kit(path, spec)
    assert done.returncode == 1
    assert "urchin needs trimesh>=2: neither the kit nor the image has it" in done.stderr


def test_a_dependency_of_the_wrong_version_is_named(kit, wheels):
    path, spec = kit
    next((path / "wheels").glob("trimesh-*.whl")).unlink()
    shutil.copy2(wheels["trimesh", "1.5"], path / "wheels")
    done = check_kit(path, spec)
    assert done.returncode == 1
    assert "urchin needs trimesh>=2, the kit has trimesh 1.5" in done.stderr


def test_two_versions_of_one_package_are_refused(kit, wheels):
    path, spec = kit
    shutil.copy2(wheels["trimesh", "3.0"], path / "wheels")
    done = check_kit(path, spec)
    assert done.returncode == 1
    assert "two versions of trimesh" in done.stderr


def test_a_kit_without_dflex_is_refused(kit):
    path, spec = kit
    next((path / "wheels").glob("dflex-*.whl")).unlink()
    done = check_kit(path, spec)
    assert done.returncode == 1
    assert "the dflex wheel is not in the kit" in done.stderr


def test_the_shipped_kit_spec_is_consistent():
    """Every pinned requirement parses, and nothing is both carried and omitted."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    spec = ROOT / "scripts" / "device_kit"
    def names(file):
        lines = (line.split("#", 1)[0].strip() for line in (spec / file).read_text().splitlines())
        return [line for line in lines if line]
    wanted = {canonicalize_name(Requirement(r).name) for r in names("requirements.txt")}
    omitted = {canonicalize_name(n) for n in names("omit.txt")}
    image = {canonicalize_name(n) for n in names("image-packages.txt")}
    assert not wanted & omitted
    assert "torch" in image and "torch" not in wanted   # the image's CUDA torch is the one to probe


# The device tool brings back at most 8 files of 16 MiB, at most 2 folders down, named in
# letters, digits, '.', '_' and '-'.
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    missing = [m for m in ("dflex", "torchrl", "tensordict", "gym", "gymnasium", "hydra")
               if subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True).returncode]
    if missing:
        pytest.skip(f"the rehearsal imports what the GPU run imports; not installed here: {', '.join(missing)}")
    out = tmp_path_factory.mktemp("evidence")
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_evidence.sh"), "--rehearse", str(out)],
                          capture_output=True, text=True, env=env, timeout=1200)
    return out, done


def test_rehearsal_passes(rehearsal):
    out, done = rehearsal
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_rehearsal_outputs_fit_what_the_device_tool_brings_back(rehearsal):
    out, _ = rehearsal
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3 and all(NAME_OK.match(part) for part in rel.parts), rel
        assert p.stat().st_size <= 16 * 2**20, rel
    assert {"log.txt", "steps.tsv", "summary.md", "summary.json", "evidence.tar.gz"} <= {p.name for p in files}


def test_rehearsal_runs_every_step_and_says_why_it_skips_the_gpu_ones(rehearsal):
    out, _ = rehearsal
    with (out / "steps.tsv").open() as f:
        steps = {row["step"]: row for row in csv.DictReader(f, delimiter="\t")}
    for name in ("imports", "info", "kernels", "dflex_build_cpu", "train_tiny", "train_tiny_only",
                 "train_tiny_as_L40S", "train_tiny_only_as_L40S", "drill_cpu_hang", "summary"):
        assert steps[name]["outcome"] == "expected", (name, steps[name])
    for name in ("dflex_build_as_shipped", "drill_cuda_hang"):
        assert steps[name]["outcome"].startswith("skip: no CUDA here"), steps[name]
    assert steps["drill_cpu_hang"]["rc"] == "3"   # the drill's hang is the exit code a job script sees


def test_rehearsal_results_are_result_files_with_their_evidence(rehearsal, tmp_path):
    out, _ = rehearsal
    with tarfile.open(out / "evidence.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.result.json"))]
    assert len(runs) >= 5
    stages = [s for r in runs for s in r["stages"]]
    # on the CPU the GPU-only stages skip with their reason, never pass
    for s in stages:
        if s["stage"] in ("nvml", "cuda"):
            assert s["status"] == "skip" and s["reason"], s
    trains = [s for s in stages if s["stage"] == "train"]
    assert trains and all(s["status"] == "pass" for s in trains)
    hang = [s for s in stages if s["status"] == "hang"]
    assert len(hang) == 1 and hang[0]["evidence"]["stacks"]["text"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rehearsal"] is True
    assert summary["bandwidth"] and summary["bandwidth"][0]["gb_s"] > 0
    assert len(summary["train"]) == len(trains)


def test_dflex_cuda_arch_swaps_the_shipped_flag_in_the_build_call(monkeypatch):
    """What `--set sim.dflex_cuda_arch=sm_90` does to dflex's load_inline call (the build itself needs nvcc+CUDA)."""
    from torch.utils import cpp_extension

    from gpuprobe_pwm.envs import dflex_kernels

    seen = {}
    monkeypatch.setattr(cpp_extension, "load_inline", lambda *a, **kw: seen.update(kw) or "module")
    before = cpp_extension.load_inline
    with dflex_kernels._cuda_arch("sm_90"):
        assert cpp_extension.load_inline("kernels", extra_cuda_cflags=[dflex_kernels.SHIPPED_CUDA_FLAG]) == "module"
    assert seen["extra_cuda_cflags"] == ["-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_90,code=compute_90"]
    assert cpp_extension.load_inline is before   # restored: only the build inside the probe sees the swap
    with pytest.raises(ValueError, match="not an architecture"):
        dflex_kernels.cuda_arch_flags("ampere")
