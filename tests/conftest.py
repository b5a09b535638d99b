"""Shared test helpers: run the real gpuprobe CLI as a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    results: Path

    def result_files(self) -> list[Path]:
        return sorted(self.results.glob("*.result.json"))

    def doc(self) -> dict:
        files = self.result_files()
        assert len(files) == 1, f"expected one result file, found {files}\nstderr:\n{self.stderr}"
        return json.loads(files[0].read_text())

    def stage(self, name: str) -> dict:
        return next(s for s in self.doc()["stages"] if s["stage"] == name)


def run_gpuprobe(args: list[str], results: Path | None, env: dict | None = None, timeout: float = 120) -> CliRun:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "gpuprobe", *args]
    if results is not None:
        cmd += ["--results", str(results)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)
    return CliRun(proc.returncode, proc.stdout, proc.stderr, results or Path("/nonexistent"))


@pytest.fixture
def gpuprobe_cli(tmp_path):
    """Call as gpuprobe_cli([...args], env={...}); results land in a fresh folder.

    ``results=False`` passes no --results (for commands without one, like info).
    """
    counter = {"n": 0}

    def call(args: list[str], env: dict | None = None, results: Path | None | bool = None,
             timeout: float = 120) -> CliRun:
        counter["n"] += 1
        folder = None if results is False else (results or tmp_path / f"results{counter['n']}")
        return run_gpuprobe(args, folder, env, timeout)

    return call
