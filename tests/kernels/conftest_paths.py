"""Run the gpuprobe CLI in a subprocess with a scan cache of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], tmp: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    full.update({"PYTHONPATH": str(ROOT), "GPUPROBE_KERNELS_CACHE": str(tmp / "kernels-scan.json"),
                 "CUDA_CACHE_PATH": str(tmp / "nv-cache")})
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=ROOT)
