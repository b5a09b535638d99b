"""One small wrapper around NVML (the ``pynvml`` module of NVIDIA's nvidia-ml-py).

Every NVML call goes through :meth:`Nvml.call`, which turns "not supported", "GPU
lost", "library not found" and friends into a typed :class:`NotAvailable` value that
says why. One bad GPU or one unsupported field becomes a placeholder, never a crash.

The library behind the wrapper can be swapped for a fake with named driver scenarios
(``gpuprobe.node.fakes``), either in tests or through ``GPUPROBE_FAKE_NVML=<scenario>``
for fire drills; a fingerprint taken through a fake says so (``simulated``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

FAKE_ENV = "GPUPROBE_FAKE_NVML"


@dataclass(frozen=True)
class NotAvailable:
    """A value NVML could not give, and why (e.g. ``"NVML: Not Supported"``)."""

    reason: str

    def __bool__(self) -> bool:
        return False

    def to_json(self) -> dict:
        return {"not_available": self.reason}


def available(value: Any) -> bool:
    return not isinstance(value, NotAvailable)


def plain(value: Any) -> Any:
    """JSON-friendly form: ``NotAvailable`` becomes ``{"not_available": reason}``."""
    if isinstance(value, NotAvailable):
        return value.to_json()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _load_library(scenario: str | None) -> tuple[Any, str | None]:
    if scenario:
        from gpuprobe.node.fakes import fake_library

        return fake_library(scenario), scenario
    try:
        import pynvml  # light: ctypes bindings, the shared library is loaded by nvmlInit
    except ImportError as exc:  # nvidia-ml-py missing from this environment
        return _MissingModule(str(exc)), None
    return pynvml, None


class _MissingModule:
    """Stands in for pynvml when the Python package itself is not installed."""

    class NVMLError(Exception):
        pass

    def __init__(self, why: str):
        self.why = why

    def nvmlInit(self) -> None:
        raise self.NVMLError(f"nvidia-ml-py is not installed ({self.why})")


class Nvml:
    """NVML session. Use as a context manager; every getter returns a value or NotAvailable."""

    def __init__(self, library: Any = None, scenario: str | None = None):
        if library is None:
            scenario = scenario if scenario is not None else os.environ.get(FAKE_ENV) or None
            library, scenario = _load_library(scenario)
        self.lib = library
        self.simulated = scenario
        self.state: NotAvailable | None = NotAvailable("NVML not initialised")

    # -- session -----------------------------------------------------------------
    def __enter__(self) -> "Nvml":
        self.init()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def init(self) -> NotAvailable | None:
        try:
            self.lib.nvmlInit()
            self.state = None
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.state = NotAvailable(_describe(exc))
        return self.state

    def shutdown(self) -> None:
        if self.state is None:
            try:
                self.lib.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown: %s", exc)
            self.state = NotAvailable("NVML shut down")

    @property
    def ok(self) -> bool:
        return self.state is None

    def call(self, name: str, *args: Any) -> Any:
        """Call ``pynvml.<name>(*args)``; NotAvailable (with the reason) on any NVML error."""
        if self.state is not None:
            return self.state
        fn: Callable[..., Any] | None = getattr(self.lib, name, None)
        if fn is None:
            return NotAvailable(f"{name} not in this nvidia-ml-py")
        try:
            value = fn(*args)
        except Exception as exc:
            return NotAvailable(_describe(exc))
        return plain(value) if isinstance(value, bytes) else value

    # -- system ------------------------------------------------------------------
    def driver_version(self) -> str | NotAvailable:
        """Driver version, e.g. "575.57.08" (nvidia-smi --query-gpu=driver_version)."""
        return self.call("nvmlSystemGetDriverVersion")

    def cuda_driver_version(self) -> str | NotAvailable:
        """Highest CUDA version the driver supports, e.g. "12.9" (nvidia-smi's "CUDA Version")."""
        raw = self.call("nvmlSystemGetCudaDriverVersion_v2")
        if not available(raw):
            raw = self.call("nvmlSystemGetCudaDriverVersion")
        if not available(raw):
            return raw
        return f"{int(raw) // 1000}.{(int(raw) % 1000) // 10}"

    def device_count(self) -> int | NotAvailable:
        return self.call("nvmlDeviceGetCount")

    def handle(self, index: int) -> Any:
        return self.call("nvmlDeviceGetHandleByIndex", index)

    # -- per device --------------------------------------------------------------
    def device_info(self, index: int) -> dict:
        """Static properties of GPU ``index`` (what the fingerprint records)."""
        h = self.handle(index)
        if not available(h):
            return {"index": index, "error": h.reason}
        pci = self.call("nvmlDeviceGetPciInfo", h)
        cc = self.call("nvmlDeviceGetCudaComputeCapability", h)
        mem = self.call("nvmlDeviceGetMemoryInfo", h)
        return {
            "index": index,
            "name": plain(self.call("nvmlDeviceGetName", h)),
            "uuid": plain(self.call("nvmlDeviceGetUUID", h)),
            "pci_bus_id": plain(getattr(pci, "busId", pci)) if available(pci) else pci.to_json(),
            "pci_device_id": f"0x{pci.pciDeviceId:08x}" if available(pci) else pci.to_json(),
            "compute_capability": f"{cc[0]}.{cc[1]}" if available(cc) else cc.to_json(),
            # bytes; nvidia-smi --query-gpu=memory.total reports MiB
            "memory_total_bytes": int(mem.total) if available(mem) else mem.to_json(),
        }

    def snapshot(self, index: int) -> dict:
        """Live state of GPU ``index`` for hang evidence (units in the keys)."""
        h = self.handle(index)
        if not available(h):
            return {"index": index, "error": h.reason}
        util = self.call("nvmlDeviceGetUtilizationRates", h)
        mem = self.call("nvmlDeviceGetMemoryInfo", h)
        procs = self.call("nvmlDeviceGetComputeRunningProcesses", h)
        reasons = self.call("nvmlDeviceGetCurrentClocksEventReasons", h)
        if not available(reasons):
            reasons = self.call("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        snap = {
            "index": index,
            "utilization_gpu_pct": util.gpu if available(util) else util.to_json(),
            "utilization_mem_pct": util.memory if available(util) else util.to_json(),
            "memory_used_bytes": int(mem.used) if available(mem) else mem.to_json(),
            "memory_free_bytes": int(mem.free) if available(mem) else mem.to_json(),
            "processes": (
                [{"pid": p.pid, "used_gpu_memory_bytes": p.usedGpuMemory} for p in procs]
                if available(procs)
                else procs.to_json()
            ),
            "clock_sm_mhz": plain(self.call("nvmlDeviceGetClockInfo", h, 1)),  # NVML_CLOCK_SM
            "clock_mem_mhz": plain(self.call("nvmlDeviceGetClockInfo", h, 2)),  # NVML_CLOCK_MEM
            "clocks_event_reasons": hex(reasons) if available(reasons) else reasons.to_json(),
            "temperature_c": plain(self.call("nvmlDeviceGetTemperature", h, 0)),  # NVML_TEMPERATURE_GPU
            "power_mw": plain(self.call("nvmlDeviceGetPowerUsage", h)),
            # volatile (1) uncorrected (1) ECC errors since the driver loaded
            "ecc_uncorrected_volatile": plain(self.call("nvmlDeviceGetTotalEccErrors", h, 1, 1)),
            "pcie_replay_count": plain(self.call("nvmlDeviceGetPcieReplayCounter", h)),
        }
        return snap


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if text.startswith("NVML") else f"NVML: {text}"


def quick_gpu_summary(nv: Nvml) -> tuple[list[dict], NotAvailable | None]:
    """All GPUs' static properties, or why there are none."""
    if not nv.ok:
        return [], nv.state
    count = nv.device_count()
    if not available(count):
        return [], count
    return [nv.device_info(i) for i in range(int(count))], None
