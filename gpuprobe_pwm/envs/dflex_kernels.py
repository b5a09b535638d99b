"""dflex's kernel cache: where it lives, whether it is valid here, its build lock, and an import
that fails with a reason instead of waiting forever on a dead build's lock.

How DiffRL's dflex builds its kernels (read in ``dflex/adjoint.py``, measured on the real wheel):
every ``import dflex`` generates the C++ source of its kernels and compares it with
``<dflex>/kernels/adjoint.gen``. Equal: it loads ``kernels.so`` ("Using cached kernels", ~2 s).
Different or missing: it prints "Rebuilding kernels" and builds with torch's
``cpp_extension.load_inline`` into the same folder (50-75 s of g++ on 2 cores), under torch's
``FileBaton`` lock ``kernels/lock``. The builder keeps that file open while it builds; a builder
that is killed leaves it behind, and every later import that must rebuild sleeps in
``FileBaton.wait`` forever. An import that finds a valid cache never looks at the lock.

The cache key is the generated source only: it differs between a node where torch sees CUDA (the
source then declares CUDA entry points) and one where it does not, but not between torch versions,
so ``kernels.so`` built against another torch is loaded as valid. :func:`inspect_cache` reads what
the build left (``build.ninja``) to say which torch, compiler, flags and CUDA it was built for.

:func:`import_dflex` is the import the trainer's adapter and the sim probe use. It first runs the
import with ``load_inline`` replaced by a function that raises (:func:`check_source`): a valid cache
loads as usual; otherwise nothing is built or locked, and the generated source is known. Only then
does it decide: a lock no live process holds is a :class:`DflexKernelError` naming it; a live
build is waited for while its holder is watched; an unwritable folder or a missing compiler is
named before the build would fail on it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

# File systems where a package folder is shared between nodes (and between jobs on them).
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "fuse.ceph", "glusterfs",
    "fuse.glusterfs", "panfs", "wekafs", "fuse.sshfs", "afs", "orangefs", "pvfs2", "9p", "fuse.juicefs",
})
# The entry points dflex declares only when it generates CUDA kernels too.
CUDA_MARKER = "_cuda_forward"
# Tools of a cpp_extension build: one with its cwd in the kernels folder is a build in progress.
BUILD_TOOLS = ("ninja", "nvcc", "cicc", "ptxas", "cc1plus", "c++", "g++", "gcc", "ld", "collect2")
BUILD_LOG_TAIL = 4000  # characters of the compiler's output kept when a build fails


class DflexKernelError(RuntimeError):
    """dflex cannot get its kernels here; ``kind`` names the cause, ``details`` the evidence."""

    def __init__(self, kind: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        # every kind is raised on the way to a rebuild: the cache was not valid for this node
        self.details = {"cache_valid": False, **(details or {})}


class _WouldBuild(Exception):
    """Raised by the stand-in for ``load_inline`` during :func:`check_source`."""

    def __init__(self, source: str) -> None:
        super().__init__("dflex would rebuild its kernels")
        self.source = source


# -- where and what -------------------------------------------------------------------------
def package_dir() -> Path | None:
    """The dflex package folder, found without importing dflex (None when not installed)."""
    try:
        spec = importlib.util.find_spec("dflex")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0]).resolve()
    return Path(spec.origin).resolve().parent if spec.origin else None


def kernels_dir(package: Path) -> Path:
    return package / "kernels"  # dflex/adjoint.py: os.path.dirname(__file__) + "/kernels"


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def filesystem_of(path: Path) -> dict:
    """The mount holding ``path`` (longest mount point prefix in /proc/self/mountinfo)."""
    target = str(path.resolve())
    best: dict = {"mount_point": None, "fs_type": None, "source": None}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return {**best, "network": None}
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        mount = _unescape_mount(fields[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and (best["mount_point"] is None or len(mount) >= len(best["mount_point"])):
            best = {"mount_point": mount, "fs_type": tail[0], "source": tail[1]}
    return {**best, "network": best["fs_type"] in NETWORK_FS_TYPES if best["fs_type"] else None}


def writable(folder: Path) -> dict:
    """Can this process create files in ``folder`` (or, if it is missing, create it)?"""
    probe = folder if folder.exists() else folder.parent
    read_only_fs = False
    try:
        read_only_fs = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        pass
    ok = os.access(probe, os.W_OK | os.X_OK) and not read_only_fs
    return {"writable": ok, "checked": str(probe), "read_only_fs": read_only_fs}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def parse_build_ninja(text: str) -> dict:
    """The variables of the ninja file torch wrote for the last build."""
    values = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\s*=\s*(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2).strip()
    cflags = values.get("cflags", "")
    torch_include = next(iter(re.findall(r"-isystem\s+(\S+/torch/include)(?:\s|$)", cflags)), None)
    return {
        "compiler": values.get("cxx"),
        "cflags": cflags,
        "ldflags": values.get("ldflags"),
        "with_cuda": "nvcc" in values,
        "nvcc": values.get("nvcc"),
        "cuda_cflags": values.get("cuda_cflags"),
        "torch_include": torch_include,
    }


def lock_holders(lock: Path) -> list[dict]:
    """Live processes on this node that have ``lock`` open (the FileBaton's owner keeps its fd open
    while it builds) or run a build tool inside its folder. A process on another node that shares
    the folder over a network file system cannot be seen from here."""
    import psutil

    target = str(lock)
    folder = str(lock.parent)
    found = []
    for proc in psutil.process_iter(["pid", "name", "cwd"]):
        try:
            if proc.pid == os.getpid():
                continue
            name = (proc.info.get("name") or "").lower()
            holds = any(f.path == target for f in proc.open_files())
            building = name in BUILD_TOOLS and (proc.info.get("cwd") or "").startswith(folder)
            if holds or building:
                found.append({"pid": proc.pid, "name": name, "holds_lock_open": holds,
                              "cmdline": " ".join(proc.cmdline())[:300]})
        except (psutil.Error, OSError):
            continue
    return found


def lock_state(lock: Path) -> dict | None:
    try:
        mtime = lock.stat().st_mtime
    except OSError:
        return None
    holders = lock_holders(lock)
    return {"path": str(lock), "age_s": round(time.time() - mtime, 1), "holders": holders,
            "stale": not holders, "rm": f"rm {lock}"}


def inspect_cache(package: Path) -> dict:
    """Everything the file system says about dflex's kernel cache; imports nothing."""
    kdir = kernels_dir(package)
    so, gen, ninja = kdir / "kernels.so", kdir / "adjoint.gen", kdir / "build.ninja"
    out: dict[str, Any] = {"kernels_dir": str(kdir), "exists": kdir.is_dir(), **writable(kdir),
                           "filesystem": filesystem_of(package)}
    out["kernels_so"] = ({"built": _iso(so.stat().st_mtime), "bytes": so.stat().st_size} if so.is_file() else None)
    if gen.is_file():
        text = gen.read_text(errors="replace")
        out["adjoint_gen"] = {"written": _iso(gen.stat().st_mtime), "bytes": len(text),
                              "with_cuda": CUDA_MARKER in text}
    else:
        out["adjoint_gen"] = None
    out["build"] = parse_build_ninja(ninja.read_text(errors="replace")) if ninja.is_file() else None
    out["lock"] = lock_state(kdir / "lock")
    return out


def node_match(cache: dict, valid: bool, cause: str | None = None) -> dict:
    """Whether the cached kernels are the ones this node needs: ``valid`` (dflex's own check, the
    generated source against adjoint.gen; ``cause`` says why not), this torch, and CUDA or not."""
    import torch
    from torch.utils import cpp_extension

    reasons = [] if valid else [cause or "adjoint.gen differs from the source dflex generates here"]
    build = cache.get("build") or {}
    torch_include = cpp_extension.include_paths()[0]
    if build.get("torch_include") and os.path.realpath(build["torch_include"]) != os.path.realpath(torch_include):
        reasons.append(f"built against the torch in {build['torch_include']}, this one is in {torch_include}")
    so = cache.get("kernels_so")
    torch_installed = Path(torch.__file__).with_name("version.py").stat().st_mtime
    if so and datetime.fromisoformat(so["built"]).timestamp() < torch_installed - 1:
        reasons.append(f"kernels.so ({so['built']}) is older than the installed torch ({_iso(torch_installed)}); "
                       "dflex's cache check does not look at torch, so it loads them anyway")
    return {"matches": not reasons, "reasons": reasons, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": bool(torch.cuda.is_available()), "compiler_now": compiler(),
            "built_with_cuda": build.get("with_cuda")}


def explain(exc: BaseException) -> tuple[str, str] | None:
    """(kind, one-line cause and remedy) for dflex's known failures that are not about its kernels."""
    text = str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("gym", "gym.spaces"):
        return "gym-missing", ("dflex imports gym at import time (dflex/envs/dflex_env.py: from gym import spaces) and "
                               f"it is not importable ({text}); dflex's metadata does not declare it: "
                               "pip install gym==0.26.2")
    if isinstance(exc, AttributeError) and "NumPy 2.0" in text:
        import numpy

        return "numpy2", (f"dflex uses NumPy 1 names removed in NumPy 2 ({text.splitlines()[0]}); numpy here is "
                          f"{numpy.__version__}: pip install 'numpy<2'")
    return None


# -- importing ------------------------------------------------------------------------------
def _forget_dflex() -> None:
    for name in [m for m in sys.modules if m == "dflex" or m.startswith("dflex.")]:
        del sys.modules[name]


@contextlib.contextmanager
def _no_build() -> Iterator[None]:
    from torch.utils import cpp_extension

    real = cpp_extension.load_inline

    def refuse(*_args: Any, **kwargs: Any) -> Any:
        raise _WouldBuild((kwargs.get("cpp_sources") or [""])[0])

    cpp_extension.load_inline = refuse
    try:
        yield
    finally:
        cpp_extension.load_inline = real


SHIPPED_CUDA_FLAG = "-gencode=arch=compute_50,code=compute_50"


def cuda_arch_flags(arch: str) -> list[str]:
    """``sm_90`` -> SASS for sm_90 plus its PTX (so a newer GPU can still JIT it)."""
    digits = arch.removeprefix("sm_").removeprefix("compute_")
    if not (digits.isdigit() and len(digits) in (2, 3)):
        raise ValueError(f"dflex_cuda_arch {arch!r} is not an architecture like sm_90 or sm_89")
    return [f"-gencode=arch=compute_{digits},code=sm_{digits}", f"-gencode=arch=compute_{digits},code=compute_{digits}"]


@contextlib.contextmanager
def _cuda_arch(arch: str | None) -> Iterator[None]:
    """Build dflex's CUDA kernels for ``arch`` instead of the compute_50 PTX it ships with.

    dflex passes ``-gencode=arch=compute_50,code=compute_50`` to ``load_inline``: PTX only, so
    every GPU JIT-compiles the kernels at first use, and CUDA 13's nvcc refuses compute_50
    outright. The flag is swapped in the call, so dflex's own files stay as installed.
    """
    if not arch:
        yield
        return
    from torch.utils import cpp_extension

    flags = cuda_arch_flags(arch)
    real = cpp_extension.load_inline

    def load_inline(*args: Any, **kwargs: Any) -> Any:
        cuda = [f for f in kwargs.get("extra_cuda_cflags") or [] if f != SHIPPED_CUDA_FLAG]
        kwargs["extra_cuda_cflags"] = cuda + flags
        return real(*args, **kwargs)

    cpp_extension.load_inline = load_inline
    try:
        yield
    finally:
        cpp_extension.load_inline = real


def check_source() -> tuple[bool, str | None, float]:
    """Import dflex without letting it build: (cache valid, generated source if not, seconds).

    With a valid cache dflex is imported for real (its kernels loaded). Otherwise it stops where it
    would call ``load_inline`` (before the lock), the half-imported modules are dropped, and the
    source it would have built is returned.
    """
    t = time.monotonic()
    try:
        with _no_build():
            importlib.import_module("dflex")
    except _WouldBuild as build:
        _forget_dflex()
        return False, build.source, time.monotonic() - t
    except BaseException:
        _forget_dflex()
        raise
    return True, None, time.monotonic() - t


def compiler() -> str | None:
    """The C++ compiler torch's cpp_extension would run (``$CXX``, else ``c++``), if on PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


@contextlib.contextmanager
def captured_output(path: Path) -> Iterator[None]:
    """Route this process's stdout and stderr (fds 1 and 2: ninja and g++ write there) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@dataclass
class ImportReport:
    """How ``import dflex`` went: what the probe records and the adapter logs."""

    package_dir: str
    cached: bool                 # the cache was valid (no build)
    import_s: float              # the whole import, check included
    build_s: float | None = None  # the kernel build alone, when there was one
    waited_for_build_s: float | None = None  # time spent waiting for another process's build
    cache: dict = field(default_factory=dict)
    match: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    build_log_tail: str | None = None
    rebuilt_because: str | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))


def _stale(lock: dict, cause: str, cache: dict, match: dict | None = None) -> DflexKernelError:
    return DflexKernelError(
        "stale-lock",
        f"stale kernel-build lock {lock['path']} (age {lock['age_s']:.0f} s), no live process on this node holds "
        f"it; dflex must rebuild its kernels ({cause}) and would wait on it forever in torch's FileBaton.wait: "
        f"make sure no job on another node is building there, then {lock['rm']}",
        {"lock": lock, "cache": cache, "match": match})


def _not_writable(package: Path, cause: str, where: dict, cache: dict, match: dict | None) -> DflexKernelError:
    return DflexKernelError(
        "not-writable",
        f"dflex must build its kernels ({cause}) into {kernels_dir(package)}, which this user cannot write"
        f"{' (read-only file system)' if where['read_only_fs'] else ''}: install dflex where you can write "
        "(a venv of your own), or have its owner run `python -c \"import dflex\"` once on a node like this",
        {"cache": cache, "match": match})


def _wait_for_build(lock_path: Path, cache: dict, cause: str, timeout_s: float | None,
                    on_wait: Callable[[dict], None] | None) -> float:
    """Wait for a live build to remove its lock; fail if its holders die first (or time runs out)."""
    t = time.monotonic()
    while True:
        state = lock_state(lock_path)
        if state is None:
            return time.monotonic() - t
        if state["stale"]:
            raise _stale(state, f"{cause}; the build it belonged to died while this import waited", cache)
        if on_wait is not None:
            on_wait(state)
        if timeout_s is not None and time.monotonic() - t > timeout_s:
            raise DflexKernelError("build-timeout", f"another process (pid {state['holders'][0]['pid']}) has been "
                                   f"building dflex's kernels for over {timeout_s:.0f} s", {"lock": state})
        time.sleep(0.5)


def _rebuild_cause(cache: dict, source: str | None) -> str:
    gen = cache.get("adjoint_gen")
    if gen is None:
        return "no kernel cache"
    if source is not None and (CUDA_MARKER in source) != gen["with_cuda"]:
        return f"the cache was built on a node {'with' if gen['with_cuda'] else 'without'} CUDA"
    return "the cached adjoint.gen differs from the source this dflex generates"


def import_dflex(allow_lock: bool = False, wait_s: float | None = None,
                 on_wait: Callable[[dict], None] | None = None, build_log: Path | None = None,
                 on_phase: Callable[[str, dict], None] | None = None,
                 cuda_arch: str | None = None) -> ImportReport:
    """``import dflex`` without the silent hang; raises :class:`DflexKernelError` with the cause.

    ``allow_lock`` imports even past a stale lock (to reproduce the hang under a watchdog).
    ``wait_s`` bounds the wait for another live process's build (None: as long as it lives).
    The compiler's output of a build goes to ``build_log`` (a temporary file if None); its tail is
    kept in the report and in the error when the build fails. ``on_phase(name, data)`` is called
    before each step ("check_source", "wait_for_build", "build"): the sim probe marks them.
    ``cuda_arch`` (``sm_90``) builds the CUDA kernels for that architecture instead of dflex's
    compute_50 PTX (a cached build is used as it is).
    """
    if cuda_arch:
        cuda_arch_flags(cuda_arch)   # a bad value fails before anything is imported
    phase = on_phase or (lambda _name, _data: None)
    if "dflex" in sys.modules:
        package = Path(sys.modules["dflex"].__file__).resolve().parent
        return ImportReport(str(package), True, 0.0, cache=inspect_cache(package))
    package = package_dir()
    if package is None:
        raise ModuleNotFoundError("No module named 'dflex'", name="dflex")
    t = time.monotonic()
    cache = inspect_cache(package)
    phase("check_source", {"lock": (cache["lock"] or {}).get("path"), "adjoint_gen": cache["adjoint_gen"] is not None})
    try:
        cached, source, _ = check_source()
    except OSError as exc:  # dflex creates kernels/ before it looks at the cache
        if exc.filename and str(exc.filename).startswith(str(kernels_dir(package))):
            raise _not_writable(package, "no kernels folder", writable(kernels_dir(package)), cache, None) from exc
        raise
    report = ImportReport(str(package), cached, 0.0, cache=cache)
    if cached:
        if cache["lock"]:
            report.warnings.append(
                f"stale kernel-build lock {cache['lock']['path']} (age {cache['lock']['age_s']:.0f} s) beside a valid "
                f"cache: harmless now, but the next rebuild (a dflex or CUDA change) waits on it forever; "
                f"{cache['lock']['rm']}")
        report.import_s = time.monotonic() - t
        report.match = node_match(cache, True)
        return report
    cause = _rebuild_cause(cache, source)
    report.match = node_match(cache, False, cause)
    lock = cache["lock"]
    if lock and not allow_lock:
        if lock["stale"]:
            raise _stale(lock, cause, cache, report.match)
        phase("wait_for_build", {"lock": lock["path"], "holders": lock["holders"]})
        waited = _wait_for_build(Path(lock["path"]), cache, cause, wait_s, on_wait)
        # the other build is done: its cache is normally valid now; decide again from scratch
        again = import_dflex(allow_lock, wait_s, on_wait, build_log, on_phase, cuda_arch)
        again.waited_for_build_s = waited + (again.waited_for_build_s or 0.0)
        again.import_s = time.monotonic() - t
        return again
    if not (lock and allow_lock):
        where = writable(kernels_dir(package))
        if not where["writable"]:
            raise _not_writable(package, cause, where, cache, report.match)
        if compiler() is None:
            raise DflexKernelError(
                "no-compiler",
                f"dflex must build its kernels ({cause}) but no C++ compiler "
                f"({os.environ.get('CXX', 'c++')}) is on PATH: load the compiler module (module load gcc) or "
                "install g++, or import dflex once where one is, on a node like this",
                {"cache": cache, "match": report.match, "PATH": os.environ.get("PATH", "")})
    log_path = build_log or Path(tempfile.mkstemp(prefix="dflex-build-", suffix=".log")[1])
    phase("build", {"because": cause, "lock": (lock or {}).get("path"), "stale_lock": bool(lock and lock["stale"]),
                    "log": str(log_path), "cuda_flags": cuda_arch_flags(cuda_arch) if cuda_arch else [SHIPPED_CUDA_FLAG]})
    b = time.monotonic()
    try:
        with captured_output(log_path), _cuda_arch(cuda_arch):
            importlib.import_module("dflex")
    except Exception as exc:
        _forget_dflex()
        tail = log_path.read_text(errors="replace")[-BUILD_LOG_TAIL:]
        raise DflexKernelError("build-failed", f"dflex's kernel build failed ({type(exc).__name__}: {exc}); "
                               f"compiler output in {log_path}", {"cache": inspect_cache(package),
                                                                 "build_log": str(log_path),
                                                                 "build_log_tail": tail}) from exc
    report.build_s = time.monotonic() - b
    report.import_s = time.monotonic() - t
    report.cache = inspect_cache(package)
    report.match = node_match(report.cache, True)
    report.rebuilt_because = cause
    report.build_log_tail = log_path.read_text(errors="replace")[-BUILD_LOG_TAIL:]
    return report
