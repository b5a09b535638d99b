"""Summarise a gpu_evidence.sh run: the numbers BENCHMARKS.md asks of a GPU run.

Reads the run's result files and steps.tsv and writes ``summary.json`` and ``summary.md`` into
OUT: CUDA init time, device-to-device copy bandwidth against the card's specification,
train-step times per model size, the Buffer's sample time per storage, the dflex build
outcome, and the fire drill's evidence. Every figure names the result file it came from;
a figure the run did not produce is reported as missing, never filled in.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

# Memory bandwidth from NVIDIA's datasheets (GB/s), for the bandwidth ratio. Unknown cards get
# no ratio rather than a guess.
SPEC_BANDWIDTH_GB_S = {"H200": 4800, "H100": 3350, "A100": 2039, "L40S": 864}


def spec_for(gpu_name: str | None) -> tuple[str, float] | None:
    for model, gb_s in SPEC_BANDWIDTH_GB_S.items():
        if gpu_name and model in gpu_name.upper().replace(" ", ""):
            return model, gb_s
    return None


def load_runs(folder: Path) -> list[tuple[Path, dict]]:
    runs = []
    for path in sorted(folder.glob("*.result.json")):
        try:
            runs.append((path, json.loads(path.read_text())))
        except (OSError, ValueError) as err:
            print(f"gpu_evidence_summary: skipping {path.name}: {err}", file=sys.stderr)
    return runs


def stages(runs, name):
    for path, run in runs:
        for stage in run.get("stages") or []:
            if stage.get("stage") == name:
                yield path, run, stage


def gpu_name(run: dict) -> str | None:
    gpus = (run.get("fingerprint") or {}).get("gpus") or []
    return gpus[0].get("name") if gpus and isinstance(gpus[0], dict) else None


def drill_row(path: Path, st: dict) -> dict:
    """What a hang's evidence holds: the stack method (py-spy --native, ...) and whether NVML
    saw the hung process's GPU memory."""
    ev = st.get("evidence") or {}
    stacks = ev.get("stacks") or {}
    gpu = ev.get("gpu") or {}
    text = stacks.get("text") or ""
    return {"file": path.name, "status": st.get("status"), "last_mark": st.get("last_mark"),
            "provenance": st.get("provenance"), "stack_method": stacks.get("method"),
            "native_frames": any(tag in text for tag in (".so", "libcuda", "libc.so")),
            "gpu_evidence": gpu.get("reason") if gpu.get("available") is False else
            ("per-process memory" if json.dumps(gpu).find("used_memory") >= 0 else "recorded")}


def summarise(runs, steps: list[dict], rehearse: bool) -> dict:
    out: dict = {"rehearsal": rehearse, "steps": steps, "cuda_init": [], "bandwidth": [], "train": [],
                 "buffer": [], "dflex": [], "drill": []}
    for path, run, st in stages(runs, "cuda"):
        d = st.get("data") or {}
        if st.get("status") == "pass":
            out["cuda_init"].append({"file": path.name, "gpu": gpu_name(run), "init_s": d.get("init_s"),
                                     "context_s": d.get("context_s"), "first_kernel_s": d.get("first_kernel_s")})
        if st.get("status") in ("hang", "slow"):
            ev = st.get("evidence") or {}
            out["drill"].append(drill_row(path, st))
    for path, run, st in stages(runs, "alloc"):
        d = st.get("data") or {}
        if st.get("status") in ("hang", "slow"):
            out["drill"].append(drill_row(path, st))
        bw = d.get("bandwidth")
        if bw:
            spec = spec_for(gpu_name(run)) if d.get("device") != "cpu" else None
            out["bandwidth"].append({"file": path.name, "device": d.get("device"), "gb_s": bw.get("gb_s"),
                                     "bytes": bw.get("bytes"), "spec": spec and spec[0], "spec_gb_s": spec and spec[1],
                                     "of_spec": round(bw["gb_s"] / spec[1], 3) if spec and bw.get("gb_s") else None})
    for path, run, st in stages(runs, "train"):
        d = st.get("data") or {}
        out["train"].append({"file": path.name, "status": st.get("status"), "provenance": st.get("provenance"),
                             "model_size": d.get("model_size"), "device": d.get("device"),
                             # which update was timed: the alg, its variant, and the env upstream's steps
                             "alg": d.get("alg"), "variant": d.get("variant"), "env": d.get("env"),
                             "wm_update_s": d.get("wm_update_s"), "actor_update_s": d.get("actor_update_s"),
                             "critic_update_s": d.get("critic_update_s"),
                             "peak_mib": round(d["memory"]["peak_bytes"] / 2**20) if d.get("memory") else None})
    for path, run, st in stages(runs, "buffer"):
        d = st.get("data") or {}
        for cap in d.get("capacities") or []:
            decision = cap.get("storage_decision") or {}
            out["buffer"].append({"file": path.name, "provenance": st.get("provenance"), "capacity": cap.get("capacity"),
                                  "storage": decision.get("device"), "pinned": decision.get("pinned"),
                                  "ms_per_sample": cap.get("ms_per_sample"), "completed": cap.get("completed")})
    for path, run, st in stages(runs, "sim"):
        d = (st.get("data") or {}).get("dflex") or {}
        out["dflex"].append({"file": path.name, "status": st.get("status"), "dflex_status": d.get("status"),
                             "reason": d.get("reason") or st.get("reason"),
                             "error": (st.get("error") or {}).get("message") if isinstance(st.get("error"), dict)
                             else st.get("error")})
    return out


def markdown(s: dict) -> str:
    def table(rows, cols):
        if not rows:
            return "_missing: the run produced none_\n"
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    parts = ["# GPU evidence run" + (" (rehearsal on the CPU)" if s["rehearsal"] else ""), "",
             "## Steps", table(s["steps"], ["step", "expect", "rc", "seconds", "outcome"]),
             "## CUDA init", table(s["cuda_init"], ["gpu", "init_s", "context_s", "first_kernel_s", "file"]),
             "## Copy bandwidth (bytes read + written)",
             table(s["bandwidth"], ["device", "gb_s", "spec", "spec_gb_s", "of_spec", "file"]),
             "## Train step", table(s["train"], ["model_size", "alg", "variant", "env", "device", "provenance",
                                                 "wm_update_s", "actor_update_s", "critic_update_s", "peak_mib",
                                                 "status"]),
             "## Buffer sampling", table(s["buffer"], ["provenance", "capacity", "storage", "pinned", "ms_per_sample"]),
             "## dflex", table(s["dflex"], ["status", "dflex_status", "reason", "error", "file"]),
             "## Fire drill", table(s["drill"], ["status", "last_mark", "provenance", "stack_method", "native_frames",
                                                "gpu_evidence"])]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--steps", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rehearse", action="store_true")
    args = ap.parse_args(argv)
    with args.steps.open() as f:
        steps = list(csv.DictReader(f, delimiter="\t"))
    s = summarise(load_runs(args.results), steps, args.rehearse)
    (args.out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(s))
    print(markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
