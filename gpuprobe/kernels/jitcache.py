"""The driver's JIT cache: where compiled PTX goes, how big it may grow, whether it can be written.

The driver keeps what it JIT-compiled in ``$CUDA_CACHE_PATH`` (default ``~/.nv/ComputeCache``)
up to ``$CUDA_CACHE_MAXSIZE`` bytes (default 1 GiB on servers and desktops, at most 4 GiB;
an entry bigger than the limit is never cached); ``CUDA_CACHE_DISABLE=1`` turns it off. A
cache that is off, too small, not writable or on a network file system shared by many nodes
makes every process pay for the JIT again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_MAXSIZE = 1 << 30
MAX_MAXSIZE = 4 << 30
NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "fuse.sshfs",
              "glusterfs", "fuse.glusterfs", "wekafs", "panfs", "9p")


@dataclass
class JitCache:
    path: str
    maxsize: int               # bytes
    maxsize_source: str        # "CUDA_CACHE_MAXSIZE" | "default"
    disabled: bool
    exists: bool
    writable: bool
    free_bytes: int | None     # free room on its file system
    fstype: str | None
    used_bytes: int | None = None   # what it holds now (None: not measured)

    @property
    def shared(self) -> bool:
        return (self.fstype or "") in NETWORK_FS

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shared"] = self.shared
        return d

    def describe(self) -> str:
        if self.disabled:
            return "JIT cache disabled (CUDA_CACHE_DISABLE=1): every process compiles again"
        parts = [f"limit {_size(self.maxsize)}" + (" (default)" if self.maxsize_source == "default" else "")]
        if self.used_bytes is not None:
            parts.append(f"{_size(self.used_bytes)} used")
        if self.free_bytes is not None:
            parts.append(f"{_size(self.free_bytes)} free on disk")
        parts.append("writable" if self.writable else "NOT writable")
        if self.fstype:
            parts.append(self.fstype + (" (network, shared by nodes)" if self.shared else ""))
        return f"JIT cache {self.path}: " + ", ".join(parts)


def _size(n: int) -> str:
    for unit, step in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} B"


def human_size(n: int) -> str:
    return _size(n)


def _existing_parent(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def fstype_of(path: Path) -> str | None:
    """The file system type of the mount that holds ``path`` (longest mount point in /proc/self/mounts)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


def _used(path: Path, limit_files: int = 50_000) -> int | None:
    total, n = 0, 0
    try:
        for root, _dirs, files in os.walk(path):
            for f in files:
                n += 1
                if n > limit_files:
                    return None
                try:
                    total += os.lstat(os.path.join(root, f)).st_size
                except OSError:
                    pass
    except OSError:
        return None
    return total


def inspect(environ: dict | None = None, measure_used: bool = True) -> JitCache:
    env = os.environ if environ is None else environ
    raw_path = env.get("CUDA_CACHE_PATH") or os.path.join(os.path.expanduser("~"), ".nv", "ComputeCache")
    path = Path(raw_path).expanduser()
    raw_max = (env.get("CUDA_CACHE_MAXSIZE") or "").strip()
    try:
        maxsize, source = (min(int(raw_max), MAX_MAXSIZE), "CUDA_CACHE_MAXSIZE") if raw_max else (DEFAULT_MAXSIZE, "default")
    except ValueError:
        maxsize, source = DEFAULT_MAXSIZE, "default"
    anchor = _existing_parent(path)
    try:
        free = shutil.disk_usage(anchor).free
    except OSError:
        free = None
    exists = path.is_dir()
    return JitCache(
        path=str(path), maxsize=maxsize, maxsize_source=source,
        disabled=(env.get("CUDA_CACHE_DISABLE") or "").strip() == "1",
        exists=exists, writable=os.access(anchor, os.W_OK | os.X_OK), free_bytes=free, fstype=fstype_of(anchor),
        used_bytes=_used(path) if (exists and measure_used) else (0 if measure_used else None))
