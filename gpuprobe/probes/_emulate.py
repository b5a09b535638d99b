"""Make foreign code in a probe child see a GPU it does not have: ``--emulate-gpu MODEL``
and ``--free-memory-gb X``, so a user's own Buffer makes the decision an L40S would make.

Inside the child only (the stage process; never the parent):
* ``torch.cuda.mem_get_info()`` answers ``(free, total)`` as that GPU with a fresh context
  (total from the model table, minus what a fresh context holds; ``--free-memory-gb`` sets
  the free figure), ``get_device_properties``/``get_device_name`` likewise;
* without CUDA also ``is_available``/``device_count``/``current_device`` say one GPU, and a
  :class:`~torch.overrides.TorchFunctionMode` sends every CUDA device request to the CPU;
  ``pin_memory`` is a no-op. A tensor made for "cuda" is tagged, and so is everything
  computed from it, so the record can say where the code *asked* its storage to live.

What the code did is recorded (:class:`Record`): each free-memory query and its answer,
and every allocation of 1 MiB or more with the device it asked for. The storage decision
is then read off the code's own largest allocation: the decision as the buffer made it.
Everything measured this way is ``simulated``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from gpuprobe.node.fakes import SCENARIOS

MIB = 1024**2
BIG = 1 * MIB                  # allocations recorded
TAG = "_gpuprobe_emulated_cuda"


@dataclass(frozen=True)
class GpuModel:
    name: str
    total_bytes: int
    context_bytes: int         # what a fresh CUDA context holds (NVML's "used" before any allocation)
    major: int
    minor: int
    sm_count: int


def _from_fake(key: str, sms: int) -> GpuModel:
    gpu = SCENARIOS[key].gpus[0]
    return GpuModel(gpu.name, gpu.memory_total, gpu.memory_used, gpu.cc[0], gpu.cc[1], sms)


# the cards of the field report, with the totals the NVML fakes carry (nvidia-smi's MiB)
MODELS: dict[str, GpuModel] = {"L40S": _from_fake("l40s", 142), "H200": _from_fake("h200", 132)}


def model(name: str | None, free_gb: float | None) -> GpuModel:
    """The GPU to emulate: a named model, or one whose free memory is ``free_gb`` (GB = 1e9 B)."""
    if name:
        key = name.upper().removeprefix("NVIDIA ").strip()
        if key not in MODELS:
            raise ValueError(f"--emulate-gpu {name!r}: known models are {', '.join(MODELS)}")
        return MODELS[key]
    free = int((free_gb or 0) * 1e9)
    return GpuModel("emulated GPU", free + 600 * MIB, 600 * MIB, 8, 9, 100)


@dataclass
class Record:
    gpu: dict
    free_bytes: int
    mem_get_info_calls: list[dict] = field(default_factory=list)
    allocations: list[dict] = field(default_factory=list)   # {"requested": "cuda"|"cpu", "bytes", "shape", "op"}
    pin_requests: int = 0
    redirected: int = 0

    def storage_decision(self) -> dict | None:
        """The device of the code's largest allocation: where it decided its storage goes."""
        if not self.allocations:
            return None
        big = max(self.allocations, key=lambda a: a["bytes"])
        return {"device": big["requested"], "bytes": big["bytes"], "shape": big["shape"], "op": big["op"],
                "free_bytes_seen": (self.mem_get_info_calls[-1]["free"] if self.mem_get_info_calls else None),
                "source": "the Buffer's own largest allocation (emulated GPU)"}

    def to_dict(self) -> dict:
        return {"gpu": self.gpu, "free_bytes": self.free_bytes, "mem_get_info_calls": self.mem_get_info_calls,
                "allocations": self.allocations[:50], "allocations_total": len(self.allocations),
                "pin_requests": self.pin_requests, "redirected_ops": self.redirected,
                "storage_decision": self.storage_decision()}


def _is_cuda(dev: Any) -> bool:
    import torch

    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    return isinstance(dev, str) and dev.split(":")[0] == "cuda"


class Emulation:
    """Install with ``with Emulation(model, free_gb) as rec:``; uninstalls on exit."""

    def __init__(self, gpu: GpuModel, free_gb: float | None = None):
        import torch

        self.torch = torch
        self.gpu = gpu
        self.free = int(free_gb * 1e9) if free_gb is not None else gpu.total_bytes - gpu.context_bytes
        self.real_cuda = torch.cuda.is_available()
        self.record = Record({"name": gpu.name, "total_bytes": gpu.total_bytes, "compute_capability":
                              f"{gpu.major}.{gpu.minor}", "real_cuda": self.real_cuda}, self.free)
        self._saved: list[tuple[Any, str, Any]] = []
        self._mode = None
        self._lock = threading.Lock()

    # -- patches --------------------------------------------------------------------------
    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        with self._lock:
            self.record.mem_get_info_calls.append({"free": self.free, "total": self.gpu.total_bytes})
        return self.free, self.gpu.total_bytes

    def properties(self, device: Any = None) -> SimpleNamespace:
        g = self.gpu
        return SimpleNamespace(name=g.name, total_memory=g.total_bytes, major=g.major, minor=g.minor,
                               multi_processor_count=g.sm_count, is_integrated=False, is_multi_gpu_board=False)

    def __enter__(self) -> Record:
        torch = self.torch
        cuda = torch.cuda
        self._patch(cuda, "mem_get_info", self.mem_get_info)
        self._patch(cuda, "get_device_properties", self.properties)
        self._patch(cuda, "get_device_name", lambda device=None: self.gpu.name)
        if not self.real_cuda:
            self._patch(cuda, "is_available", lambda: True)
            self._patch(cuda, "device_count", lambda: 1)
            self._patch(cuda, "current_device", lambda: 0)
            self._patch(cuda, "set_device", lambda device: None)
            self._patch(cuda, "synchronize", lambda device=None: None)
            self._patch(cuda, "empty_cache", lambda: None)
            emulation = self

            def pin_memory(tensor: Any, *args: Any, **kwargs: Any) -> Any:
                emulation.record.pin_requests += 1
                return tensor  # host memory stays host memory: nothing to pin without a driver

            # on the class, not through the mode: prefetch threads do not share the mode stack
            self._patch(torch.Tensor, "pin_memory", pin_memory)
            self._patch(torch.Tensor, "is_pinned", lambda tensor, *a, **k: False)
            self._mode = _CpuForCuda(self)
            self._mode.__enter__()
            # torch's mode stack is per thread: threads started from here on (torchrl's prefetch
            # pool) enter the same redirection, or their .to("cuda") would reach the missing driver
            run = threading.Thread.run

            def run_redirected(thread: threading.Thread) -> None:
                with _CpuForCuda(emulation):
                    run(thread)

            self._patch(threading.Thread, "run", run_redirected)
        return self.record

    def __exit__(self, *exc: object) -> None:
        if self._mode is not None:
            self._mode.__exit__(*exc)
            self._mode = None
        for owner, name, value in reversed(self._saved):
            setattr(owner, name, value)
        self._saved.clear()


def _make_mode_class():
    from torch.overrides import TorchFunctionMode

    class CpuForCuda(TorchFunctionMode):
        """Every CUDA device request goes to the CPU; results are tagged as 'emulated CUDA'."""

        def __init__(self, emulation: Emulation):
            super().__init__()
            self.em = emulation

        def __torch_function__(self, func, types, args=(), kwargs=None):
            import torch

            kwargs = dict(kwargs or {})
            asked_cuda = False
            name = getattr(func, "__name__", str(func))
            if name in ("cuda",):                       # tensor.cuda(): stays, tagged
                asked_cuda = True
                func, args = (lambda t, *a, **k: t), args
                kwargs = {}
            if "device" in kwargs and _is_cuda(kwargs["device"]):
                kwargs["device"], asked_cuda = "cpu", True
            if kwargs.get("pin_memory"):
                kwargs["pin_memory"] = False
                self.em.record.pin_requests += 1
            if name == "to":
                new_args = []
                for a in args:
                    if _is_cuda(a):
                        a, asked_cuda = torch.device("cpu"), True
                    new_args.append(a)
                args = tuple(new_args)
            inputs_cuda = any(getattr(a, TAG, False) for a in _tensors(args, kwargs))
            out = func(*args, **kwargs)
            if asked_cuda:
                self.em.record.redirected += 1
            if asked_cuda or inputs_cuda:
                for t in _tensors((out,), {}):
                    try:
                        setattr(t, TAG, True)
                    except (AttributeError, RuntimeError):
                        pass
            self._note(out, "cuda" if (asked_cuda or inputs_cuda) else "cpu", name, args)
            return out

        def _note(self, out: Any, device: str, op: str, args: tuple) -> None:
            import torch

            if _is_collection(out):   # one allocation per collection: its leaves together
                leaves = [t for t in _leaves(out) if isinstance(t, torch.Tensor)]
                size = sum(t.numel() * t.element_size() for t in leaves)
                if size < BIG or any(_same_storage(a, t) for t in leaves for a in _tensors(args, {})):
                    return
                with self.em._lock:
                    self.em.record.allocations.append({"requested": device, "bytes": size,
                                                       "shape": list(out.batch_size), "op": op})
                return
            if not isinstance(out, torch.Tensor) or out.numel() * out.element_size() < BIG:
                return
            # a view shares its input's storage: not an allocation
            if any(isinstance(a, torch.Tensor) and _same_storage(a, out) for a in args):
                return
            with self.em._lock:
                self.em.record.allocations.append({"requested": device, "bytes": out.numel() * out.element_size(),
                                                   "shape": list(out.shape), "op": op})

    return CpuForCuda


def _same_storage(a: Any, b: Any) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except (RuntimeError, AttributeError):
        return False


def _leaves(collection: Any) -> list:
    """The tensors of a TensorDict-like collection (torchrl's storages are TensorDicts)."""
    try:
        return list(collection.values(include_nested=True, leaves_only=True))
    except (AttributeError, TypeError):
        return []


def _is_collection(a: Any) -> bool:
    return hasattr(a, "batch_size") and hasattr(a, "values") and not hasattr(a, "untyped_storage")


def _tensors(args: tuple, kwargs: dict):
    import torch

    stack = list(args) + list(kwargs.values())
    while stack:
        a = stack.pop()
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            stack.extend(a)
        elif _is_collection(a):
            stack.extend(_leaves(a))


_CpuForCuda_cls = None


def _CpuForCuda(emulation: Emulation):
    global _CpuForCuda_cls
    if _CpuForCuda_cls is None:
        _CpuForCuda_cls = _make_mode_class()
    return _CpuForCuda_cls(emulation)
