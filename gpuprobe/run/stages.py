"""The stage table: names, order and defaults, as data.

The parent only needs this table to validate ``--stage`` and plan a run; the code of a
stage lives in ``gpuprobe/probes/<name>.py`` and is only ever imported inside a child process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str          # imported in the child only
    summary: str
    timeout_s: float     # default per-stage timeout
    gpu_only: bool       # only meaningful with a GPU: reports skip, with the reason, on the CPU
    preload: tuple[str, ...] = ()  # modules the fork server imports once for this stage


STAGES: tuple[StageSpec, ...] = (
    StageSpec("nvml", "gpuprobe.probes.nvml", "driver and devices through NVML (no torch)", 30, True),
    StageSpec("cuda", "gpuprobe.probes.cuda", "torch import, CUDA init, context, first kernel, mem_get_info", 120, True,
              ("torch",)),
    StageSpec("alloc", "gpuprobe.probes.alloc", "staged allocations, pinned host memory, copies", 120, False, ("torch",)),
    # dflex is never preloaded: its import builds kernels, and the sim stage times that
    StageSpec("sim", "gpuprobe.probes.sim", "simulator env step: dflex when importable, and the bundled torch envs", 600,
              False, ("torch", "gpuprobe_pwm.envs")),
    StageSpec("buffer", "gpuprobe.probes.buffer", "the trainer's Buffer at staged capacities", 600, False,
              ("torch", "gpuprobe_pwm.buffer")),
    StageSpec("train", "gpuprobe.probes.train", "one PWM training iteration (world model, actor, critic)", 600, False,
              ("torch", "gpuprobe_pwm.models", "gpuprobe_pwm.agent")),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
# stages judged from the binaries, never run (gpuprobe kernels --save; provenance "static")
STATIC_STAGES: tuple[str, ...] = ("kernels",)
BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}


def plan(stage: str | None, only: bool) -> list[StageSpec]:
    """Stages to run: up to and including ``stage`` (its prerequisites first), or just it.

    No ``stage`` means every stage.
    """
    if stage is None:
        return list(STAGES)
    if stage not in BY_NAME:
        raise KeyError(stage)
    if only:
        return [BY_NAME[stage]]
    return list(STAGES[: STAGE_NAMES.index(stage) + 1])
