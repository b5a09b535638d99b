"""Tidy run folders made by upstream PWM's periodic checkpoints (`PWM_iter{N}_rew{R}.pt`).

Dry run by default: reports what would move and how much space that frees in the run folder.
With --apply, moves every periodic checkpoint except the one kept into `old_checkpoints/` inside
the same run folder. Never deletes anything; never overwrites a file already in old_checkpoints/.

Kept in place: best_policy.pt, final_policy.pt (+ .buffer), everything that is not a periodic
checkpoint, and, when the folder has no best_policy.pt, the PWM_iter file with the highest reward.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PERIODIC = re.compile(r"^PWM_iter(?P<iter>\d+)_rew(?P<rew>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\.pt$")
OLD_DIR = "old_checkpoints"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class TidyPlan:
    """What tidying one run folder does: `move` goes to old_checkpoints/, `keep` stays."""

    run_dir: Path
    keep: list[Path] = field(default_factory=list)
    move: list[Path] = field(default_factory=list)
    bytes_freed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(run_dir=str(self.run_dir), keep=[p.name for p in self.keep], move=[p.name for p in self.move],
                 freed=human_bytes(self.bytes_freed))
        return d


def plan_run(run_dir: Path) -> TidyPlan:
    run_dir = Path(run_dir).resolve()
    plan = TidyPlan(run_dir)
    periodic = []
    for p in sorted(run_dir.iterdir()):
        m = PERIODIC.match(p.name)
        if m and p.is_file() and not p.is_symlink():
            periodic.append((float(m["rew"]), int(m["iter"]), p))
    for name in ("best_policy.pt", "final_policy.pt"):
        if (run_dir / name).is_file():
            plan.keep.append(run_dir / name)
    if periodic and not (run_dir / "best_policy.pt").is_file():
        # Highest reward wins; on a tie the later iteration.
        best = max(periodic, key=lambda t: (t[0], t[1]))
        plan.keep.append(best[2])
        periodic.remove(best)
    plan.move = [p for _, _, p in sorted(periodic, key=lambda t: t[1])]
    plan.bytes_freed = sum(p.stat().st_size for p in plan.move)
    return plan


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Folders (the given ones, or below them) that hold at least one periodic checkpoint."""
    found: set[Path] = set()
    for root in paths:
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory")
        for p in root.rglob("PWM_iter*.pt"):
            if PERIODIC.match(p.name) and p.parent.name != OLD_DIR:
                found.add(p.parent)
    return sorted(found)


def apply_plan(plan: TidyPlan) -> list[Path]:
    """Move the planned files; returns their new paths."""
    target = plan.run_dir / OLD_DIR
    target.mkdir(exist_ok=True)
    moved = []
    for src in plan.move:
        dst = target / src.name
        i = 1
        while dst.exists():  # never overwrite: a rerun after a partial tidy keeps both
            dst = target / f"{src.stem}.{i}{src.suffix}"
            i += 1
        shutil.move(str(src), str(dst))
        moved.append(dst)
    return moved


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders to search below")
    parser.add_argument("--apply", action="store_true", help="move files (default: dry run)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def command(args: argparse.Namespace) -> int:
    try:
        plans = [plan_run(d) for d in find_run_dirs(args.paths)]
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    total = sum(p.bytes_freed for p in plans)
    if args.apply:
        for plan in plans:
            apply_plan(plan)
    if args.json:
        print(json.dumps({"applied": args.apply, "bytes_freed": total, "freed": human_bytes(total),
                          "runs": [p.to_dict() for p in plans]}, indent=2))
        return 0
    verb = "moved" if args.apply else "would move"
    for plan in plans:
        print(f"{plan.run_dir}: keep {', '.join(p.name for p in plan.keep) or 'nothing'}; "
              f"{verb} {len(plan.move)} file(s) to {OLD_DIR}/ ({human_bytes(plan.bytes_freed)})")
    print(f"{len(plans)} run folder(s); {'freed' if args.apply else 'would free'} {human_bytes(total)}"
          + ("" if args.apply else " in the run folders (dry run; --apply to move)"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidy_runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return command(parser.parse_args(argv))
