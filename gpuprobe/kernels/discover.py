"""Which CUDA binaries this Python environment would load, and against which CUDA runtime each was built.

Found without importing anything (torch's import alone takes seconds, dflex's builds kernels):

* ``torch``: every shared library under the torch package; built against ``torch.version.cuda``,
  read from the text of ``torch/version.py``;
* ``cuda-wheel``: the ``nvidia-*`` wheels (``nvidia/cu13/lib``, ``nvidia/cudnn/lib``, ...);
  ``libcudart.so.N`` carries the runtime's own version (its wheel's version, else N);
* ``dflex``: the kernels dflex built into ``<dflex>/kernels/``;
* ``extension``: torch extensions (``$TORCH_EXTENSIONS_DIR``, ``~/.cache/torch_extensions``);
* ``package``: any other installed package's shared library, kept only when it carries
  device code (torchrl, triton, ...);
* ``given``: files or folders named on the command line.

The CUDA wheels count for the stack only when torch is a CUDA build (a CPU torch never loads
them); the others always count.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TORCH, CUDA_WHEEL, DFLEX, EXTENSION, PACKAGE, GIVEN = "torch", "cuda-wheel", "dflex", "extension", "package", "given"
SHARED_LIB = re.compile(r"\.so(\.\d+)*$")
CUDART = re.compile(r"^libcudart\.so(\.(\d+)(\.\d+)*)?$")
# folders that hold headers, data or tests, never a library a training job loads
SKIP_DIRS = {"include", "__pycache__", "tests", "test", "testing", "headers", "share", "doc", "docs"}
MAX_WALK_FILES = 200_000   # bound a walk of a folder named on the command line


@dataclass
class Candidate:
    path: str
    role: str
    owner: str                  # the package or folder it belongs to ("torch", "cu13", "dflex", ...)
    runtime: str | None = None  # CUDA runtime it was built against: "13.0", or a major only ("13")
    in_stack: bool = True


def site_dirs() -> list[Path]:
    """The folders on sys.path that hold installed distributions (site-packages and the like)."""
    import sysconfig

    stdlib = {os.path.abspath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    out: list[Path] = []
    for entry in sys.path:
        entry = os.path.abspath(entry or ".")
        if entry in stdlib or entry.endswith("lib-dynload") or Path(entry) in out or not os.path.isdir(entry):
            continue
        if os.path.basename(entry) in ("site-packages", "dist-packages") or _has_dist_info(entry):
            out.append(Path(entry))
    return out


def _has_dist_info(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.endswith(".dist-info") for e in it)
    except OSError:
        return False


def torch_cuda(torch_dir: Path) -> str | None:
    """``torch.version.cuda`` from the text of ``torch/version.py`` (None: a CPU build or no torch)."""
    try:
        text = (torch_dir / "version.py").read_text()
    except OSError:
        return None
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m.group(1) if m else None


def torch_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def dflex_kernels_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("dflex")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "kernels"


def extension_dirs(environ: dict | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    dirs = []
    if env.get("TORCH_EXTENSIONS_DIR"):
        dirs.append(Path(env["TORCH_EXTENSIONS_DIR"]).expanduser())
    dirs.append(Path(os.path.expanduser("~")) / ".cache" / "torch_extensions")
    return [d for i, d in enumerate(dirs) if d.is_dir() and d not in dirs[:i]]


def walk_libs(root: Path, limit: int = MAX_WALK_FILES) -> list[str]:
    """Every shared library under ``root`` (``*.so``, ``*.so.N``), symlinks skipped, sorted."""
    out: list[str] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for f in filenames:
            seen += 1
            if seen > limit:
                return sorted(out)
            if SHARED_LIB.search(f):
                p = os.path.join(dirpath, f)
                if not os.path.islink(p):
                    out.append(p)
    return sorted(out)


def cudart_versions(site: Path) -> dict[int, str]:
    """Major -> "major.minor" of the CUDA runtime wheels installed in ``site`` (nvidia-cuda-runtime*)."""
    out: dict[int, str] = {}
    try:
        names = [n for n in os.listdir(site) if n.startswith("nvidia_cuda_runtime") and n.endswith(".dist-info")]
    except OSError:
        names = []
    for name in names:
        m = re.match(r"nvidia_cuda_runtime(?:_cu\d+)?-(\d+)\.(\d+)", name)
        if m:
            out[int(m.group(1))] = f"{m.group(1)}.{m.group(2)}"
    return out


def wheel_majors(site: Path) -> dict[str, int]:
    """CUDA major of each nvidia/<folder> from its wheel's name: nvidia_cudnn_cu13-9.24.dist-info -> cudnn: 13."""
    out: dict[str, int] = {}
    try:
        names = os.listdir(site)
    except OSError:
        return out
    for name in names:
        m = re.match(r"nvidia_([a-z0-9_]+?)_cu(\d{2})-.*\.dist-info$", name)
        if m:
            out.setdefault(m.group(1), int(m.group(2)))
    return out


def classify(path: str, site: Path | None, torch_root: Path | None, torch_cuda_version: str | None,
             runtimes: dict[int, str], wheels: dict[str, int] | None = None) -> Candidate:
    """Role, owner and CUDA runtime of one library found in ``site`` (or elsewhere)."""
    # plain string work: this runs for every library on preflight's path, and pathlib costs 10x
    name = os.path.basename(path)
    m = CUDART.match(name)
    if torch_root is not None and _under(path, str(torch_root)):
        return Candidate(path, TORCH, "torch", torch_cuda_version)
    nvidia = os.path.join(str(site), "nvidia") if site is not None else None
    if nvidia is not None and _under(path, nvidia):
        owner = path[len(nvidia) + 1:].split(os.sep, 1)[0]
        runtime = None
        if m and m.group(2):
            runtime = runtimes.get(int(m.group(2)), m.group(2))
        else:
            # nvidia/cu13/lib (CUDA 13 wheels), else the folder's wheel name (nvidia_cudnn_cu13 for nvidia/cudnn)
            major = re.search(r"cu(\d{2})\b", owner + "/" + name)
            n = int(major.group(1)) if major else (wheels or {}).get(owner)
            runtime = runtimes.get(n, str(n)) if n else None
        return Candidate(path, CUDA_WHEEL, owner, runtime, in_stack=torch_cuda_version is not None)
    if site is not None and _under(path, str(site)):
        owner = path[len(str(site)) + 1:].split(os.sep, 1)[0]
    else:
        owner = os.path.dirname(path)
    return Candidate(path, PACKAGE, owner, runtimes.get(int(m.group(2)), m.group(2)) if m and m.group(2) else None)


def _under(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


def runtime_from_needed(needed: list[str], torch_cuda_version: str | None, runtimes: dict[int, str]) -> str | None:
    """The runtime a library links (``libcudart.so.13`` in DT_NEEDED) as precisely as we know it."""
    for lib in needed:
        m = CUDART.match(lib)
        if m and m.group(2):
            major = int(m.group(2))
            if torch_cuda_version and torch_cuda_version.split(".")[0] == str(major):
                return torch_cuda_version
            return runtimes.get(major, str(major))
    return None
