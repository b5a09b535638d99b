#!/usr/bin/env python
"""The ablation of the bundled variant's departures from upstream: how much of its lead each one holds.

Claim checked (issue 16, item 4): the bundled variant learns better than upstream's algorithm from
scratch; an ablation says how much of that each departure contributes. Each ablation run is the
bundled variant with one departure put back to upstream's behaviour, made by
``benchmarks/learning_hopper.py --impl bundled --tag NAME <overrides>`` on the same env, budget
and one torch thread:

    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag no-target-critic \\
        alg.bundled.target_critic_alpha=0
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag obs-rms-off alg.obs_rms=false
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag upstream-wm-loss \\
        alg.bundled.rho=0.99 alg.bundled.consistency_coef=1 alg.bundled.reward_coef=0.0625
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag wm-warmup \\
        alg.bundled.wm_warmup_iterations=1000
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag upstream-network \\
        alg.network.layer_order=mish_ln alg.network.init=upstream alg.network.reward_readout=symlog \\
        alg.network.actor_logstd_clamp=parameter
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag detach alg.detach=true
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag rew-rms-off alg.rew_rms=false
    python benchmarks/learning_ablation.py --out benchmarks/results/learning_ablation.png

and the same with --seed 43 and 44. ``alg.rew_rms=false`` is upstream pwm_5M's setting; upstream's
``alg=pwm`` normalises rewards too, but centred, clipped and from world-model batches, which the
bundled variant has no switch for. ``alg.ret_rms`` is not a departure: both divide the actor loss
by the running std of its returns.

Reads every summary in benchmarks/results/learning_hopper/: the tagged ones are the ablations,
the untagged bundled and upstream-code runs the two ends. For each ablation it prints the training
return at the budget per seed, the bundled variant's return on the same seeds, and the share of
the bundled lead over upstream's code that the departure holds on those seeds:

    share = (bundled - ablated) / (bundled - upstream's code)     (medians over the shared seeds)

1.0: without the departure the lead is gone; 0: it does not matter; < 0: the run learned better
without it. Runs with one seed do not repeat (BENCHMARKS.md), so a share from one or two seeds is
an indication, and the printout says over how many seeds each share was taken.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the side-by-side script beside it
from learning_side_by_side import RESULTS, ROOT, at_budget, finish_panel, plot_curve, save_figure  # noqa: E402


def share(bundled: float, ablated: float, upstream: float) -> float | None:
    """The part of the bundled lead over upstream's code that is lost without the departure."""
    lead = bundled - upstream
    return None if lead <= 0 else (bundled - ablated) / lead


def is_pretrained(summary: dict) -> bool:
    """A general.pretrain run (benchmarks/learning_pretrain.py): not a departure put back."""
    return any(o.startswith("general.pretrain=") for o in summary.get("overrides", []))


def ablation_rows(summaries: list[dict], env: str) -> list[dict]:
    bundled = at_budget(summaries, env, "bundled", None)
    upstream = at_budget(summaries, env, "upstream-code", None)
    up_med = statistics.median(upstream.values()) if upstream else None
    rows = []
    for tag in sorted({s["tag"] for s in summaries if s.get("tag") and s["env"] == env and s["impl"] == "bundled"}):
        ablated = at_budget(summaries, env, "bundled", tag)
        overrides = next(s.get("overrides", []) for s in summaries if s.get("tag") == tag and s["env"] == env)
        seeds = sorted(set(ablated) & set(bundled))
        row = {"tag": tag, "overrides": overrides, "ablated": ablated, "seeds": seeds,
               "bundled": {k: bundled[k] for k in seeds}, "share": None}
        if seeds and up_med is not None:
            row["share"] = share(statistics.median(bundled[k] for k in seeds),
                                 statistics.median(ablated[k] for k in seeds), up_med)
        rows.append(row)
    return rows


def table(summaries: list[dict], env: str) -> list[str]:
    bundled = at_budget(summaries, env, "bundled", None)
    upstream = at_budget(summaries, env, "upstream-code", None)
    fmt = lambda d: ", ".join(f"s{k}: {v:.1f}" for k, v in sorted(d.items())) or "—"  # noqa: E731
    out = [f"{env}: bundled variant {fmt(bundled)}; upstream's own code {fmt(upstream)}"
           + (f" (median {statistics.median(upstream.values()):.1f})" if upstream else ""), "",
           "| departure put back | overrides | ablated | bundled, same seeds | share of the lead |",
           "|---|---|---|---|---|"]
    for r in ablation_rows(summaries, env):
        sh = "—" if r["share"] is None else f"{r['share']:.2f} over {len(r['seeds'])} seed(s)"
        out.append(f"| {r['tag']} | `{' '.join(r['overrides'])}` | {fmt(r['ablated'])} | {fmt(r['bundled'])} | {sh} |")
    return out


# one colour per ablation in every panel; blue and red are the bundled variant's and upstream's
TAG_COLOURS = ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
               "tab:grey")


def figure(summaries: list[dict], env: str, out: Path) -> None:
    """Each ablation's curve beside the bundled variant's and upstream's code on the same seed."""
    tags = sorted({s["tag"] for s in summaries if s.get("tag") and s["env"] == env})
    seeds = sorted({s["seed"] for s in summaries if s.get("tag") and s["env"] == env})
    fig, axes = plt.subplots(1, max(1, len(seeds)), figsize=(8 * max(1, len(seeds)), 6), squeeze=False)
    for ax, seed in zip(axes[0], seeds):
        for s in summaries:
            if s["env"] != env or s["seed"] != seed or s["impl"] not in ("bundled", "upstream-code"):
                continue
            label = s.get("tag") and f"bundled, {s['tag']}" or (
                "bundled variant" if s["impl"] == "bundled" else "upstream's own code")
            style = dict(lw=2.2, color="tab:blue") if s["impl"] == "bundled" and not s.get("tag") else (
                dict(lw=2.2, color="tab:red") if s["impl"] == "upstream-code" else
                dict(lw=1.2, ls="--", color=TAG_COLOURS[tags.index(s["tag"]) % len(TAG_COLOURS)]))
            plot_curve(ax, s, label=label, **style)
        finish_panel(ax, f"{env}, seed {seed}: one departure put back at a time ({len(tags)} ablations)")
    save_figure(fig, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="dflex_hopper")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_ablation.png")
    args = ap.parse_args()
    summaries = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    summaries = [s for s in summaries if not is_pretrained(s)]
    if not any(s.get("tag") for s in summaries):
        raise SystemExit(f"no ablation run in {RESULTS}: make one with learning_hopper.py --tag (see --help)")
    print("\n".join(table(summaries, args.env)))
    figure(summaries, args.env, args.out)
    print(f"\nfigure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
