"""Each stage's options, typed: what ``--set STAGE.KEY=VALUE`` and the ``run`` flags may say.

Checked in the parent before anything is written or started, so a typo is a one-line
usage error (exit 2) and never a stored ``fail`` that condemns a node. The schema lives
here, not beside the probes, because the parent must never import ``gpuprobe.probes``
(the layering contract in setup.cfg); each probe's defaults stay in its own code, and
docs/PROBES.md describes every option.

A value arrives JSON-parsed when it could be (``--set buffer.capacity=1e5`` is 100000.0),
else as the raw text; :func:`coerce` turns it into the declared type or raises
:class:`OptionValueError` saying what was expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any


class OptionValueError(ValueError):
    """A value that does not fit its option's declared type."""


@dataclass(frozen=True)
class Opt:
    kind: str                      # int, float, bool, str, choice, strings, ints
    minimum: float | None = None   # inclusive lower bound for numbers (and for each of ``ints``)
    positive: bool = False         # numbers: more than 0
    maximum: float | None = None   # inclusive upper bound
    choices: tuple[str, ...] = ()  # ``choice``: compared case-insensitively, returned as declared
    nullable: bool = False         # ``null`` (JSON) means "the stage's default"
    pattern: str | None = None     # ``str``: a full-match regular expression


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise OptionValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionValueError(f"expected an integer, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise OptionValueError(f"expected an integer, got {value!r}")
    return int(number)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise OptionValueError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):   # NaN and Infinity are not JSON and disable every bound
        raise OptionValueError(f"expected a finite number, got {value!r}")
    return number


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise OptionValueError(f"expected true or false, got {value!r}")


def _bounded(opt: Opt, number: float) -> None:
    if opt.positive and not number > 0:
        raise OptionValueError(f"must be more than 0, got {number:g}")
    if opt.minimum is not None and number < opt.minimum:
        raise OptionValueError(f"must be at least {opt.minimum:g}, got {number:g}")
    if opt.maximum is not None and number > opt.maximum:
        raise OptionValueError(f"must be at most {opt.maximum:g}, got {number:g}")


def coerce(opt: Opt, value: Any) -> Any:
    """``value`` as ``opt`` declares it, or OptionValueError."""
    if value is None:
        if opt.nullable:
            return None
        raise OptionValueError("needs a value (null is not allowed here)")
    if opt.kind == "int":
        number = _int(value)
        _bounded(opt, number)
        return number
    if opt.kind == "float":
        number = _float(value)
        _bounded(opt, number)
        return number
    if opt.kind == "bool":
        return _bool(value)
    if opt.kind == "str":
        if not isinstance(value, str) or not value:
            raise OptionValueError(f"expected text, got {value!r}")
        if opt.pattern and not re.fullmatch(opt.pattern, value):
            raise OptionValueError(f"{value!r} does not look like {opt.pattern}")
        return value
    if opt.kind == "choice":
        text = str(value)
        for choice in opt.choices:
            if text.lower() == choice.lower():
                return choice
        raise OptionValueError(f"expected one of {', '.join(opt.choices)}, got {value!r}")
    if opt.kind == "strings":   # a list, or one name, or names separated by commas
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
            raise OptionValueError(f"expected a list of names, got {value!r}")
        return [i.strip() for i in items]
    if opt.kind == "ints":      # a list of integers, or one
        items = value if isinstance(value, list) else [value]
        out = [_int(i) for i in items]
        for number in out:
            _bounded(opt, number)
        return out
    raise AssertionError(f"unknown option kind {opt.kind!r}")


_BUFFER_SHARED = {   # the Buffer options the train stage takes too (the storage flags set both)
    "storage": Opt("choice", choices=("auto", "cuda", "cpu")),
    "pin_memory": Opt("bool"),
    "prefetch": Opt("int", minimum=0),
    "free_memory_gb": Opt("float", minimum=0, nullable=True),
}

# The train stage's alg configs: upstream's algorithm (pwm*) and the bundled variant (bundled_*).
ALG_NAMES = ("pwm", "pwm_5M", "pwm_19M", "pwm_48M", "pwm_317M", "pwm_tiny", "bundled_5M", "bundled_48M",
             "bundled_tiny")

# The GPU models --emulate-gpu knows (gpuprobe/probes/_emulate.py builds them from the NVML fakes).
EMULATED_MODELS = ("L40S", "H200")

SCHEMA: dict[str, dict[str, Opt]] = {
    "nvml": {},
    "cuda": {},
    "alloc": {
        "fraction": Opt("float", positive=True, maximum=1),
        "pinned_max_mib": Opt("int", minimum=1),
        "bandwidth_mib": Opt("int", minimum=1),
        "cpu_max_mib": Opt("int", minimum=1),
    },
    "sim": {
        "dflex_envs": Opt("strings"),
        "env": Opt("str", nullable=True),
        "num_envs": Opt("int", minimum=1),
        "steps": Opt("int", minimum=1),
        "envs": Opt("strings"),
        "bundled_num_envs": Opt("int", minimum=1),
        "bundled_steps": Opt("int", minimum=1),
        "dflex": Opt("bool"),
        "import_despite_lock": Opt("bool"),
        "build_wait_s": Opt("float", minimum=0, nullable=True),
        "dflex_cuda_arch": Opt("str", pattern=r"sm_\d+a?", nullable=True),
    },
    "buffer": {
        "capacity": Opt("int", minimum=1),
        "capacities": Opt("ints", minimum=1),
        "obs_dim": Opt("int", minimum=1),
        "act_dim": Opt("int", minimum=1),
        "horizon": Opt("int", minimum=1),
        "batch_size": Opt("int", minimum=1),
        "episode_length": Opt("int", minimum=1),
        "num_envs": Opt("int", minimum=1),
        "fill": Opt("float", positive=True),
        "samples": Opt("int", minimum=1),
        "budget_s": Opt("float", minimum=0),   # 0: every capacity over budget at once (a test of that path)
        "bisect": Opt("bool"),
        "bisect_steps": Opt("int", minimum=0),
        "impl": Opt("str", nullable=True),
        "emulate_gpu": Opt("choice", choices=EMULATED_MODELS, nullable=True),
        **_BUFFER_SHARED,
    },
    "train": {
        "model_size": Opt("choice", choices=("5M", "19M", "48M", "317M", "tiny")),
        # an alg config of gpuprobe_pwm/config/alg (this package may not import it: listed here, and
        # tests/test_probe_train.py checks the list against the files)
        "alg": Opt("choice", choices=ALG_NAMES, nullable=True),
        "first_epoch": Opt("bool"),
        "iterations": Opt("int", minimum=1),
        "obs_dim": Opt("int", minimum=1),
        "act_dim": Opt("int", minimum=1),
        "env": Opt("str", nullable=True),
        "num_envs": Opt("int", minimum=1),
        "episode_length": Opt("int", minimum=1, nullable=True),
        "buffer_size": Opt("int", minimum=1),
        **_BUFFER_SHARED,
    },
}

# options that make a stage see a machine that is not there: its result is ``simulated``
SIMULATING = ("free_memory_gb", "emulate_gpu")
