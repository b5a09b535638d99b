"""The node fingerprint: what hardware and software stack a result was measured on.

Taken on the parent side without importing torch or dflex (both can hang or take
seconds): GPU facts come from NVML, package versions from installed metadata, and the
torch CUDA build from the text of ``torch/version.py``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpuprobe.node.nvml import Nvml, quick_gpu_summary


@dataclass
class Fingerprint:
    hostname: str
    os: str
    kernel: str
    python: str
    cpu_model: str
    cpu_count: int
    ram_bytes: int
    nvml: dict                       # {"available": bool, "reason": str | None}
    driver_version: str | None       # e.g. "575.57.08"
    cuda_driver_version: str | None  # highest CUDA the driver supports, e.g. "12.9"
    gpus: list[dict] = field(default_factory=list)
    torch: dict | None = None        # {"version": "2.13.0+cpu", "cuda": "12.8" | None}
    dflex: dict = field(default_factory=dict)  # {"available": bool, "version"|"reason": str}
    simulated: str | None = None     # the NVML fake scenario, when one answered
    # the CPUs this process may use and the threads that want them (gpuprobe.jobs.allotment)
    cpu_allotment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Fingerprint":
        known = {k: data.get(k) for k in cls.__dataclass_fields__}
        known["gpus"] = known.get("gpus") or []
        known["dflex"] = known.get("dflex") or {}
        known["nvml"] = known.get("nvml") or {}
        known["cpu_allotment"] = known.get("cpu_allotment") or {}
        return cls(**known)

    # -- what the matrix groups by ---------------------------------------------
    @property
    def gpu_model(self) -> str:
        """Short model name of GPU 0 ("L40S", "H200"), or "no GPU"."""
        if not self.gpus:
            return "no GPU"
        name = self.gpus[0].get("name")
        # a lost GPU has no readable name: {"not_available": "NVML: GPU is lost"}
        return short_model(name) if isinstance(name, str) and name else "unknown GPU"

    def stack_key(self) -> dict[str, str]:
        gpu0 = self.gpus[0] if self.gpus else {}
        cc = gpu0.get("compute_capability")
        return {
            "gpu_model": self.gpu_model,
            "arch": cc if isinstance(cc, str) else "-",
            "driver": self.driver_version or "-",
            "cuda": self.cuda_driver_version or "-",
            "torch": (self.torch or {}).get("version") or "-",
            "dflex": self.dflex.get("version") or ("-" if not self.dflex.get("available") else "unknown"),
        }


def short_model(name: str) -> str:
    """ "NVIDIA H200" -> "H200"; "NVIDIA GeForce RTX 4090" -> "GeForce RTX 4090"."""
    return re.sub(r"^NVIDIA\s+", "", name.strip())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (lscpu's \"Model name\")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def installed_version(name: str) -> str:
    """The installed version of distribution ``name``; LookupError when it is not installed.

    Read from the ``<name>-<version>.dist-info/METADATA`` on ``sys.path`` (what
    importlib.metadata reads), because importing importlib.metadata alone costs preflight
    about as much as starting Python; importlib.metadata answers the rare layouts this
    does not know (eggs, zips).
    """
    import sys

    prefix = name.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = [d.name for d in os.scandir(entry or ".") if d.name.endswith(".dist-info")]
        except OSError:
            continue
        for dist in names:
            if dist.lower().startswith(prefix):
                try:
                    with open(os.path.join(entry, dist, "METADATA"), encoding="utf-8") as fh:
                        for line in fh:
                            if line.startswith("Version:"):
                                return line.split(":", 1)[1].strip()
                            if not line.strip():
                                break
                except OSError:
                    continue
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise LookupError(name) from None


def torch_stack() -> dict | None:
    """torch's version and CUDA build, read from its metadata without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None:   # a light install (preflight, matrix) has no torch: nothing to look up
        return None
    try:
        version = installed_version("torch")
    except LookupError:
        return None
    cuda = None
    if spec.submodule_search_locations:
        version_py = Path(list(spec.submodule_search_locations)[0]) / "version.py"
        try:
            match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", version_py.read_text(), re.M)
            cuda = match.group(1) if match else None
        except OSError:
            pass
    return {"version": version, "cuda": cuda}


def dflex_stack() -> dict:
    """Whether dflex is importable, without importing it (its import builds CUDA kernels)."""
    try:
        spec = importlib.util.find_spec("dflex")
    except (ImportError, ValueError) as exc:
        return {"available": False, "reason": f"dflex cannot be located: {exc}"}
    if spec is None:
        return {
            "available": False,
            "reason": "dflex is not installed (not on PyPI: pip install -e <PWM checkout>/external/DiffRL)",
        }
    try:
        version = installed_version("dflex")
    except LookupError:
        version = "unknown"
    origin = spec.origin or (list(spec.submodule_search_locations or [""])[0])
    return {"available": True, "version": version, "path": str(origin)}


def take(nvml: Nvml | None = None) -> Fingerprint:
    """Fingerprint this node. Light: no torch, no dflex, no CUDA context."""
    own = nvml is None
    nv = nvml or Nvml()
    if own:
        nv.init()
    try:
        gpus, why = quick_gpu_summary(nv)
        driver = nv.driver_version() if nv.ok else None
        cuda = nv.cuda_driver_version() if nv.ok else None
    finally:
        if own:
            nv.shutdown()
    uname = platform.uname()
    return Fingerprint(
        hostname=os.uname().nodename,   # gethostname(), without importing socket
        os=_os_release(),
        kernel=uname.release,
        python=platform.python_version(),
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count() or 0,
        ram_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),  # what psutil reports, without its import
        nvml={"available": why is None, "reason": None if why is None else why.reason},
        driver_version=driver if isinstance(driver, str) else None,
        cuda_driver_version=cuda if isinstance(cuda, str) else None,
        gpus=gpus,
        torch=torch_stack(),
        dflex=dflex_stack(),
        simulated=nv.simulated,
        cpu_allotment=cpu_allotment(),
    )


def cpu_allotment() -> dict:
    """This process's CPU allotment, and the intra-op pool torch would build here (no torch import)."""
    from gpuprobe.jobs import allotment

    mine = allotment.of_process(None)
    mine["torch_intra_op_default"] = allotment.torch_default_threads(mine)
    return mine


def _os_release() -> str:
    try:
        info = platform.freedesktop_os_release()
        return info.get("PRETTY_NAME") or info.get("NAME", "Linux")
    except OSError:
        return f"{platform.system()} {platform.release()}"


def load(path: Path) -> Fingerprint:
    """A fingerprint from a file: a bare fingerprint, or a whole result file."""
    import json

    data: Any = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "fingerprint" in data:
        data = data["fingerprint"]
    if not isinstance(data, dict) or "hostname" not in data:
        raise ValueError(f"{path}: not a gpuprobe fingerprint or result file")
    return Fingerprint.from_dict(data)
