"""``gpuprobe kernels`` as a library: find the stack's binaries, scan them, judge them for a GPU.

Nothing here imports torch or touches CUDA: a check is safe on a login node and quick
enough for preflight (the scan cache makes a repeat check a few stats and one small read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gpuprobe.kernels import cudaversions as cv
from gpuprobe.kernels import discover, gpus, jitcache
from gpuprobe.kernels.discover import Candidate
from gpuprobe.kernels.scan import ScanCache, Summary
from gpuprobe.kernels.verdict import (CANNOT_RUN, JIT, BinaryVerdict, Target, judge, remedies, stack_verdict)


# the order binaries are listed in: what the user installed first, the CUDA wheels under it after
ROLE_ORDER = {discover.GIVEN: 0, discover.TORCH: 1, discover.DFLEX: 2, discover.EXTENSION: 3, discover.PACKAGE: 4,
              discover.CUDA_WHEEL: 5}


class CheckError(ValueError):
    """Bad input for a check (unknown GPU model, a path that is not a binary): a usage error."""


@dataclass
class Environment:
    torch_version: str | None = None
    torch_cuda: str | None = None
    torch_dir: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    runtimes: dict[int, str] = field(default_factory=dict)   # CUDA runtime wheels installed: major -> "13.0"


@dataclass
class Report:
    target: Target
    binaries: list[BinaryVerdict]
    verdict: str
    remedies: list[str]
    cache: jitcache.JitCache
    env: Environment
    scanned: int = 0
    cache_hits: int = 0

    @property
    def cannot_run(self) -> list[BinaryVerdict]:
        return [b for b in self.binaries if b.candidate.in_stack and b.verdict in CANNOT_RUN]

    @property
    def jit(self) -> list[BinaryVerdict]:
        return [b for b in self.binaries if b.candidate.in_stack and b.verdict == JIT]

    def to_contract(self) -> dict:
        """The JSON contract of ``gpuprobe kernels --json`` (docs/KERNELS.md): these keys, nothing else."""
        return {"gpu": self.target.to_contract(), "binaries": [b.to_contract() for b in self.binaries],
                "verdict": self.verdict, "remedies": list(self.remedies)}

    def summary_line(self) -> str:
        counts: dict[str, int] = {}
        for b in self.binaries:
            if b.candidate.in_stack:
                counts[b.verdict] = counts.get(b.verdict, 0) + 1
        return f"{self.verdict}: " + ", ".join(f"{n} {v}" for v, n in counts.items()) if counts else f"{self.verdict}: no CUDA binaries in the stack"


# -- the GPU ---------------------------------------------------------------------------
def target_from(gpu: str | None = None, cc: str | None = None, driver: str | None = None,
                fingerprint: dict | None = None, fingerprint_source: str = "NVML") -> Target:
    """The GPU a verdict is for: named ones (``gpu``, ``cc``, ``driver``) override the fingerprint's."""
    name, cap, drv, drv_cuda, source = None, None, None, None, "named"
    if fingerprint is not None:
        gpu0 = (fingerprint.get("gpus") or [{}])[0] or {}
        raw = gpu0.get("name")
        name = re.sub(r"^NVIDIA\s+", "", raw) if isinstance(raw, str) else None
        fcc = gpu0.get("compute_capability")
        cap = gpus.parse_cc(fcc) if isinstance(fcc, str) else None
        drv = fingerprint.get("driver_version") if isinstance(fingerprint.get("driver_version"), str) else None
        fcuda = fingerprint.get("cuda_driver_version")
        drv_cuda = fcuda if isinstance(fcuda, str) else None
        source = fingerprint_source
        if cap is None and name and gpus.find(name):
            cap = gpus.parse_cc(gpus.find(name).cc)
    if gpu:
        model = gpus.find(gpu)
        if model is None:
            raise CheckError(f"unknown GPU model {gpu!r} (known: {', '.join(gpus.names())}); or give --cc X.Y")
        name, cap, source = model.name, gpus.parse_cc(model.cc), "named"
    if cc:
        try:
            cap = gpus.parse_cc(cc)
        except ValueError as exc:
            raise CheckError(str(exc)) from None
        source = "named"
    if driver:
        if not cv.vtuple(driver):
            raise CheckError(f"{driver!r} is not a driver version like 575.57.08")
        if driver != drv:
            drv, drv_cuda = driver, cv.driver_cuda(driver)[0]
    if cap is None:
        raise CheckError("no GPU to judge for: NVML sees none here; name one with --gpu MODEL, --cc X.Y or "
                         "--fingerprint FILE")
    return Target(name=name or f"compute capability {cap[0]}.{cap[1]}", cc=cap, driver=drv, driver_cuda=drv_cuda,
                  source=source)


# -- the stack -------------------------------------------------------------------------
def environment(cache: ScanCache, include_env: bool = True) -> Environment:
    """The stack's binaries: torch, the CUDA wheels, dflex's kernels, extensions, other packages."""
    env = Environment()
    if not include_env:
        return env
    tdir = discover.torch_dir()
    if tdir is not None:
        env.torch_dir = str(tdir)
        env.torch_cuda = discover.torch_cuda(tdir)
        m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", _read(tdir / "version.py"), re.M)
        env.torch_version = m.group(1) if m else None
    seen: set[str] = set()
    for site in discover.site_dirs():
        runtimes = discover.cudart_versions(site)
        env.runtimes.update(runtimes)
        wheels = discover.wheel_majors(site)
        for path in cache.site_libs(site, discover.walk_libs):
            if path in seen:
                continue
            seen.add(path)
            env.candidates.append(discover.classify(path, site, tdir, env.torch_cuda, runtimes, wheels))
    dk = discover.dflex_kernels_dir()
    for root, role in ([(dk, discover.DFLEX)] if dk and dk.is_dir() else []) + \
                      [(d, discover.EXTENSION) for d in discover.extension_dirs()]:
        for path in discover.walk_libs(root, limit=20_000):
            env.candidates = [c for c in env.candidates if c.path != path]
            env.candidates.append(Candidate(path, role, "dflex" if role == discover.DFLEX else Path(path).parent.name))
            seen.add(path)
    return env


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def given(paths: list[str]) -> tuple[list[Candidate], set[str]]:
    """Candidates for paths named on the command line, and which of them were named as files."""
    out, files = [], set()
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            out += [Candidate(f, discover.GIVEN, str(p)) for f in discover.walk_libs(p)]
        elif p.is_file():
            out.append(Candidate(str(p), discover.GIVEN, str(p.parent)))
            files.add(str(p))
        else:
            raise CheckError(f"{raw}: no such file or folder")
    return out, files


def check(target: Target, paths: list[str] | None = None, include_env: bool = True, use_cache: bool = True,
          cache_path: Path | None = None, measure_cache_use: bool = True) -> Report:
    """Judge the stack (and ``paths``) for ``target``."""
    cache = ScanCache(cache_path, enabled=use_cache)
    env = environment(cache, include_env=include_env)
    extra, named_files = given(list(paths or []))
    runtimes_all = env.runtimes or {k: v for site in discover.site_dirs() for k, v in discover.cudart_versions(site).items()}
    jit_cache = jitcache.inspect(measure_used=measure_cache_use)
    binaries: list[BinaryVerdict] = []
    by_path = {c.path: c for c in env.candidates}
    for c in extra:
        by_path[c.path] = c   # named on the command line: always shown, always counted
    for c in by_path.values():
        s = cache.summary(c.path)
        if s.error:
            if c.path in named_files:   # a file the user named must be a binary; found ones may be anything
                raise CheckError(s.error)
            continue
        if not s.has_device_code and not (s.soname and discover.CUDART.match(Path(c.path).name)):
            continue   # a host-only library: nothing to judge
        if c.runtime is None and s.cudart:
            c.runtime = discover.runtime_from_needed([s.cudart], env.torch_cuda, runtimes_all)
        binaries.append(judge(c, s, target, jit_cache))
    cache.save()
    binaries.sort(key=lambda b: (not b.candidate.in_stack, ROLE_ORDER.get(b.candidate.role, 9), b.path))
    verdict = stack_verdict(binaries)
    return Report(target=target, binaries=binaries, verdict=verdict,
                  remedies=remedies(binaries, target, env.torch_version, env.torch_cuda, jit_cache),
                  cache=jit_cache, env=env, scanned=cache.misses, cache_hits=cache.hits)


def summary_of(s: Summary) -> str:
    return f"SASS {', '.join(s.names('sass')) or '-'}; PTX {', '.join(s.names('ptx')) or '-'}"
