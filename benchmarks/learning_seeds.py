#!/usr/bin/env python
"""All seeds of the learning benchmark in one figure and one table.

Reads the summaries that benchmarks/learning_cartpole.py writes (learning_cartpole.json, with
its "evals": [epoch, seconds of training, mean eval return]) and draws every seed's evaluation
return against wall time, with the goal and the 15-minute budget, so a pass rate is read off
one picture rather than one lucky curve.

    python benchmarks/learning_seeds.py benchmarks/results/learning_cartpole_seed*/learning_cartpole.json \\
        --out benchmarks/results/learning_cartpole_seeds.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402


def load(path: Path) -> dict:
    summary = json.loads(path.read_text())
    if not summary.get("evals"):
        raise SystemExit(f"{path}: no 'evals' in this summary (written by an older learning_cartpole.py)")
    return summary


def override(s: dict, key: str, default: str = "?") -> str:
    return next((o.split("=", 1)[1] for o in s["overrides"] if o.startswith(key + "=")), default)


def label(s: dict) -> str:
    warmup = override(s, "alg.wm_warmup_iterations", "0")
    bins = override(s, "alg.agent.model.reward_bins", "0")
    return (f"seed {s['seed']}" + (f", wm warm-up {warmup}" if warmup != "0" else "")
            + (f", {bins}-bin reward" if bins != "0" else ""))


def row(s: dict) -> str:
    reached = s.get("reached")
    best_epoch, best_t, best = s["best_eval"]
    verdict = (f"yes: {reached[2]:.1f} at epoch {reached[0]}, {reached[1]:.0f} s" if reached
               else f"no: best {best:.1f} at epoch {best_epoch}, {best_t:.0f} s")
    threads = s.get("machine", {}).get("torch_threads")
    if threads is None:  # summaries from before the field: the override says
        threads = override(s, "general.torch_threads")
    return (f"| {label(s)} | {threads} | {s['evals'][0][2]:.1f} | {verdict} | "
            f"{100 * best / s['reference_return']:.1f}% | {s['wall_s']:.0f} s |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", nargs="+", type=Path, help="learning_cartpole.json files, one per seed")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--budget-minutes", type=float, default=15.0)
    ap.add_argument("--title", default="bundled_5M (pwm_5M before issue 16) on cart-pole swing-up, 2-core CPU: every run")
    args = ap.parse_args()
    summaries = sorted((load(p) for p in args.summaries), key=lambda s: (s["seed"], label(s)))
    budget_s = 60 * args.budget_minutes

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in summaries:
        t = [e[1] / 60 for e in s["evals"]]
        ax.plot(t, [e[2] for e in s["evals"]], marker=".", label=label(s))
    target, reference = summaries[0]["target_return"], summaries[0]["reference_return"]
    ax.axhline(target, color="k", ls="--", lw=1, label=f"goal: 80% of the controller ({target:.1f})")
    ax.axhline(reference, color="grey", ls=":", lw=1, label=f"scripted controller ({reference:.1f})")
    ax.axvline(args.budget_minutes, color="r", ls="--", lw=1, label=f"{args.budget_minutes:g}-minute budget")
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("mean eval return (hanging start)")
    ax.set_title(args.title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)

    passed = sum(1 for s in summaries if s.get("reached") and s["reached"][1] <= budget_s)
    print("| run | torch threads | first eval | reached the goal | best / controller | script wall |")
    print("|---|---|---|---|---|---|")
    for s in summaries:
        print(row(s))
    print(f"\n{passed} of {len(summaries)} runs reached the goal within {args.budget_minutes:g} minutes; "
          f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
