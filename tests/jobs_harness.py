"""Start the test jobs in tests/fixtures/jobs/ as a user would start a job: its own process,
stdout to a log file, and make sure none outlives its test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

JOBS = Path(__file__).resolve().parent / "fixtures" / "jobs"


def job_cmd(name: str, *args: str) -> list[str]:
    return [sys.executable, str(JOBS / name), *args]


class Job:
    """A job started with stdout/stderr to ``log`` (block-buffered, as under SLURM)."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None, wait_for: str | None = None,
                 unbuffered: bool = False):
        full = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED",) and not k.startswith("GPUPROBE_")}
        if unbuffered:
            full["PYTHONUNBUFFERED"] = "1"
        full.update(env or {})
        self.log = log
        self.fh = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=full, start_new_session=True)
        if wait_for:
            self.wait_for(wait_for)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, path: str, timeout: float = 60.0) -> None:
        """Until ``path`` exists (the job signals it got where the test wants it)."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            assert self.proc.poll() is None, f"job exited early: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"job did not reach {path}"
            time.sleep(0.05)

    def alive(self) -> bool:
        try:
            return psutil.Process(self.pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED)
        except psutil.Error:
            return False

    def stop(self) -> None:
        try:
            os.killpg(self.pid, 9)
        except OSError:
            pass
        self.proc.wait(timeout=10)
        self.fh.close()


def descendants_alive(pid_file_or_pids: list[int]) -> list[int]:
    return [p for p in pid_file_or_pids if psutil.pid_exists(p)
            and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
