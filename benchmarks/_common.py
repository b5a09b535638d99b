"""Small helpers shared by the benchmark scripts: timing commands, describing the machine."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs without installing

from gpuprobe.node.fingerprint import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    model = cpu_model()
    load = os.getloadavg()[0]
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.2f} at start"


def time_command(cmd: list[str], env: dict | None = None, ok_codes: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok_codes:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-500:]}")
    return elapsed


def median_of(samples: list[float]) -> float:
    return statistics.median(samples)
