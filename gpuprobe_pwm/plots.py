"""PNG plots of a run from its metrics.jsonl: returns (train and eval) and losses.

    python -m gpuprobe_pwm plots --log-dir RUN_DIR
    python -m gpuprobe_pwm plots --log-dir LOGDIR --run pwm_5M_cartpole_swingup_seed42   # latest of that name
"""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuprobe_pwm.runs import METRICS, find_run, read_metrics

log = logging.getLogger(__name__)

LOSS_KEYS = ("wm/loss", "wm/consistency", "wm/reward", "actor/loss", "critic/loss")


def resolve_run_dir(log_dir: Path, run: str | None = None) -> Path:
    """A run directory itself, or the latest run called `run` under a logdir (via the index)."""
    log_dir = Path(log_dir).expanduser().resolve()
    if run is not None:
        return find_run(log_dir, run)
    if (log_dir / METRICS).is_file():
        return log_dir
    raise FileNotFoundError(f"{log_dir} has no {METRICS}: pass a run directory, or a logdir with --run NAME")


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "iteration" in r:
            xs.append(r["iteration"])
            ys.append(value)
    return xs, ys


def make_plots(run_dir: Path, out_dir: Path | None = None,
               reference: float | None = None) -> list[Path]:
    """Write returns.png and losses.png; returns their paths. `reference` draws a horizontal line
    (e.g. a scripted controller's return)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir).resolve()
    out_dir = Path(out_dir).resolve() if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [r for r in read_metrics(run_dir / METRICS) if not r.get("final")]
    if not records:
        raise ValueError(f"{run_dir / METRICS} has no epoch records")
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train/return", "train (mean of last 100 episodes)"), ("eval/return", "eval (deterministic)")):
        xs, ys = _series(records, key)
        if xs:
            ax.plot(xs, ys, marker="o" if key.startswith("eval") else None, markersize=3, label=label)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", label=f"reference {reference:.1f}")
    ax.set_xlabel("iteration (epoch)")
    ax.set_ylabel("episode return")
    ax.set_title(run_dir.name, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = out_dir / "returns.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    keys = [k for k in LOSS_KEYS if _series(records, k)[0]]
    if keys:
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * len(keys)), sharex=True, squeeze=False)
        for ax, key in zip(axes[:, 0], keys):
            xs, ys = _series(records, key)
            ax.plot(xs, ys, linewidth=1)
            ax.set_ylabel(key, fontsize=8)
            if key != "actor/loss" and min(ys) > 0:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("iteration (epoch)")
        fig.suptitle(run_dir.name, fontsize=9)
        fig.tight_layout()
        path = out_dir / "losses.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for p in written:
        log.info("wrote %s", p)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-dir", required=True, type=Path, help="a run directory, or a logdir with --run")
    parser.add_argument("--run", default=None, help="run name prefix, e.g. pwm_5M_cartpole_swingup_seed42")
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: the run dir)")
    parser.add_argument("--reference", type=float, default=None, help="draw a reference return line")


def command(args: argparse.Namespace) -> int:
    try:
        run_dir = resolve_run_dir(args.log_dir, args.run)
        paths = make_plots(run_dir, args.out, args.reference)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    for p in paths:
        print(p)  # CLI output: the written paths, one per line, for scripts
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generate_visualizations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return command(parser.parse_args(argv))
