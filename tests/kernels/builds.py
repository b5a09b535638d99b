"""Real CUDA binaries for the kernel tests, built with NVIDIA's nvcc from PyPI (nvidia-cuda-nvcc).

Each library is compiled once with a chosen ``-gencode`` set and cached outside the repo
(``$GPUPROBE_TEST_CACHE`` or ``~/.cache/gpuprobe-tests/kernels``), keyed by the sources, the
flags and nvcc's version, so the suite pays the compiler (a few seconds a library) only the
first time. nvcc needs no GPU; it needs a host C++ compiler (g++).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

KERNELS_A = r"""
__global__ void axpy(float *y, const float *x, float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] += a * x[i]; }
__global__ void scale(float *y, float s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] *= s; }
extern "C" void launch_a(float *y, const float *x, int n) {
  axpy<<<(n + 255) / 256, 256>>>(y, x, 2.f, n); scale<<<(n + 255) / 256, 256>>>(y, .5f, n); }
"""
KERNELS_B = r"""
__global__ void relu(float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n && y[i] < 0.f) y[i] = 0.f; }
__global__ void sum_sq(const float *x, float *out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) atomicAdd(out, x[i] * x[i]); }
__global__ void fill(float *y, float v, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = v; }
extern "C" void launch_b(float *y, float *out, int n) {
  relu<<<1, 256>>>(y, n); sum_sq<<<1, 256>>>(y, out, n); fill<<<1, 256>>>(y, 0.f, n); }
"""


def gencode(arch: str, code: str) -> list[str]:
    return ["-gencode", f"arch={arch},code={code}"]


@dataclass(frozen=True)
class Build:
    name: str
    sources: tuple[str, ...]        # one translation unit (one fatbinary container) each
    flags: tuple[str, ...]
    shared_cudart: bool = False     # link libcudart.so.13 (DT_NEEDED), as torch's libraries do


BUILDS: tuple[Build, ...] = (
    Build("sm89", (KERNELS_A,), tuple(gencode("compute_89", "sm_89"))),
    Build("sm90", (KERNELS_A,), tuple(gencode("compute_90", "sm_90"))),
    Build("ptx80", (KERNELS_A,), tuple(gencode("compute_80", "compute_80"))),
    Build("sm80_ptx90", (KERNELS_A,), tuple(gencode("compute_80", "sm_80") + gencode("compute_90", "compute_90"))),
    # several kernels in two translation units: two containers
    Build("multi", (KERNELS_A, KERNELS_B), tuple(gencode("compute_75", "sm_75") + gencode("compute_86", "sm_86")
                                                 + gencode("compute_86", "compute_86"))),
    Build("sm90a", (KERNELS_A,), tuple(gencode("compute_90a", "sm_90a"))),
    # like torch's libtorch_cuda.so of a CUDA 13 build: SASS only, linked to libcudart.so.13
    Build("cudart13", (KERNELS_A, KERNELS_B), tuple(gencode("compute_80", "sm_80") + gencode("compute_89", "sm_89")
                                                    + gencode("compute_90", "sm_90")), shared_cudart=True),
)


class ToolsMissing(RuntimeError):
    pass


def cuda_root() -> Path:
    """``<site-packages>/nvidia/cu13`` of the nvidia-cuda-nvcc wheel (bin/nvcc, include, lib, nvvm)."""
    spec = importlib.util.find_spec("nvidia")
    for loc in (spec.submodule_search_locations if spec else None) or []:
        root = Path(loc) / "cu13"
        if (root / "bin" / "nvcc").is_file():
            return root
    raise ToolsMissing("nvidia-cuda-nvcc is not installed (pip install -e '.[test]' installs it)")


def tool(name: str) -> Path:
    path = cuda_root() / "bin" / name
    if not path.is_file():
        raise ToolsMissing(f"{name} is not in {path.parent} (pip install -e '.[test]')")
    return path


def nvcc_version() -> str:
    return subprocess.run([str(tool("nvcc")), "--version"], capture_output=True, text=True, check=True).stdout


def cache_dir() -> Path:
    return Path(os.environ.get("GPUPROBE_TEST_CACHE") or Path.home() / ".cache" / "gpuprobe-tests") / "kernels"


def build_all(builds: tuple[Build, ...] = BUILDS) -> dict[str, Path]:
    if shutil.which("g++") is None:
        raise ToolsMissing("nvcc needs a host C++ compiler and g++ is not on PATH")
    nvcc = tool("nvcc")
    version = nvcc_version()
    out = {}
    for b in builds:
        key = hashlib.sha256(repr((b, version)).encode()).hexdigest()[:16]
        target = cache_dir() / key / f"lib{b.name}.so"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="gpuprobe-nvcc-") as tmp:
                srcs = []
                for i, text in enumerate(b.sources):
                    src = Path(tmp) / f"{b.name}_{i}.cu"
                    src.write_text(text)
                    srcs.append(str(src))
                lib = str(cuda_root() / "lib")
                link = ["-cudart", "none", "-Xlinker", "-l:libcudart.so.13"] if b.shared_cudart else []
                built = Path(tmp) / target.name
                subprocess.run([str(nvcc), "-shared", "-Xcompiler", "-fPIC", f"-L{lib}", *b.flags, *link, *srcs,
                                "-o", str(built)], check=True, capture_output=True, text=True, cwd=tmp)
                os.replace(built, target) if built.stat().st_dev == target.parent.stat().st_dev else shutil.move(built, target)
        out[b.name] = target
    return out


def cuobjdump_listing(path: Path) -> dict[str, list[str]]:
    """``cuobjdump --list-elf --list-ptx``: {"sass": ["sm_80", ...], "ptx": ["sm_90", ...]} in file order."""
    proc = subprocess.run([str(tool("cuobjdump")), "--list-elf", "--list-ptx", str(path)], capture_output=True, text=True)
    out: dict[str, list[str]] = {"sass": [], "ptx": []}
    for line in proc.stdout.splitlines():
        # "ELF file    1: libsm89.1.sm_89.cubin" / "PTX file    1: libptx80.1.sm_80.ptx"
        kind, _, rest = line.partition(" file")
        if kind not in ("ELF", "PTX") or ":" not in rest:
            continue
        arch = rest.split(":", 1)[1].strip().rsplit(".", 2)[-2]
        out["sass" if kind == "ELF" else "ptx"].append(arch)
    return out
