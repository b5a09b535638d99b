"""The stage options of a run: ``--set [STAGE.]KEY=VALUE`` and the flags that are shortcuts
for them, checked against each stage's schema (:mod:`gpuprobe.run.optschema`) and resolved
into one dict per stage, in the parent, before anything is written or started.

Each flag is a shortcut for ``--set STAGE.KEY=VALUE`` (the same dict, so the result file's
config shows one form). When several say something about one stage's key, the more
specific wins: ``--set stage.key=`` beats a global ``--set key=``, and any ``--set`` beats a
flag. ``gpuprobe.cli.run`` applies :func:`probe_flags` to the command and :func:`resolve`
to its options; the child only reads its own stage's resolved dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import click

from gpuprobe.exitcodes import UsageProblem
from gpuprobe.run.optschema import SCHEMA, OptionValueError, coerce

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
        click.option("--model-size", type=click.Choice(["5M", "19M", "48M", "317M", "tiny"]), default=None,
                     help="train: PWM model size, upstream's configs (default 5M); --set train.alg=NAME "
                          "names any alg config (bundled_5M: the bundled variant)."),
        click.option("--train-epoch", is_flag=True, default=None,
                     help="train: also run the first epoch of the real loop (collection to the first "
                          "episode, first buffer add, first world-model update)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


class OptionError(UsageProblem, ValueError):
    """A stage option that is unknown or has a bad value: one line naming the key and its source."""


@dataclass(frozen=True)
class Setting:
    stage: str | None     # None: every stage whose schema has ``key`` (a global ``--set key=``)
    key: str
    value: Any
    source: str           # where it came from, as the user wrote it: "--set buffer.capacity=1e5", "--storage"
    rank: int             # specificity: 2 ``--set stage.key``, 1 ``--set key``, 0 a flag


def parse_sets(pairs: tuple[str, ...] | list[str]) -> list[Setting]:
    """``--set`` pairs as settings; a malformed pair or an unknown stage is an OptionError."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        source = f"--set {pair}"
        if not sep or not key.strip():
            raise OptionError(f"{source}: expected [STAGE.]KEY=VALUE")
        stage, _dot, name = key.strip().rpartition(".")
        if stage and stage not in SCHEMA:
            raise OptionError(f"{source}: unknown stage {stage!r} (one of: {', '.join(SCHEMA)})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw     # plain text: --set train.model_size=48M
        out.append(Setting(stage or None, name, value, source, 2 if stage else 1))
    return out


def flag_settings(flags: dict[str, Any]) -> list[Setting]:
    """The ``run`` flags that were given, as settings of the stages they target."""
    out = []
    for param, value in flags.items():
        if value is None or param not in TARGETS:
            continue
        flag = f"--{param.replace('_', '-')}"
        source = flag if isinstance(value, bool) else f"{flag} {value}"
        out.extend(Setting(stage, key, value, source, 0) for stage, key in TARGETS[param])
    return out


def resolve(pairs: tuple[str, ...] | list[str] = (), flags: dict[str, Any] | None = None) -> dict[str, dict]:
    """``{stage: {key: value}}``, every value checked and typed; the more specific setting wins.

    Raises OptionError (exit 2) for an unknown stage or key, or a value of the wrong type.
    A global ``--set key=`` applies to every stage that has the key, and must name a key
    that some stage has.
    """
    settings = parse_sets(pairs) + flag_settings(flags or {})
    chosen: dict[tuple[str, str], Setting] = {}
    for setting in settings:
        if setting.stage is None:
            stages = [stage for stage, schema in SCHEMA.items() if setting.key in schema]
            if not stages:
                raise OptionError(f"{setting.source}: unknown option {setting.key!r}: no stage has it "
                                  "(see 'gpuprobe run --help' and docs/PROBES.md)")
        else:
            stages = [setting.stage]
            if setting.key not in SCHEMA[setting.stage]:
                known = ", ".join(SCHEMA[setting.stage]) or "none"
                raise OptionError(f"{setting.source}: unknown option {setting.stage}.{setting.key} "
                                  f"({setting.stage}'s options: {known})")
        for stage in stages:
            try:
                typed = coerce(SCHEMA[stage][setting.key], setting.value)
            except OptionValueError as exc:
                raise OptionError(f"{setting.source}: bad value for {stage}.{setting.key}: {exc}") from None
            typed_setting = Setting(stage, setting.key, typed, setting.source, setting.rank)
            current = chosen.get((stage, setting.key))
            if current is None or typed_setting.rank >= current.rank:   # later wins within one rank
                chosen[(stage, setting.key)] = typed_setting
    out: dict[str, dict] = {}
    for (stage, key), setting in chosen.items():
        out.setdefault(stage, {})[key] = setting.value
    return out
