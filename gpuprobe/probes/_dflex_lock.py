"""Find a stale kernel-build lock of dflex before anything imports it.

DiffRL's dflex builds its kernels with ``torch.utils.cpp_extension.load_inline`` into
``<dflex package>/kernels/``. torch guards a build with a ``lock`` file (``FileBaton``);
a build that was killed leaves the file behind, and every later import waits on it
forever (``FileBaton.wait``: a sleep loop, no output, no timeout). torch's default
extensions folder (``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``) has the
same failure mode, so it is looked at too.

Everything here works from the import system's metadata and the file system: dflex is
never imported, so the check itself cannot get stuck on the lock it is looking for.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Processes that take part in a torch cpp_extension / CUDA build: if one is alive, a lock
# may belong to a build in progress rather than to a dead one.
BUILD_PROCESS_NAMES = ("ninja", "nvcc", "cicc", "ptxas", "cc1plus", "c++", "g++", "gcc", "fatbinary", "nvlink")
MAX_EXTENSION_LOCKS = 32  # bound the walk of torch's extensions folder on a shared home


@dataclass
class BuildLock:
    path: str
    age_s: float
    holders: list[dict] = field(default_factory=list)   # live build processes that may own it

    @property
    def stale(self) -> bool:
        return not self.holders

    def to_dict(self) -> dict:
        return {**asdict(self), "stale": self.stale}


def dflex_package_dir() -> Path | None:
    """The dflex package folder, found without importing dflex (None when not installed)."""
    try:
        spec = importlib.util.find_spec("dflex")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    return Path(spec.origin).parent if spec.origin else None


def torch_extensions_dir() -> Path:
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "torch_extensions"


def build_processes(folder: Path | None = None) -> list[dict]:
    """Live processes working on ``folder`` (cwd inside it, or named on the command line).

    ninja runs with its cwd in the build folder and names its files there, so a build in
    progress shows up; a compiler somewhere else on a shared node does not count.
    With ``folder=None``: every process whose name is a build tool (recorded as context).
    """
    import psutil

    from gpuprobe.redact import redact_text

    found = []
    want = str(folder) if folder is not None else None
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        try:
            info = proc.info
            name = (info.get("name") or "").lower()
            cmd = " ".join(info.get("cmdline") or [])
            if want is None:
                hit = name in BUILD_PROCESS_NAMES
            else:
                hit = (info.get("cwd") or "").startswith(want) or want in cmd
            if hit and info["pid"] != os.getpid():
                found.append({"pid": info["pid"], "name": name, "cmdline": redact_text(cmd)[:300]})
        except (psutil.Error, OSError):
            continue
    return found


def find_locks(kernels_dir: Path | None, include_torch_extensions: bool = True) -> list[BuildLock]:
    """Every ``lock`` file in dflex's kernels folder and in torch's extensions folder."""
    candidates: list[Path] = []
    if kernels_dir is not None and kernels_dir.is_dir():
        candidates += [p for p in kernels_dir.rglob("lock") if p.is_file()]
    ext = torch_extensions_dir()
    if include_torch_extensions and ext.is_dir():
        for p in ext.rglob("lock"):
            if len(candidates) >= MAX_EXTENSION_LOCKS:
                break
            if p.is_file():
                candidates.append(p)
    if not candidates:
        return []
    now = time.time()
    locks = []
    for path in candidates:
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue  # removed while we looked: a live build finishing
        locks.append(BuildLock(str(path), round(age, 1), build_processes(path.parent)))
    return locks


def lock_report(package_dir: Path | None) -> dict:
    """What the sim stage records before importing dflex."""
    kernels = package_dir / "kernels" if package_dir is not None else None
    locks = find_locks(kernels)
    stale = [lk for lk in locks if lk.stale]
    return {
        "kernels_dir": str(kernels) if kernels is not None else None,
        "kernels_dir_exists": bool(kernels and kernels.is_dir()),
        "torch_extensions_dir": str(torch_extensions_dir()),
        "locks": [lk.to_dict() for lk in locks],
        "stale": bool(stale),
        # context only: a build tool elsewhere on the node does not make a lock live
        "build_processes_on_node": build_processes(None) if locks else [],
    }


def stale_lock_reason(report: dict) -> str:
    stale = [lk for lk in report["locks"] if lk["stale"]]
    paths = ", ".join(f"{lk['path']} (age {lk['age_s']:.0f} s)" for lk in stale)
    return (f"stale kernel-build lock {paths}, no live build process (ninja/nvcc) holds it: "
            f"importing dflex would wait on it forever in torch's FileBaton.wait; "
            f"remove it (rm {' '.join(lk['path'] for lk in stale)}) and import again")
