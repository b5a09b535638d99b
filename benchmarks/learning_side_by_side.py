#!/usr/bin/env python
"""The side-by-side learning figure and table: every run's training return against env steps,
with the paper's curves as the upper reference band.

Reads the summaries benchmarks/learning_hopper.py writes (benchmarks/results/learning_hopper/*.json)
and the paper's curves kept under benchmarks/reference/ (pwm_hopper.csv, pwm_ant.csv: five runs
each, see the README there). The paper's runs started from a world model pretrained on offline data
that is not reachable here, so the band is labelled as such and is not a target.

    python benchmarks/learning_side_by_side.py --out benchmarks/results/learning_side_by_side.png

Prints a Markdown table (one row per run) and, for every seed that has both, the ratio of the
bundled (or upstream-variant) return to upstream's own code at the budget, then issue 16's two
claims over the seeds that reached the budget (``claims()``).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "learning_hopper"
REFERENCE = ROOT / "benchmarks" / "reference"
BAND_LABEL = "paper, 5 seeds: pretrained world model,\noffline data not reachable here"
PRETRAIN = {"dflex_hopper": "Hopper 50k", "dflex_ant": "Ant 100k"}
COLOURS = {"upstream-code": "tab:red", "upstream-variant": "tab:orange", "bundled": "tab:blue"}
NAMES = {"upstream-code": "upstream's own code", "upstream-variant": "trainer, alg=pwm (upstream's algorithm)",
         "bundled": "trainer, bundled variant"}
SEED_STYLES = ("-", "--", ":", "-.")  # one per seed, in the order of the seeds present


def read_reference(path: Path) -> tuple[list[float], list[list[float]]]:
    """The runs' values on the first run's steps. Ant's sweep_2 was logged ~600 steps after the
    others, so each run is interpolated linearly onto the common steps (within its own range)."""
    with path.open() as f:
        rows = list(csv.reader(f))
    series = []
    for col in range(1, len(rows[0])):
        pts = [(float(r[0]), float(r[col])) for r in rows[1:] if r[col]]
        series.append(([p[0] for p in pts], [p[1] for p in pts]))
    lo = max(xs[0] for xs, _ in series)
    hi = min(xs[-1] for xs, _ in series)
    steps = [x for x in series[0][0] if lo <= x <= hi]
    return steps, [[float(np.interp(x, xs, ys)) for xs, ys in series] for x in steps]


def draw_band(ax, path: Path, env: str, xmax: float) -> None:
    steps, values = read_reference(path)
    keep = [i for i, s in enumerate(steps) if s <= xmax]
    steps = [steps[i] for i in keep]
    values = [values[i] for i in keep]
    ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color="grey", alpha=0.25,
                    label=f"{BAND_LABEL} ({PRETRAIN[env]} pretraining steps), min to max")
    ax.plot(steps, [statistics.median(v) for v in values], color="grey", lw=1.5, label="paper: median")


def plot_curve(ax, s: dict, **style) -> None:
    """A run's training return against env steps (epochs before the first finished episode have none)."""
    c = s["curve"]
    pts = [(x, y) for x, y in zip(c["env_steps"], c["train_return"]) if y is not None]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], **style)


def finish_panel(ax, title: str, xlabel: str = "env steps", legend: dict | None = None) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training return (mean of the last 100 episodes)")
    ax.grid(alpha=0.3)
    ax.legend(**(legend or {"fontsize": 8}))


def save_figure(fig, out: Path) -> None:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def value_at(s: dict, steps: int) -> tuple[int, float] | None:
    """The last logged (env steps, training return) at or before ``steps``."""
    pts = [(x, y) for x, y in zip(s["curve"]["env_steps"], s["curve"]["train_return"]) if y is not None and x <= steps]
    return pts[-1] if pts else None


def row(s: dict) -> str:
    evals = s.get("evals") or []
    ev = evals[-1]["eval_return"] if evals else None
    per_epoch = s.get("median_epoch_s_after_first")
    first = s.get("first_epoch_end_s")
    reached = f"{s['env_steps_reached']:,}" + ("" if s["reached_budget"] else " (cut short)")
    fmt = lambda v, p=1: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
    return (f"| {s['env']} | {NAMES[s['impl']]} | {s['seed']} | {reached} | {fmt(s['train_return_last'])} | "
            f"{fmt(s['train_return_best'])} | {fmt(ev)} | {fmt(first, 0)} | {fmt(per_epoch, 2)} | "
            f"{fmt(s['wall_s_reached'], 0)} |")


def at_budget(summaries: list[dict], env: str, impl: str, tag: str | None = None) -> dict[int, float]:
    """seed -> training return at the budget, for the runs of (impl, tag) that reached it."""
    return {s["seed"]: s["train_return_last"] for s in summaries
            if s["env"] == env and s["impl"] == impl and s.get("tag") == tag
            and s["reached_budget"] and s["train_return_last"] is not None}


def claims(summaries: list[dict]) -> list[str]:
    """Issue 16's two claims over the seeds that reached the budget: (1) the upstream variant's
    median return within the [min, max] of upstream's own code; (2) the bundled variant's median
    >= 3x upstream's code's. Runs cut short are left out here (they are in the table)."""
    out = []
    for env in sorted({s["env"] for s in summaries}):
        done = {impl: at_budget(summaries, env, impl) for impl in NAMES}
        code = done["upstream-code"]
        out.append(f"\n{env}, runs that reached the budget: " + "; ".join(
            f"{NAMES[i]}: seeds {sorted(d)}" for i, d in done.items() if d))
        if not code:
            out.append("- no run of upstream's own code reached the budget: no claim can be checked")
            continue
        lo, hi, code_med = min(code.values()), max(code.values()), statistics.median(code.values())
        out.append(f"- upstream's own code: median {code_med:.1f}, spread [{lo:.1f}, {hi:.1f}] over {len(code)} seed(s)")
        if done["upstream-variant"]:
            med = statistics.median(done["upstream-variant"].values())
            verdict = "within" if lo <= med <= hi else "outside"
            out.append(f"- claim 1: alg=pwm median {med:.1f} over {len(done['upstream-variant'])} seed(s): "
                       f"{verdict} upstream's spread" + (" (one seed of upstream's code: the spread is a point)"
                                                          if len(code) == 1 else ""))
        if done["bundled"]:
            med = statistics.median(done["bundled"].values())
            ratio = med / code_med if code_med > 0 else float("nan")
            out.append(f"- claim 2: bundled median {med:.1f} over {len(done['bundled'])} seed(s) = "
                       f"{ratio:.2f}x upstream's code's median: " + ("holds (>= 3x)" if ratio >= 3 else
                       "does not hold (< 3x)" if code_med > 0 else "undefined (upstream's median <= 0)"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", nargs="*", type=Path, help="default: every JSON in " + str(RESULTS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_side_by_side.png")
    ap.add_argument("--xmax", type=float, default=400_000,
                    help="env steps shown at least (a panel widens to its longest run)")
    args = ap.parse_args()
    paths = args.summaries or sorted(RESULTS.glob("*.json"))
    summaries = sorted((json.loads(p.read_text()) for p in paths), key=lambda s: (s["env"], s["impl"], s["seed"]))
    # tagged runs are ablation variants (benchmarks/learning_ablation.py), not the implementations compared
    summaries = [s for s in summaries if not s.get("tag")]

    seeds = {env: sorted({s["seed"] for s in summaries if s["env"] == env}) for env in PRETRAIN}
    # The paper's band (pretrained, ~2500 on Hopper) dwarfs from-scratch runs (~0-400), so Hopper
    # gets a second panel on our runs' own scale, without the band.
    fig, axes = plt.subplots(1, 3, figsize=(19, 6.5))
    panels = ((axes[0], "dflex_hopper", "pwm_hopper.csv", True), (axes[1], "dflex_hopper", None, False),
              (axes[2], "dflex_ant", "pwm_ant.csv", True))
    for ax, env, ref, with_band in panels:
        mine = [s for s in summaries if s["env"] == env]
        # a run on a wall-clock budget (Ant's 60 minutes) may go past --xmax: show all of it
        xmax = max([args.xmax] + [s["env_steps_reached"] for s in mine])
        if with_band:
            draw_band(ax, REFERENCE / ref, env, xmax)
        for s in mine:
            label = f"{NAMES[s['impl']]}, seed {s['seed']}" + ("" if s["reached_budget"] else ", cut short")
            plot_curve(ax, s, color=COLOURS[s["impl"]], lw=1.2, label=label,
                       ls=SEED_STYLES[seeds[env].index(s["seed"]) % len(SEED_STYLES)])
            if s.get("evals"):
                ax.plot([e["env_steps"] for e in s["evals"]], [e["eval_return"] for e in s["evals"]],
                        ls="none", marker="o", ms=4, color=COLOURS[s["impl"]])
        if any(s.get("evals") for s in mine):
            ax.plot([], [], ls="none", marker="o", color="k", ms=4, label="dots: deterministic eval (trainer)")
        if not mine:
            ax.text(0.5, 0.5, "no run on this env yet", transform=ax.transAxes, ha="center", color="dimgrey")
        ax.set_xlim(0, xmax)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
        finish_panel(ax, f"{env}{'' if with_band else ', our runs only (own scale)'}\n"
                         "from scratch, 1 torch thread, 2-core CPU",
                     legend=dict(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                                 ncol=1 if with_band else 2))
    save_figure(fig, args.out)

    print("| env | implementation | seed | env steps reached | training return there | best | last eval | "
          "first epoch ends (s) | s/epoch after it (median) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        print(row(s))
    by = {(s["env"], s["impl"], s["seed"]): s for s in summaries}
    print()
    for (env, impl, seed), s in sorted(by.items()):
        base = by.get((env, "upstream-code", seed))
        if impl == "upstream-code" or base is None:
            continue
        # read both at the env steps both reached: a run cut short is compared where it stopped
        common = min(s["env_steps_reached"], base["env_steps_reached"])
        a, b = value_at(s, common), value_at(base, common)
        if a is None or b in (None, 0):
            continue
        print(f"- {env} seed {seed}, at {common:,} env steps: {NAMES[impl]} / upstream's code = "
              f"{a[1]:.1f} / {b[1]:.1f} = {a[1] / b[1]:.2f}x (records at {a[0]:,} and {b[0]:,} env steps)")
    for line in claims(summaries):
        print(line)
    print(f"\nfigure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
