"""Load the Buffer under test: the bundled ``gpuprobe_pwm.buffer.Buffer``, or ``--buffer-impl module:Class``.

The interface a probed buffer implements (the subset of PWM's Buffer the trainer uses):

    Class(capacity, obs_dim, act_dim, *, horizon=16, batch_size=256, device="cpu",
          storage="auto", pin_memory=False, prefetch=0, progress=None,
          free_memory_bytes=None, seed=None)
    add(obs, act, rew)   # obs [T+1, N, obs_dim], act [T, N, act_dim], rew [T, N]: N complete episodes
    sample()             # -> (obs [H+1, B, obs_dim], act [H, B, act_dim], rew [H, B, 1])
    close()              # optional: stop prefetch threads
    __len__()            # optional: rows stored

Only ``capacity``, ``obs_dim`` and ``act_dim`` are required; keyword arguments the
constructor does not accept are left out (and listed in the stage data), unless it takes
``**kwargs``. ``progress``, when accepted, is called as ``progress(event, data_dict)``; every
event becomes a mark ``buffer.cap<N>.<event>`` (the bundled Buffer's events: construct,
mem_get_info.start, mem_get_info, storage_decision, alloc.start, alloc, fill,
first_sample, sample). Without it the probe marks construct, fill, first_sample and
sample itself, around the calls.

A TD-MPC2 / PWM-style Buffer (constructor ``(buffer_size, batch_size, horizon, device, ...)``,
``add(TensorDict)`` of one episode, time-major ``sample()``) is taken as it is, through
:mod:`gpuprobe.probes._episode_buffer` (``style`` "episode").

``module`` is imported with the current folder on ``sys.path``; ``path/to/file.py:Class``
loads a file directly (a user's own PWM checkout: ``--buffer-impl ~/PWM/src/buffer.py:Buffer``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUNDLED = "gpuprobe_pwm.buffer:Buffer"


class BufferImplError(ValueError):
    """The --buffer-impl value cannot be loaded; the message says why."""


@dataclass
class BufferImpl:
    spec: str
    cls: type
    accepts: set[str] = field(default_factory=set)
    var_kwargs: bool = False
    style: str = "gpuprobe"        # or "episode": a TD-MPC2/PWM-style Buffer, adapted

    @property
    def has_progress(self) -> bool:
        return self.style == "gpuprobe" and (self.var_kwargs or "progress" in self.accepts)

    def split_kwargs(self, kwargs: dict) -> tuple[dict, list[str]]:
        """(kwargs the constructor takes, names left out)."""
        if self.var_kwargs:
            return dict(kwargs), []
        kept = {k: v for k, v in kwargs.items() if k in self.accepts}
        return kept, sorted(set(kwargs) - set(kept))


def _import(module: str) -> Any:
    if module.endswith(".py") or os.sep in module:
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise BufferImplError(f"--buffer-impl: no such file {path}")
        spec = importlib.util.spec_from_file_location(f"gpuprobe_buffer_impl_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise BufferImplError(f"--buffer-impl: cannot load {path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # "mybuffer:Buffer" means the user's folder, as python -m would
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BufferImplError(f"--buffer-impl: cannot import {module!r}: {exc}") from exc


def load(spec: str | None) -> BufferImpl:
    spec = spec or BUNDLED
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise BufferImplError(f"--buffer-impl {spec!r}: expected module:Class (or path/to/file.py:Class)")
    cls = getattr(_import(module), name, None)
    if not isinstance(cls, type):
        raise BufferImplError(f"--buffer-impl {spec!r}: {module} has no class {name!r}")
    for method in ("add", "sample"):
        if not callable(getattr(cls, method, None)):
            raise BufferImplError(f"--buffer-impl {spec!r}: {name} has no {method}() (see docs/PROBES.md)")
    from gpuprobe.probes import _episode_buffer

    if _episode_buffer.is_episode_buffer(cls):
        foreign = cls

        def adapted(**kwargs: Any) -> Any:
            return _episode_buffer.EpisodeBufferAdapter(foreign, **kwargs)

        return BufferImpl(spec, adapted, set(), var_kwargs=True, style="episode")  # type: ignore[arg-type]
    params = inspect.signature(cls).parameters
    var_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return BufferImpl(spec, cls, set(params), var_kwargs)
