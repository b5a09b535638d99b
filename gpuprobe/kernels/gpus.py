"""GPU models by name: compute capability and memory, for ``gpuprobe kernels --gpu L40S``.

Names are matched without case, spaces or dashes, and without NVML's "NVIDIA " prefix, so
"L40S", "nvidia l40s" and NVML's "NVIDIA L40S" are one model. Memory is the card's, in GiB as
NVIDIA lists it (GB on the spec sheet); a model sold with two sizes lists the larger and the
smaller in ``variants``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    name: str
    cc: str              # "8.9"
    memory_gb: int
    architecture: str    # "Ada Lovelace"
    variants: tuple[str, ...] = ()   # other names NVML reports for it, e.g. "A100-SXM4-40GB"


MODELS: tuple[GpuModel, ...] = (
    GpuModel("V100", "7.0", 32, "Volta", ("Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB", "Tesla V100-PCIE-16GB",
                                         "Tesla V100-PCIE-32GB", "V100S")),
    GpuModel("T4", "7.5", 16, "Turing", ("Tesla T4",)),
    GpuModel("RTX 2080 Ti", "7.5", 11, "Turing", ("GeForce RTX 2080 Ti",)),
    GpuModel("A100", "8.0", 80, "Ampere", ("A100-SXM4-40GB", "A100-SXM4-80GB", "A100-PCIE-40GB", "A100 80GB PCIe",
                                          "A100-SXM-80GB")),
    GpuModel("A30", "8.0", 24, "Ampere"),
    GpuModel("A800", "8.0", 80, "Ampere", ("A800-SXM4-80GB",)),
    GpuModel("A10", "8.6", 24, "Ampere"),
    GpuModel("A10G", "8.6", 24, "Ampere"),
    GpuModel("A40", "8.6", 48, "Ampere"),
    GpuModel("A16", "8.6", 16, "Ampere"),
    GpuModel("A2", "8.6", 16, "Ampere"),
    GpuModel("RTX A6000", "8.6", 48, "Ampere"),
    GpuModel("RTX A5000", "8.6", 24, "Ampere"),
    GpuModel("RTX 3090", "8.6", 24, "Ampere", ("GeForce RTX 3090",)),
    GpuModel("RTX 3080", "8.6", 10, "Ampere", ("GeForce RTX 3080",)),
    GpuModel("Jetson AGX Orin", "8.7", 64, "Ampere", ("Orin",)),
    GpuModel("L40S", "8.9", 48, "Ada Lovelace"),
    GpuModel("L40", "8.9", 48, "Ada Lovelace"),
    GpuModel("L4", "8.9", 24, "Ada Lovelace"),
    GpuModel("L20", "8.9", 48, "Ada Lovelace"),
    GpuModel("RTX 6000 Ada", "8.9", 48, "Ada Lovelace", ("RTX 6000 Ada Generation",)),
    GpuModel("RTX 4090", "8.9", 24, "Ada Lovelace", ("GeForce RTX 4090",)),
    GpuModel("RTX 4080", "8.9", 16, "Ada Lovelace", ("GeForce RTX 4080",)),
    GpuModel("H100", "9.0", 80, "Hopper", ("H100 80GB HBM3", "H100 PCIe", "H100 NVL", "H100-SXM5-80GB")),
    GpuModel("H200", "9.0", 141, "Hopper", ("H200 NVL",)),
    GpuModel("H800", "9.0", 80, "Hopper"),
    GpuModel("H20", "9.0", 96, "Hopper"),
    GpuModel("GH200", "9.0", 96, "Hopper", ("GH200 480GB", "GH200 120GB")),
    GpuModel("B200", "10.0", 180, "Blackwell"),
    GpuModel("GB200", "10.0", 186, "Blackwell"),
    GpuModel("B300", "10.3", 288, "Blackwell Ultra", ("GB300",)),
    GpuModel("RTX PRO 6000 Blackwell", "12.0", 96, "Blackwell",
             ("RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000 Blackwell Workstation Edition")),
    GpuModel("RTX 5090", "12.0", 32, "Blackwell", ("GeForce RTX 5090",)),
    GpuModel("RTX 5080", "12.0", 16, "Blackwell", ("GeForce RTX 5080",)),
    GpuModel("DGX Spark", "12.1", 128, "Blackwell", ("GB10",)),
)


def _key(name: str) -> str:
    name = re.sub(r"^(nvidia|tesla)\s+", "", name.strip(), flags=re.I)
    return re.sub(r"[\s_\-]+", "", name).lower()


_BY_KEY: dict[str, GpuModel] = {}
for _m in MODELS:
    for _n in (_m.name, *_m.variants):
        _BY_KEY.setdefault(_key(_n), _m)


def find(name: str) -> GpuModel | None:
    """The model called ``name`` (a short name or what NVML reports), or None."""
    key = _key(name)
    if key in _BY_KEY:
        return _BY_KEY[key]
    # NVML adds memory and form factor ("H100 80GB HBM3", "A100-SXM4-80GB"): the longest known
    # name that is followed by a separator ("A1000" is not an A100)
    words = re.sub(r"[\s_\-]+", " ", re.sub(r"^(nvidia|tesla)\s+", "", name.strip(), flags=re.I)).lower()
    best = None
    for model in MODELS:
        for n in (model.name, *model.variants):
            prefix = re.sub(r"[\s_\-]+", " ", n).lower()
            if words.startswith(prefix + " ") and (best is None or len(prefix) > best[0]):
                best = (len(prefix), model)
    return best[1] if best else None


def names() -> list[str]:
    return [m.name for m in MODELS]


def parse_cc(text: str) -> tuple[int, int]:
    """ "8.9" -> (8, 9); also "89", "sm_89", "10.0". ValueError with the reason otherwise."""
    t = str(text).strip().lower().removeprefix("sm_").removeprefix("compute_")
    m = re.fullmatch(r"(\d{1,2})\.(\d)", t) or re.fullmatch(r"(\d{1,2})(\d)", t)
    if not m:
        raise ValueError(f"{text!r} is not a compute capability like 8.9")
    return int(m.group(1)), int(m.group(2))


def cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"
