"""Fixtures for the kernel checks: real nvcc-built libraries and a CUDA 13 torch environment."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import builds  # noqa: E402


@pytest.fixture(scope="session")
def kernel_libs() -> dict[str, Path]:
    """name -> a shared library compiled with that build's -gencode set (see builds.BUILDS)."""
    try:
        return builds.build_all()
    except builds.ToolsMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def cuda13_site(kernel_libs, tmp_path_factory) -> Path:
    """A site folder laid out as ``pip install torch==2.13.0`` (the registry's CUDA 13 build) lays it out.

    What a real install of that build holds and a check reads (measured on torch 2.14.1+cu130 from
    the registry, same layout): ``torch/version.py`` with ``cuda = '13.0'``; torch's libraries in
    ``torch/lib`` with SASS only, linked to ``libcudart.so.13`` (here a library built with nvcc the same
    way, as ``torch/lib/libtorch_cuda.so``); the CUDA runtime wheel nvidia-cuda-runtime 13.0.96 at
    ``nvidia/cu13/lib/libcudart.so.13`` with its dist-info (here: the real files of that wheel,
    installed by the test extra).
    """
    site = tmp_path_factory.mktemp("cuda13") / "site-packages"
    runtime_lib = builds.cuda_root() / "lib" / "libcudart.so.13"
    real_site = builds.cuda_root().parent.parent
    infos = sorted(real_site.glob("nvidia_cuda_runtime-13.*.dist-info"))
    if not runtime_lib.is_file() or not infos:
        pytest.skip("nvidia-cuda-runtime 13 is not installed (pip install -e '.[test]')")
    (site / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    shutil.copy2(runtime_lib, site / "nvidia" / "cu13" / "lib" / "libcudart.so.13")
    shutil.copytree(infos[-1], site / infos[-1].name)
    torch = site / "torch"
    (torch / "lib").mkdir(parents=True)
    (torch / "__init__.py").write_text("raise ImportError('a layout for gpuprobe kernels, not an importable torch')\n")
    (torch / "version.py").write_text(
        "from typing import Optional\n\n"
        "__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'rocm', 'xpu']\n"
        "__version__ = '2.13.0+cu130'\ndebug = False\ncuda: Optional[str] = '13.0'\n"
        "git_version = 'unknown'\nhip: Optional[str] = None\nrocm: Optional[str] = None\nxpu: Optional[str] = None\n")
    shutil.copy2(kernel_libs["cudart13"], torch / "lib" / "libtorch_cuda.so")
    info = site / "torch-2.13.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.4\nName: torch\nVersion: 2.13.0\n"
        "Requires-Dist: cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]"
        "==13.0.3; platform_system == \"Linux\"\n")
    (info / "RECORD").write_text("")
    return site
