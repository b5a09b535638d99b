"""NVML fakes with named driver scenarios, for tests and fire drills.

A scenario is a small table of what a real driver reports; the fake library exposes
the same function names as ``pynvml`` and raises its own ``NVMLError`` with NVML's
error codes, so :class:`gpuprobe.node.nvml.Nvml` runs the same code path against it.

Scenarios:
  h200   one healthy NVIDIA H200 (Hopper, 141 GB), driver 570.133.20, CUDA 12.8
  l40s   one NVIDIA L40S (Ada, 48 GB), driver 575.57.08, CUDA 12.9 (the field report)
  lost   an L40S that has fallen off the bus: the handle works, every query says GPU lost
  nolib  no NVIDIA driver: nvmlInit raises "NVML Shared Library Not Found"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

GIB = 1024**3

# NVML return codes (nvml.h)
NOT_SUPPORTED = 3
LIBRARY_NOT_FOUND = 12
GPU_IS_LOST = 15

_MESSAGES = {
    NOT_SUPPORTED: "Not Supported",
    LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int):
        self.value = value
        super().__init__(_MESSAGES.get(value, f"NVML error {value}"))


@dataclass
class FakeGpu:
    name: str
    uuid: str
    bus_id: str
    pci_device_id: int
    cc: tuple[int, int]
    memory_total: int
    memory_used: int = 600 * 1024**2
    lost: bool = False
    processes: list = field(default_factory=list)


@dataclass
class Scenario:
    name: str
    driver: str | None
    cuda: int | None  # NVML's integer form: 12090 -> 12.9
    gpus: list[FakeGpu]
    library_missing: bool = False


SCENARIOS: dict[str, Scenario] = {
    "h200": Scenario(
        "h200", "570.133.20", 12080,
        [FakeGpu("NVIDIA H200", "GPU-fake-h200-0000", "00000000:19:00.0", 0x233510DE, (9, 0), 143771 * 1024**2)],
    ),
    "l40s": Scenario(
        "l40s", "575.57.08", 12090,
        [FakeGpu("NVIDIA L40S", "GPU-fake-l40s-0000", "00000000:3B:00.0", 0x26B910DE, (8, 9), 46068 * 1024**2)],
    ),
    "lost": Scenario(
        "lost", "575.57.08", 12090,
        [FakeGpu("NVIDIA L40S", "GPU-fake-lost-0000", "00000000:3B:00.0", 0x26B910DE, (8, 9), 46068 * 1024**2, lost=True)],
    ),
    "nolib": Scenario("nolib", None, None, [], library_missing=True),
}


class FakeNvmlLibrary:
    """The subset of pynvml that gpuprobe calls, answering from a :class:`Scenario`."""

    NVMLError = NVMLError

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.initialised = False

    def _gpu(self, handle: Any) -> FakeGpu:
        gpu = self.scenario.gpus[handle.index]
        if gpu.lost:
            raise NVMLError(GPU_IS_LOST)
        return gpu

    def nvmlInit(self) -> None:
        if self.scenario.library_missing:
            raise NVMLError(LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.scenario.driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.scenario.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.scenario.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if not 0 <= index < len(self.scenario.gpus):
            raise NVMLError(2)  # NVML_ERROR_INVALID_ARGUMENT
        return SimpleNamespace(index=index)

    def nvmlDeviceGetName(self, h: Any) -> str:
        return self._gpu(h).name

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return self._gpu(h).uuid

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        gpu = self._gpu(h)
        return SimpleNamespace(busId=gpu.bus_id, pciDeviceId=gpu.pci_device_id)

    def nvmlDeviceGetCudaComputeCapability(self, h: Any) -> tuple[int, int]:
        return self._gpu(h).cc

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        gpu = self._gpu(h)
        return SimpleNamespace(total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        self._gpu(h)
        return SimpleNamespace(gpu=0, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list:
        return list(self._gpu(h).processes)

    def nvmlDeviceGetClockInfo(self, h: Any, kind: int) -> int:
        self._gpu(h)
        return 1980 if kind == 1 else 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        self._gpu(h)
        return 0x1  # GPU idle

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        self._gpu(h)
        return 34

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        self._gpu(h)
        return 72_000

    def nvmlDeviceGetTotalEccErrors(self, h: Any, error_type: int, counter: int) -> int:
        gpu = self._gpu(h)
        if gpu.cc == (8, 9):  # L40S exposes no ECC counters in this scenario
            raise NVMLError(NOT_SUPPORTED)
        return 0

    def nvmlDeviceGetPcieReplayCounter(self, h: Any) -> int:
        self._gpu(h)
        return 0


def fake_library(name: str) -> FakeNvmlLibrary:
    try:
        return FakeNvmlLibrary(SCENARIOS[name])
    except KeyError:
        raise ValueError(
            f"unknown NVML fake scenario {name!r} (from GPUPROBE_FAKE_NVML); known: {', '.join(SCENARIOS)}"
        ) from None
