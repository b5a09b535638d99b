"""The stage table and the plan of a run, as data.

The parent only needs this table to validate ``--stage`` and plan a run; the code of a
stage lives in ``gpuprobe/probes/<name>.py`` and is only ever imported inside a child process.

A stage names the stages it ``requires``: it is skipped when one of them (or one they
require) failed, crashed or hung on the same GPU, and runs otherwise. So a dflex failure
in ``sim`` skips nothing but what needs the simulator, never the unrelated ``buffer``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_STALL_WINDOW_S = 10.0


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str          # imported in the child only
    timeout_s: float     # seconds the stage may take (the table's default until planned)
    gpu_only: bool       # only meaningful with a GPU: reports skip, with the reason, on the CPU
    preload: tuple[str, ...] = ()   # modules the fork server imports once for this stage
    requires: tuple[str, ...] = ()  # stages whose failure makes this one pointless
    stall_window_s: float | None = None  # set by plan(): no mark for this long at a timeout is a hang


STAGES: tuple[StageSpec, ...] = (
    StageSpec("nvml", "gpuprobe.probes.nvml", 30, True),
    StageSpec("cuda", "gpuprobe.probes.cuda", 120, True, ("torch",), requires=("nvml",)),
    StageSpec("alloc", "gpuprobe.probes.alloc", 120, False, ("torch",), requires=("cuda",)),
    # dflex is never preloaded: its import builds kernels, and the sim stage times that
    StageSpec("sim", "gpuprobe.probes.sim", 600, False, ("torch", "gpuprobe_pwm.envs"), requires=("alloc",)),
    StageSpec("buffer", "gpuprobe.probes.buffer", 600, False, ("torch", "gpuprobe_pwm.buffer"), requires=("alloc",)),
    # the train stage steps the bundled torch envs (never dflex) and fills a real Buffer
    StageSpec("train", "gpuprobe.probes.train", 600, False, ("torch", "gpuprobe_pwm.models", "gpuprobe_pwm.agent"),
              requires=("buffer",)),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# stages judged from the binaries, never run (gpuprobe kernels --save; provenance "static")
STATIC_STAGES: tuple[str, ...] = ("kernels",)
BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}


def required_by(name: str) -> set[str]:
    """Every stage ``name`` requires, directly or through another stage."""
    out: set[str] = set()
    todo = list(BY_NAME[name].requires)
    while todo:
        req = todo.pop()
        if req not in out:
            out.add(req)
            todo.extend(BY_NAME[req].requires)
    return out


def stall_window_for(timeout: float, stall_window: float | None = None) -> float:
    """The stall window: as given, else min(10 s, timeout / 2)."""
    return stall_window if stall_window is not None else min(DEFAULT_STALL_WINDOW_S, timeout / 2)


def plan(stage: str | None = None, only: bool = False, timeout: float | None = None,
         stall_window: float | None = None, names: list[str] | None = None) -> list[StageSpec]:
    """The stages to run, each with its timeout and stall window fixed here, once.

    Up to and including ``stage`` in table order, or just it (``only``), or the stages in
    ``names``; no ``stage`` means every stage. ``timeout`` overrides every stage's own.
    """
    if names is not None:
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise KeyError(unknown[0])
        chosen = [s for s in STAGES if s.name in names]
    elif stage is None:
        chosen = list(STAGES)
    elif stage not in BY_NAME:
        raise KeyError(stage)
    elif only:
        chosen = [BY_NAME[stage]]
    else:
        chosen = list(STAGES[: STAGE_NAMES.index(stage) + 1])
    planned = []
    for spec in chosen:
        seconds = timeout if timeout is not None else spec.timeout_s
        planned.append(replace(spec, timeout_s=seconds, stall_window_s=stall_window_for(seconds, stall_window)))
    return planned
