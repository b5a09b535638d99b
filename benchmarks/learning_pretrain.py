#!/usr/bin/env python
"""Pretraining on self-collected data: the bundled variant with its world model pretrained on the
replay buffer of another of its runs (general.pretrain), against the same variant from scratch.

Claim checked (issue 16, item 4, optional): upstream's paper pretrains the world model on offline
data that is not reachable here; the trainer's own pretraining path (general.pretrain on replay files
it wrote) is measured the same way as the side-by-side runs: dflex Hopper, 350k env steps of online
training, one torch thread. The data's env steps are not counted, as the paper does not count its
offline data; the pretraining's wall time is (the first epoch ends after it).

    # the data: any earlier run's buffer on the same env, here another seed's 350k-step run
    python benchmarks/learning_hopper.py --impl bundled --seed 43 --tag no-target-critic \\
        alg.bundled.target_critic_alpha=0
    # the pretrained run (the data file is that run's latest_checkpoint.pt, written at the budget)
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag pretrained \\
        general.pretrain=benchmarks/out/runs/bundled-no-target-critic_dflex_hopper_s43/logdir/<run>/latest_checkpoint.pt \\
        general.pretrain_steps=1000
    python benchmarks/learning_pretrain.py --out benchmarks/results/learning_pretrain.png

Reads every summary in benchmarks/results/learning_hopper/ whose overrides set general.pretrain, and
the untagged bundled run of the same env and seed. Prints one row per pretrained run (the data, the
updates, the pretraining's seconds, the return at the budget against from scratch) and draws both
curves per seed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts beside it
from learning_ablation import is_pretrained
from learning_side_by_side import RESULTS, ROOT, finish_panel, plot_curve, save_figure


def pairs(summaries: list[dict], env: str) -> list[tuple[dict, dict | None]]:
    """(pretrained run, the from-scratch bundled run of the same seed, or None)."""
    scratch = {s["seed"]: s for s in summaries
               if s["env"] == env and s["impl"] == "bundled" and not s.get("tag")}
    return [(s, scratch.get(s["seed"])) for s in summaries if s["env"] == env and is_pretrained(s)]


def table(summaries: list[dict], env: str) -> list[str]:
    out = ["| seed | data (env steps, episodes) | updates | pretraining s | return at budget, pretrained "
           "| from scratch | ratio |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    for pre, base in pairs(summaries, env):
        info = pre.get("pretrain") or {}
        data = ", ".join(f"{Path(f).parent.name}/{Path(f).name}" for f in info.get("files", [])) or "?"
        steps_in_data = info.get("rows", 0) - info.get("episodes", 0)
        a = pre["train_return_last"] if pre["reached_budget"] else None
        b = base["train_return_last"] if base and base["reached_budget"] else None
        ratio = f"{a / b:.2f}x" if a is not None and b not in (None, 0) else "—"
        out.append(f"| {pre['seed']} | {data} ({steps_in_data:,}, {info.get('episodes', 0):,}) | "
                   f"{info.get('steps', '?')} | {fmt(info.get('seconds'))} | {fmt(a)} | {fmt(b)} | {ratio} |")
    return out


def figure(summaries: list[dict], env: str, out: Path) -> None:
    found = pairs(summaries, env)
    seeds = sorted({pre["seed"] for pre, _ in found})
    fig, axes = plt.subplots(1, max(1, len(seeds)), figsize=(8 * max(1, len(seeds)), 6), squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        for pre, base in found:
            if pre["seed"] != seed:
                continue
            updates = pre.get("pretrain", {}).get("steps", "?")
            for s, label, style in ((pre, f"pretrained ({updates} world-model updates first)",
                                     dict(color="tab:green", lw=1.6)),
                                    (base, "from scratch", dict(color="tab:blue", lw=1.6, ls="--"))):
                if s is None:
                    continue
                plot_curve(ax, s, label=label, **style)
        finish_panel(ax, f"{env}, seed {seed}: bundled variant, world model pretrained on another run's buffer",
                     xlabel="env steps (online; the data's not counted)")
    save_figure(fig, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="dflex_hopper")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_pretrain.png")
    args = ap.parse_args()
    summaries = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not pairs(summaries, args.env):
        raise SystemExit(f"no general.pretrain run in {RESULTS}: make one with learning_hopper.py (see --help)")
    print("\n".join(table(summaries, args.env)))
    figure(summaries, args.env, args.out)
    print(f"\nfigure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
