"""``gpuprobe matrix --compare A B``: two GPU models side by side.

Per stage, each model's cell; the fingerprint facts in which their stacks differ
(driver, CUDA, compute capability, memory, torch, ...); and the known-issue signatures
their failures matched, with remedies.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpuprobe.store.matrix import MatrixError, MatrixFilter, build, open_evidence

# fact -> label, in the order a person reads them
FACTS = (
    ("gpu_name", "GPU"), ("compute_capability", "compute capability"), ("memory_total_bytes", "GPU memory"),
    ("pci_device_id", "PCI device id"), ("gpu_count", "GPUs per node"), ("driver", "driver"),
    ("cuda_driver", "CUDA (driver)"), ("torch", "torch"), ("torch_cuda_build", "torch CUDA build"),
    ("dflex", "dflex"), ("python", "Python"), ("os", "OS"), ("kernel", "kernel"), ("cpu_model", "CPU"),
    ("cpu_count", "CPU cores"), ("ram_bytes", "RAM"),
)
ARCH = {"7.0": "Volta", "7.5": "Turing", "8.0": "Ampere", "8.6": "Ampere", "8.7": "Ampere", "8.9": "Ada",
        "9.0": "Hopper", "10.0": "Blackwell", "12.0": "Blackwell"}


def _fmt(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key in ("memory_total_bytes", "ram_bytes") and isinstance(value, (int, float)):
        return f"{value / 1024**3:.0f} GiB"
    if key == "compute_capability" and isinstance(value, str):
        return f"{value} ({ARCH[value]})" if value in ARCH else value
    return str(value)


def compare(folders: list[Path], model_a: str, model_b: str, flt: MatrixFilter | None = None,
            cache: bool = True) -> dict:
    flt = flt or MatrixFilter()
    flt = MatrixFilter(models=(model_a, model_b), stages=flt.stages, since=flt.since, provenance=flt.provenance)
    by_model = build(folders, view="model", flt=flt, cache=cache)
    rows: dict[str, dict] = {}
    for r in by_model["rows"]:   # a model's evidence row first; its drill or simulation row (labelled) else
        if "provenance" not in r["key"] or r["key"]["provenance"] == "-":
            rows[r["key"]["gpu_model"].lower()] = r
        else:
            rows.setdefault(r["key"]["gpu_model"].lower(), r)
    missing = [m for m in (model_a, model_b) if m.lower() not in rows]
    if missing:
        known = sorted({r["id"] for r in build(folders, view="model", cache=cache)["rows"]})
        raise MatrixError(f"no results for GPU model {', '.join(missing)} (models with results: "
                          f"{', '.join(known) or 'none'})")
    a, b = rows[model_a.lower()], rows[model_b.lower()]
    facts = _facts_by_model(folders, (a["key"]["gpu_model"], b["key"]["gpu_model"]), cache, flt)
    differences, same = [], []
    for key, label in FACTS:
        va = sorted({_fmt(key, v) for v in facts[a["key"]["gpu_model"]].get(key, [])})
        vb = sorted({_fmt(key, v) for v in facts[b["key"]["gpu_model"]].get(key, [])})
        entry = {"fact": key, "label": label, "a": va, "b": vb}
        (same if va == vb else differences).append(entry)
    signatures = {m["id"]: _signatures(m) for m in (a, b)}
    return {
        "models": [a["id"], b["id"]], "stages": by_model["stages"],
        "cells": {s: {a["id"]: a["cells"].get(s), b["id"]: b["cells"].get(s)} for s in by_model["stages"]},
        "differences": differences, "same": same, "signatures": signatures,
        "skipped": by_model["skipped"], "skipped_message": by_model["skipped_message"],
        "sources": by_model["sources"], "generated_at": by_model["generated_at"],
    }


def _facts_by_model(folders: list[Path], models: tuple[str, str], cache: bool,
                    flt: MatrixFilter) -> dict[str, dict[str, list]]:
    """The fingerprint facts of the stacks the compared runs came from (a fake H200's
    stack is not an H200's unless drills and simulations were asked for)."""
    out: dict[str, dict[str, list]] = {m: {} for m in models}
    where, args = flt.sql()
    ev = open_evidence(folders, cache=cache)
    try:
        assert ev.conn is not None
        for model, facts in ev.conn.execute(
                f"SELECT gpu_model, facts FROM stacks WHERE stack_id IN (SELECT stack_id FROM runs{where})", args):
            if model in out:
                for key, value in json.loads(facts or "{}").items():
                    if value not in out[model].setdefault(key, []):
                        out[model][key].append(value)
    finally:
        ev.close()
    return out


def _signatures(row: dict) -> list[dict]:
    out: dict[str, dict] = {}
    for stage, cell in row["cells"].items():
        for sig in (cell or {}).get("signatures") or []:
            entry = out.setdefault(sig["id"], {**sig, "stages": []})
            entry["stages"].append(stage)
    return list(out.values())
