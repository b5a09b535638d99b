"""Run directories: naming, run.json metadata, the logdir index and `latest` links, metrics.jsonl.

Layout under a logdir (absolute, fixed at start-up: Hydra and job scripts change the cwd):
  <logdir>/<alg>_<env>_seed<seed>_<YYYYmmdd-HHMMSS>/   one run: run.json, metrics.jsonl, *.pt
  <logdir>/<alg>_<env>_seed<seed>_latest -> the newest run of that name (relative symlink)
  <logdir>/index.json                     {"runs": [{name, prefix, path, started, ...}]}
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpuprobe_pwm.checkpoint import atomic_write

log = logging.getLogger(__name__)

INDEX = "index.json"
RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path | None:
    """The checkout this package lives in (a parent with setup.cfg and a .git), else None."""
    root = PACKAGE_DIR.parent
    if (root / "setup.cfg").is_file() and (root / ".git").exists():
        return root
    return None


def default_logdir(start_cwd: Path) -> Path:
    """<checkout>/runs inside a checkout, else <cwd at start-up>/runs; never the current cwd."""
    root = repo_root()
    return ((root if root is not None else Path(start_cwd)) / "runs").resolve()


def run_prefix(alg: str, env: str, seed: int) -> str:
    # Env names like "gym:Pendulum-v1" carry characters that do not belong in a folder name.
    env = re.sub(r"[^A-Za-z0-9._-]", "_", env)
    return f"{alg}_{env}_seed{seed}"


def make_run_dir(logdir: Path, prefix: str, now: float | None = None) -> Path:
    """Create <logdir>/<prefix>_<YYYYmmdd-HHMMSS>; a run started the same second gets a suffix."""
    logdir = Path(logdir).resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    for i in range(1000):
        path = logdir / (f"{prefix}_{stamp}" + (f"-{i}" if i else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory for {prefix} in {logdir}")


@dataclass
class NodeFingerprint:
    """Light: no NVML, no CUDA context beyond what the trainer already made."""

    hostname: str
    python: str
    torch: str
    device: str
    device_name: str
    platform: str


def node_fingerprint(device: str = "cpu") -> NodeFingerprint:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
    return NodeFingerprint(hostname=socket.gethostname(), python=platform.python_version(),
                           torch=torch.__version__, device=str(dev), device_name=name,
                           platform=platform.platform())


def git_commit(path: Path | None) -> str | None:
    """HEAD of the checkout at `path` (with '-dirty' if modified); None without git or a checkout."""
    if path is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _write_json(path: Path, data: Any) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write(path, write)


def write_run_json(run_dir: Path, data: dict[str, Any]) -> Path:
    path = Path(run_dir) / RUN_JSON
    _write_json(path, data)
    return path


def update_run_json(run_dir: Path, **fields: Any) -> None:
    path = Path(run_dir) / RUN_JSON
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(fields)
    _write_json(path, data)


@contextmanager
def _locked(logdir: Path) -> Iterator[None]:
    # Several runs (array jobs) may share one logdir; the lock serialises read-modify-write of
    # the index. flock works on local disks; on NFS it is advisory at worst.
    with open(logdir / ".index.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def latest_link(logdir: Path, prefix: str) -> Path:
    return Path(logdir) / f"{prefix}_latest"


def register_run(logdir: Path, run_dir: Path, prefix: str, extra: dict[str, Any] | None = None) -> None:
    """Add the run to <logdir>/index.json and point <prefix>_latest at it, both atomically."""
    logdir, run_dir = Path(logdir).resolve(), Path(run_dir).resolve()
    entry = {"name": run_dir.name, "prefix": prefix, "path": str(run_dir),
             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
    with _locked(logdir):
        index_path = logdir / INDEX
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            index = {"runs": []}
        index["runs"] = [r for r in index.get("runs", []) if r.get("path") != entry["path"]] + [entry]
        _write_json(index_path, index)
        link = latest_link(logdir, prefix)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(run_dir.name)  # relative: survives moving the whole logdir
            os.replace(tmp, link)
        except OSError as exc:  # filesystems without symlinks: the index is enough
            tmp.unlink(missing_ok=True)
            log.warning("could not create %s: %s", link, exc)


def find_run(logdir: Path, name: str) -> Path:
    """The newest run whose name or prefix is `name`: the `latest` link, else the index, else a scan."""
    logdir = Path(logdir).expanduser().resolve()
    direct = logdir / name
    if (direct / RUN_JSON).is_file() or (direct / METRICS).is_file():
        return direct.resolve()
    link = latest_link(logdir, name)
    if link.exists():
        return link.resolve()
    try:
        runs = json.loads((logdir / INDEX).read_text()).get("runs", [])
    except (OSError, json.JSONDecodeError):
        runs = []
    for entry in reversed(runs):
        if entry.get("prefix") == name or entry.get("name") == name:
            path = Path(entry["path"])
            if not path.is_dir():
                path = logdir / entry["name"]
            if path.is_dir():
                return path
    candidates = sorted(p for p in logdir.glob(f"{name}_*") if p.is_dir() and not p.is_symlink())
    if candidates:
        return candidates[-1].resolve()
    raise FileNotFoundError(f"no run named {name!r} in {logdir}")


def run_metadata(argv: list[str], config: dict[str, Any], run_dir: Path, logdir: Path,
                 start_cwd: Path, device: str) -> dict[str, Any]:
    from gpuprobe import api   # run.json is shared like a result file: no credentials in it

    root = repo_root()
    return {
        "command": api.redact_command([sys.executable, *argv]),
        "config": api.redact_config(config),
        "git_commit": git_commit(root),
        "fingerprint": asdict(node_fingerprint(device)),
        "paths": {"run_dir": str(Path(run_dir).resolve()), "logdir": str(Path(logdir).resolve()),
                  "start_cwd": str(Path(start_cwd).resolve()),
                  "repo": str(root) if root is not None else None},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "running",
    }


class MetricsLog:
    """metrics.jsonl: one JSON object per epoch, flushed per line so a killed run keeps its data."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - held for the whole run

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=float) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a metrics.jsonl; a torn last line (killed run) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
