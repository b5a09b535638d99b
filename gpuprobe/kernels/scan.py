"""Scan a set of libraries, with a cache keyed by path, size and mtime.

A scan keeps a *summary* of each file (its images grouped by kind, architecture, variant and
version, with counts and sizes), which is all a verdict needs and small enough that reading
the cache for a whole CUDA stack takes milliseconds: preflight runs before every job.

The cache is one JSON file, ``$GPUPROBE_KERNELS_CACHE`` or ``~/.cache/gpuprobe/kernels-scan.json``
(``$XDG_CACHE_HOME`` honoured); it also remembers which libraries each site folder held, keyed
by the folder's mtime, which changes whenever a distribution is installed or removed there.
A cache that cannot be read is ignored, one that cannot be written is skipped: the answer
is the same, only slower.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gpuprobe.kernels import fatbin
from gpuprobe.kernels.discover import CUDART

CACHE_ENV = "GPUPROBE_KERNELS_CACHE"
CACHE_VERSION = 1


@dataclass
class Group:
    """Images of one kind/arch/variant/version in a file."""

    kind: str
    arch: int
    variant: str
    version: str
    count: int
    stored_bytes: int
    bytes: int
    compressed: int          # how many of them are compressed

    @property
    def name(self) -> str:
        return f"{'sm' if self.kind == 'sass' else 'compute'}_{self.arch}{self.variant}"

    @property
    def cc(self) -> tuple[int, int]:
        return divmod(self.arch, 10)


@dataclass
class Summary:
    containers: int = 0
    groups: list[Group] = field(default_factory=list)
    cudart: str | None = None       # the libcudart.so.N it links (DT_NEEDED), if any
    soname: str | None = None
    problems: list[str] = field(default_factory=list)
    error: str | None = None        # not readable / not ELF

    @property
    def has_device_code(self) -> bool:
        return bool(self.groups)

    def names(self, kind: str) -> list[str]:
        seen = {(g.arch, g.variant): g.name for g in self.groups if g.kind == kind}
        return [seen[k] for k in sorted(seen)]

    def to_dict(self) -> dict:
        return {"containers": self.containers, "cudart": self.cudart, "soname": self.soname,
                "problems": self.problems, "error": self.error,
                "groups": [[g.kind, g.arch, g.variant, g.version, g.count, g.stored_bytes, g.bytes, g.compressed]
                           for g in self.groups]}

    @classmethod
    def from_dict(cls, d: dict) -> "Summary":
        return cls(containers=d.get("containers", 0), cudart=d.get("cudart"), soname=d.get("soname"),
                   problems=list(d.get("problems") or []), error=d.get("error"),
                   groups=[Group(*g) for g in d.get("groups") or []])


def summarise(path: str) -> Summary:
    """Read ``path``'s entries straight into groups (no per-entry objects: libcublasLt has thousands)."""
    listing = fatbin.Listing(path=path)
    groups: dict[tuple, list] = {}
    for kind, arch, variant, version, stored, size, compressed in fatbin.walk(path, listing):
        g = groups.get((kind, arch, variant, version))
        if g is None:
            g = groups[(kind, arch, variant, version)] = [0, 0, 0, 0]
        g[0] += 1
        g[1] += stored
        g[2] += size
        g[3] += compressed
    cudart = next((n for n in listing.needed if CUDART.match(n)), None)
    return Summary(containers=listing.containers, groups=[Group(*k, *groups[k]) for k in sorted(groups)], cudart=cudart,
                   soname=listing.soname, problems=listing.problems)


def read_summary(path: str) -> Summary:
    try:
        return summarise(path)
    except fatbin.NotElf as exc:
        return Summary(error=str(exc))
    except OSError as exc:
        return Summary(error=f"{path}: {exc.strerror or exc}")


def default_cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpuprobe" / "kernels-scan.json"


class ScanCache:
    """Summaries by (path, size, mtime_ns), and library lists by site folder mtime."""

    def __init__(self, path: Path | None = None, enabled: bool = True):
        self.path = path or default_cache_path()
        self.enabled = enabled
        self.files: dict[str, list] = {}     # path -> [size, mtime_ns, summary dict]
        self.sites: dict[str, list] = {}     # folder -> [mtime_ns, [library paths]]
        self.dirty = False
        self.hits = self.misses = 0
        if enabled:
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == CACHE_VERSION:
                    self.files, self.sites = data.get("files") or {}, data.get("sites") or {}
            except (OSError, ValueError, AttributeError):
                pass

    def summary(self, path: str) -> Summary:
        try:
            st = os.stat(path)
        except OSError as exc:
            return Summary(error=f"{path}: {exc.strerror or exc}")
        hit = self.files.get(path)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            self.hits += 1
            return Summary.from_dict(hit[2])
        self.misses += 1
        s = read_summary(path)
        if self.enabled:
            self.files[path] = [st.st_size, st.st_mtime_ns, s.to_dict()]
            self.dirty = True
        return s

    def site_libs(self, folder: Path, walk) -> list[str]:
        """The libraries under a site folder: from the cache while the folder's mtime is unchanged."""
        key = str(folder)
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return []
        hit = self.sites.get(key)
        if hit and hit[0] == mtime:
            return list(hit[1])
        libs = walk(folder)
        if self.enabled:
            self.sites[key] = [mtime, libs]
            self.dirty = True
        return libs

    def save(self) -> None:
        if not (self.enabled and self.dirty):
            return
        # forget files that are gone, so the cache does not grow with every upgrade
        self.files = {p: v for p, v in self.files.items() if os.path.exists(p)}
        data = json.dumps({"version": CACHE_VERSION, "files": self.files, "sites": self.sites}, separators=(",", ":"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".kernels-scan.", dir=self.path.parent)
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError:
            pass  # a read-only home: no cache, same answers
