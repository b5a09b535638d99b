#!/usr/bin/env python
"""Learning side by side on real dflex: one run of one implementation, to an env-step budget.

Claim checked (issue 16, item 4): on the same env, seed and env-step budget, one torch thread
each, the upstream variant of the trainer lands within the seed spread of upstream's own code,
and the bundled variant's median return is >= 3x upstream's. This script makes one run; the
figure and the table come from benchmarks/learning_side_by_side.py over the summaries.

Implementations (``--impl``):
  upstream-code     upstream's own ``scripts/train_dflex.py`` (imgeorgiev/PWM at aa5a1d8, the
                    vendored tarball), in a venv of its own, with the vendored CPU shim
                    (cpu_shim/: CPU buffer storage, no pinned memory, one thread; the algorithm
                    untouched) and stdin from /dev/null (its crash handler opens pdb).
  upstream-variant  this trainer's ``alg=pwm`` (upstream's algorithm under upstream's names).
  bundled           this trainer's own variant (``--alg``, default ``bundled_5M``).

``--tag NAME`` plus overrides makes a variant run for an ablation, e.g. the bundled variant with its
target critic off (benchmarks/learning_ablation.py reads those)::

    python benchmarks/learning_hopper.py --impl bundled --seed 42 --tag no-target-critic \
        alg.bundled.target_critic_alpha=0

Each run keeps its config's own epoch count (the learning-rate schedules decay over it, as in
the paper's runs) and is stopped (SIGTERM) at the first epoch that reaches ``--env-steps``, so
the returns are read at the same point of the same schedule for every implementation. Neither
upstream nor the trainer has an env-step limit of its own.

    nice -n 19 python benchmarks/learning_hopper.py --impl upstream-code --seed 42
    nice -n 19 python benchmarks/learning_hopper.py --impl bundled --seed 42
    python benchmarks/learning_hopper.py --impl bundled --seed 42 --parse-only   # summarise again

Outputs: the run under ``benchmarks/out/runs/<impl>_<env>_s<seed>/`` (git-ignored) and the
summary ``benchmarks/results/learning_hopper/<impl>[-<tag>]_<env>_s<seed>.json``: curves of (env steps,
wall seconds, training return = mean of the last 100 training episodes, as both codes log it),
evaluations where the implementation has them, s/epoch, and the exact command.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "out" / "runs"
RESULTS = ROOT / "benchmarks" / "results" / "learning_hopper"
TARBALL = "PWM-aa5a1d8.tar.gz"

# Upstream prints one line per epoch, e.g.
#   [12/15000]  R:41.07  T:0.0  H:16.0  S:13312  FPS:190  pi_loss:...
# between progress lines ended by "\r" (wm iter k/n, value iter k/n), so lines are split on both.
UPSTREAM_EPOCH = re.compile(r"\[(\d+)/(\d+)\]\s+R:(\S+)\s+T:\S+\s+H:(\S+)\s+S:(\d+)\s+FPS:(\S+)")


def vendor_dir() -> Path:
    """``shared/vendor/pwm-upstream`` beside the checkout or beside a folder above it (a git
    worktree sits one level deeper than the main checkout); GPUPROBE_SHARED overrides."""
    if os.environ.get("GPUPROBE_SHARED"):
        return Path(os.environ["GPUPROBE_SHARED"]) / "vendor" / "pwm-upstream"
    for parent in ROOT.parents:
        candidate = parent / "shared" / "vendor" / "pwm-upstream"
        if (candidate / TARBALL).is_file():
            return candidate
    raise SystemExit("upstream PWM not found: no shared/vendor/pwm-upstream/" + TARBALL
                     + " above the checkout (set GPUPROBE_SHARED)")


def upstream_tree(dest: Path) -> Path:
    """Upstream's code unpacked under benchmarks/out (git-ignored): run from there, never from the repo."""
    tree = dest / "PWM"
    if not (tree / "scripts" / "train_dflex.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(vendor_dir() / TARBALL) as tf:
            tf.extractall(dest, filter="data")
    return tree


def parse_upstream_log(text: str) -> list[dict]:
    """One record per epoch line of upstream's stdout: iteration, env steps, training return."""
    records = []
    for m in UPSTREAM_EPOCH.finditer(text):
        ret = float(m.group(3))
        records.append({"iteration": int(m.group(1)), "max_epochs": int(m.group(2)),
                        "env_steps": int(m.group(5)), "train_return": None if math.isinf(ret) else ret,
                        "rollout_len": float(m.group(4))})
    return records


def parse_upstream_timing(path: Path) -> tuple[float | None, dict[int, float]]:
    """The shim's PWMCMP_TIMING file: seconds since the interpreter started at the first actor
    update and at the end of every epoch (keyed by the epoch count, which matches the log's)."""
    first, ends = None, {}
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") == "first_epoch_start":
                first = rec["t"]
            elif "epoch" in rec:
                ends[int(rec["epoch"])] = rec["t"]
    return first, ends


def upstream_curves(run_dir: Path) -> dict:
    records = parse_upstream_log((run_dir / "stdout.log").read_text(errors="replace"))
    first, ends = parse_upstream_timing(run_dir / "timing.jsonl")
    for r in records:
        r["wall_s"] = ends.get(r["iteration"])
    # Before its first epoch line upstream trains the world model env.episode_length times (1000 on
    # Hopper) and prints only "wm iter k/n": a run stopped there is summarised by how far it got.
    text = (run_dir / "stdout.log").read_text(errors="replace")
    head = text[:text.index("[1/")] if records and "[1/" in text else text
    progress = re.findall(r"wm iter (\d+)/(\d+)", head)
    warmup = [int(progress[-1][0]), int(progress[-1][1])] if progress else None
    return {"records": records, "first_epoch_start_s": first, "evals": [], "warmup_iterations": warmup}


def ours_curves(run_dir: Path) -> dict:
    metrics = sorted((run_dir / "logdir").glob("*/metrics.jsonl"))
    if not metrics:
        return {"records": [], "evals": []}
    lines = [json.loads(x) for x in metrics[-1].read_text().splitlines() if x.strip()]
    records, evals = [], []
    for r in lines:
        if r.get("final"):
            if "eval/return" in r:
                evals.append({"env_steps": r["env_steps"], "wall_s": r["time/elapsed"],
                              "eval_return": r["eval/return"], "final": True})
            continue
        records.append({"iteration": r["iteration"], "env_steps": r["env_steps"], "wall_s": r["time/elapsed"],
                        "train_return": r.get("train/return"), "epoch_s": r.get("time/epoch")})
        if "eval/return" in r:
            evals.append({"env_steps": r["env_steps"], "wall_s": r["time/elapsed"], "eval_return": r["eval/return"]})
    return {"records": records, "evals": evals, "metrics": str(metrics[-1])}


def progress(impl: str, run_dir: Path) -> tuple[int, float]:
    """(env steps, wall seconds) of the last epoch logged so far; (0, 0.0) before the first."""
    try:
        curves = upstream_curves(run_dir) if impl == "upstream-code" else ours_curves(run_dir)
    except (OSError, ValueError):  # a line half written: read again at the next poll
        return 0, 0.0
    last = curves["records"][-1] if curves["records"] else {}
    return last.get("env_steps", 0), last.get("wall_s") or 0.0


def past_budget(record: dict, env_steps: int | None, wall_s: float | None) -> bool:
    """Whether this epoch is at or past the run's budget: env steps, or the run's own wall clock
    (the trainer's time/elapsed, so the interpreter's start-up is not charged to the run)."""
    return ((env_steps is not None and record.get("env_steps", 0) >= env_steps)
            or (wall_s is not None and (record.get("wall_s") or 0.0) >= wall_s))


def command_for(args, run_dir: Path) -> tuple[list[str], dict, Path]:
    """The command line, the environment variables it adds, and its working directory."""
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.impl == "upstream-code":
        tree = upstream_tree(args.upstream_dir)
        env.update({"PYTHONPATH": str(vendor_dir() / "cpu_shim"), "PWMCMP_SHIM": "1",
                    "PWMCMP_TIMING": str(run_dir / "timing.jsonl")})
        cmd = [str(args.upstream_python), "-u", "train_dflex.py", "alg=pwm", f"env={args.env}",
               "general.device=cpu", "general.run_wandb=False", f"general.seed={args.seed}",
               f"hydra.run.dir={run_dir / 'hydra'}", *args.overrides]
        return cmd, env, tree / "scripts"
    # Issue 16 renamed the configs: alg=pwm* became upstream's algorithm, the bundled variant
    # bundled_*, and general.eval_episodes upstream's general.eval_runs. Trees from before it
    # (main at bf9527a) have neither the bundled_* configs nor alg=pwm.
    upstream_surface = (args.tree / "gpuprobe_pwm" / "config" / "alg" / "bundled_5M.yaml").is_file()
    if args.impl == "upstream-variant" and not upstream_surface:
        raise SystemExit(f"{args.tree}: this trainer has no alg=pwm (upstream's algorithm) yet")
    alg = args.alg or ("pwm" if args.impl == "upstream-variant" else
                       "bundled_5M" if upstream_surface else "pwm_5M")
    env["PYTHONPATH"] = str(args.tree)
    cmd = [sys.executable, "-m", "gpuprobe_pwm.train", f"env={args.env}", f"alg={alg}",
           f"general.seed={args.seed}", "general.device=cpu", "general.torch_threads=1",
           f"general.eval_interval={args.eval_interval}",
           "general.eval_runs=16" if upstream_surface else "general.eval_episodes=16",
           "general.preflight=off", f"general.logdir={run_dir / 'logdir'}", *args.overrides]
    return cmd, env, args.tree


def git_commit(tree: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True)
    if out.returncode:
        return None
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def stop_on_sigterm() -> None:
    """A SIGTERM (kill, a scheduler) stops the run as Ctrl-C does: the child gets its SIGTERM too
    (the trainer saves latest_checkpoint.pt) and what it reached is summarised, not orphaned."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def launch(args, run_dir: Path) -> None:
    cmd, env, cwd = command_for(args, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"impl": args.impl, "env": args.env, "seed": args.seed, "env_steps_budget": args.env_steps,
            "wall_s_budget": args.wall_s, "command": cmd, "env_vars": env, "cwd": str(cwd),
            "code_commit": None if args.impl == "upstream-code" else git_commit(args.tree),
            "upstream": TARBALL if args.impl == "upstream-code" else None,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    with open(run_dir / "stdout.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: os.nice(args.nice))
        stopped = None
        try:
            while proc.poll() is None:
                reached, wall = progress(args.impl, run_dir)
                if past_budget({"env_steps": reached, "wall_s": wall}, args.env_steps, args.wall_s):
                    stopped = reached
                    proc.send_signal(signal.SIGTERM)
                    proc.wait()
                    break
                time.sleep(5)
        except KeyboardInterrupt:  # the person running it stops it: stop the child too, then summarise
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    meta.update({"ended": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "exit_code": proc.returncode, "stopped_at_budget_env_steps": stopped,
                 "loadavg_at_end": os.getloadavg()})
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def summarise(args, run_dir: Path) -> dict:
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").is_file() else {}
    curves = upstream_curves(run_dir) if args.impl == "upstream-code" else ours_curves(run_dir)
    # the records up to the first one at or past the budget: that one is the reading at the budget
    recs = []
    for r in curves["records"]:
        recs.append(r)
        if past_budget(r, args.env_steps, args.wall_s):
            break
    at_budget = recs[-1] if recs and past_budget(recs[-1], args.env_steps, args.wall_s) else None
    last = recs[-1] if recs else None
    returns = [r["train_return"] for r in recs if r.get("train_return") is not None]
    walls = [(r["iteration"], r["wall_s"]) for r in recs if r.get("wall_s") is not None]
    # s/epoch after the first world-model update: upstream's first one is its 1000-iteration warm-up
    dts = [b[1] - a[1] for a, b in zip(walls, walls[1:]) if b[0] == a[0] + 1]
    summary = {
        "impl": args.impl, "env": args.env, "seed": args.seed, "env_steps_budget": args.env_steps,
        "wall_s_budget": args.wall_s, "reached_budget": at_budget is not None,
        "env_steps_reached": last["env_steps"] if last else 0,
        "wall_s_reached": last.get("wall_s") if last else None,
        "train_return_last": last.get("train_return") if last else None,
        "train_return_best": max(returns) if returns else None,
        "epochs": last["iteration"] if last else 0,
        "first_epoch_end_s": walls[0][1] if walls else None,
        "median_epoch_s_after_first": statistics.median(dts) if dts else None,
        "evals": [e for e in curves["evals"] if e["env_steps"] <= (last["env_steps"] if last else 0)],
        "curve": {"env_steps": [r["env_steps"] for r in recs], "wall_s": [r.get("wall_s") for r in recs],
                  "train_return": [r.get("train_return") for r in recs]},
        "meta": meta,
    }
    if args.impl != "upstream-code":
        # general.pretrain runs: what the trainer pretrained on, and how long that took
        run_json = sorted((run_dir / "logdir").glob("*/run.json"))
        if run_json and "pretrain" in json.loads(run_json[-1].read_text()):
            summary["pretrain"] = json.loads(run_json[-1].read_text())["pretrain"]
    if args.impl == "upstream-code":
        summary["first_epoch_start_s"] = curves.get("first_epoch_start_s")
        summary["warmup_iterations_done"] = curves.get("warmup_iterations")
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", required=True, choices=["upstream-code", "upstream-variant", "bundled"])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--env", default="dflex_hopper")
    ap.add_argument("--env-steps", type=int, default=None,
                    help="stop at the first epoch that reaches this (default 350000, or none with --wall-s)")
    ap.add_argument("--wall-s", type=float, default=None,
                    help="stop at the first epoch that ends this many seconds into the run (Ant's 60 "
                         "minutes: --env dflex_ant --wall-s 3600)")
    ap.add_argument("--alg", default=None, help="trainer config (default: pwm for upstream-variant, bundled_5M for bundled)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="gpuprobe tree whose trainer runs (PYTHONPATH)")
    ap.add_argument("--eval-interval", type=int, default=38,
                    help="trainer evaluations every N epochs (38: 342 = 9 x 38 lands one at 350k on Hopper)")
    ap.add_argument("--upstream-python", type=Path, default=ROOT / "benchmarks" / ".venv-upstream" / "bin" / "python")
    ap.add_argument("--upstream-dir", type=Path, default=ROOT / "benchmarks" / "out",
                    help="where upstream's tarball is unpacked (git-ignored)")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--nice", type=int, default=19)
    ap.add_argument("--parse-only", action="store_true", help="summarise an existing run directory again")
    ap.add_argument("--tag", default=None,
                    help="names a variant run (an ablation): its run directory and summary become "
                         "<impl>-<tag>_<env>_s<seed>, so the seed runs' summaries are not overwritten")
    ap.add_argument("overrides", nargs="*", help="more overrides, passed on and recorded")
    args = ap.parse_args()
    if args.env_steps is None and args.wall_s is None:
        args.env_steps = 350_000
    if args.tag and not re.fullmatch(r"[A-Za-z0-9.=_-]+", args.tag):
        ap.error(f"--tag {args.tag!r}: letters, digits and . = _ - only (it becomes a file name)")
    name = f"{args.impl}-{args.tag}" if args.tag else args.impl
    run_dir = args.run_dir or RUNS / f"{name}_{args.env}_s{args.seed}"
    if not args.parse_only:
        stop_on_sigterm()
        launch(args, run_dir)
    summary = summarise(args, run_dir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.tag:
        summary.update(tag=args.tag, overrides=list(args.overrides))
    out = RESULTS / f"{name}_{args.env}_s{args.seed}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("curve", "meta", "evals")}))
    print(f"summary: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
