"""``gpuprobe run`` flags that reproduce a PWM configuration, mapped into the stage options.

Each flag is a shortcut for ``--set STAGE.KEY=VALUE`` (the same dict, so the result file's
config shows one form); an explicit ``--set`` wins over a flag. ``gpuprobe.cli.run`` applies
:func:`probe_flags` to the command and :func:`apply` to its options.
"""

from __future__ import annotations

from typing import Any, Callable

import click

# flag parameter -> [(stage, option key)], one flag may set several stages' options
TARGETS: dict[str, list[tuple[str, str]]] = {
    "bisect": [("buffer", "bisect")],
    "buffer_impl": [("buffer", "impl")],
    "storage": [("buffer", "storage"), ("train", "storage")],
    "pin_memory": [("buffer", "pin_memory"), ("train", "pin_memory")],
    "prefetch": [("buffer", "prefetch"), ("train", "prefetch")],
    "free_memory_gb": [("buffer", "free_memory_gb"), ("train", "free_memory_gb")],
    "emulate_gpu": [("buffer", "emulate_gpu")],
    "model_size": [("train", "model_size")],
    "train_epoch": [("train", "first_epoch")],
}


def _non_negative(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value < 0:
        raise click.BadParameter(f"must be 0 or more, got {value:g}")
    return value


def probe_flags(f: Callable) -> Callable:
    """The flags, applied to the ``run`` command (they arrive as keyword arguments)."""
    options = [
        click.option("--bisect", is_flag=True, default=None,
                     help="buffer: find the largest capacity that completes within budget (--set buffer.bisect=true)."),
        click.option("--buffer-impl", metavar="MODULE:CLASS", default=None,
                     help="buffer: probe another Buffer with the documented add/sample interface "
                          "(module:Class or path/to/file.py:Class; see docs/PROBES.md)."),
        click.option("--storage", type=click.Choice(["auto", "cuda", "cpu"]), default=None,
                     help="buffer/train: Buffer storage policy (auto: PWM's 2.5x free-memory rule)."),
        click.option("--pin-memory", is_flag=True, default=None,
                     help="buffer/train: pinned host storage when it lands on the host (PWM: on)."),
        click.option("--prefetch", type=int, default=None, callback=_non_negative, metavar="N",
                     help="buffer/train: prefetch threads for sampling (PWM: 12)."),
        click.option("--free-memory-gb", type=float, default=None, callback=_non_negative, metavar="GB",
                     help="buffer/train: force the free-memory figure (1 GB = 1e9 bytes), e.g. 48 for an "
                          "L40S, 141 for an H200; recorded as simulated."),
        click.option("--emulate-gpu", metavar="MODEL", default=None,
                     help="buffer: the Buffer's own code sees this GPU (L40S, H200): torch.cuda.mem_get_info as a "
                          "fresh context there, get_device_properties; without CUDA its CUDA storage and pinned "
                          "memory land on the CPU. Recorded as simulated."),
        click.option("--model-size", type=click.Choice(["5M", "48M", "tiny"]), default=None,
                     help="train: PWM model size (default 5M)."),
        click.option("--train-epoch", is_flag=True, default=None,
                     help="train: also run the first epoch of the real loop (collection to the first "
                          "episode, first buffer add, first world-model update)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def apply(stage_options: dict, flags: dict[str, Any]) -> dict:
    """Merge the flags into ``{"stage": {key: value}}``; values given with ``--set`` are kept."""
    out = {stage: dict(opts) for stage, opts in stage_options.items()}
    for param, value in flags.items():
        if value is None or param not in TARGETS:
            continue
        for stage, key in TARGETS[param]:
            out.setdefault(stage, {}).setdefault(key, value)
    return out
