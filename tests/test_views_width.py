"""Every view reads at 80 columns: no line longer, no word broken; and uses the width at 120+.

The check for broken words: the words a view prints at 80 columns are words it prints when
it has all the room it wants (COLUMNS=400). A word folded over two lines ("GPU mode l",
"driv er", "pas s") shows up as pieces the wide view never prints. A path too long for any
line is shown by its end after an ellipsis; such a piece must be the end of a wide word.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIELD = ROOT / "tests" / "fixtures" / "field"
L40S_FP = ROOT / "tests" / "fixtures" / "l40s-node.fingerprint.json"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX = "│┃|─━┏┓┗┛┡┩└┘┌┐├┤┬┴┼╇╈╸╹╺╻╭╮╰╯"


def gpuprobe(args: list[str], columns: int, env: dict | None = None, tty: bool = False) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_") and k not in ("COLUMNS", "LINES")}
    full.update({"COLUMNS": str(columns), "PYTHONPATH": str(ROOT), **(env or {})})
    if tty:
        full["TTY_COMPATIBLE"] = "1"    # rich treats stdout as a terminal, as it is for a person
    return subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True, env=full,
                          cwd=ROOT, timeout=180)


def words(text: str) -> set[str]:
    return {w.strip(BOX).strip(",;:()[]'\"").strip(BOX) for w in ANSI.sub("", text).split()} - {""}


def assert_fits(narrow: str, wide: str, columns: int = 80) -> None:
    text = ANSI.sub("", narrow)
    long = [ln for ln in text.splitlines() if len(ln) > columns]
    assert not long, f"{len(long)} lines over {columns} columns:\n" + "\n".join(long)
    wide_words = words(wide)
    broken = [w for w in words(narrow) - wide_words
              if not (w.startswith("\u2026") and any(x.endswith(w[1:]) for x in wide_words))]
    assert not broken, f"words not in the wide view (broken?): {broken}\n{text}"


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("views") / "field"
    shutil.copytree(FIELD, dest)
    return dest


VIEWS = {
    "matrix": ["matrix"],
    "matrix --by node": ["matrix", "--by", "node"],
    "matrix --compare": ["matrix", "--compare", "L40S", "H200"],
    "preflight": ["preflight", "--fingerprint", str(L40S_FP)],
    "signatures": ["signatures"],
    "info": ["info"],
    "show latest": ["show", "latest"],
}


@pytest.mark.parametrize("tty", [False, True], ids=["piped", "terminal"])
@pytest.mark.parametrize("view", list(VIEWS))
def test_views_fit_80_columns_without_breaking_words(field, view, tty):
    args = VIEWS[view] + (["--results", str(field)] if view not in ("signatures", "info") else [])
    env = {"GPUPROBE_FAKE_NVML": "l40s"}
    narrow, wide = gpuprobe(args, 80, env, tty), gpuprobe(args, 400, env, tty)
    assert narrow.returncode == wide.returncode and narrow.returncode in (0, 4), narrow.stderr
    assert_fits(narrow.stdout, wide.stdout)


def test_piped_output_has_no_table_art(field):
    for args in (["matrix"], ["matrix", "--compare", "L40S", "H200"], ["show", "latest"]):
        out = gpuprobe(args + ["--results", str(field)], 200).stdout
        assert not set(BOX) & set(out.replace("|", "")), out


def test_a_wide_terminal_gets_the_table(field):
    out = ANSI.sub("", gpuprobe(["matrix", "--results", str(field)], 200, tty=True).stdout)
    assert "┃" in out or "│" in out
    assert max(len(ln) for ln in out.splitlines()) > 120       # it uses the width it has


def test_run_and_show_of_a_hang_fit_80_columns(tmp_path):
    """A real run with a hang (stacks, a process snapshot, the next step) and its `show`."""
    results = tmp_path / "r"
    args = ["run", "--device", "cpu", "--stage", "alloc", "--timeout", "4", "--results", str(results)]
    env = {"GPUPROBE_FAILPOINTS": "alloc.alloc@64MiB=hang"}
    run = gpuprobe(args, 80, env)
    assert run.returncode == 3, run.stderr
    assert "next step:" in run.stdout and "stacks (" in run.stdout
    wide = gpuprobe(["show", "latest", "--results", str(results)], 400)
    assert_fits(run.stdout, wide.stdout)
    assert_fits(run.stderr, run.stderr + wide.stdout)       # the live lines: plain, one per stage
    assert_fits(gpuprobe(["show", "latest", "--results", str(results)], 80).stdout, wide.stdout)
    terminal = gpuprobe(["show", "latest", "--results", str(results)], 80, tty=True).stdout
    assert_fits(terminal, gpuprobe(["show", "latest", "--results", str(results)], 400, tty=True).stdout)


def test_long_hints_go_below_the_table_once(tmp_path):
    """The dflex install hint (or NVML's 'not found') fills no table cell: a note below, once."""
    results = tmp_path / "r"
    run = gpuprobe(["run", "--device", "cpu", "--stage", "sim", "--set", "alloc.cpu_max_mib=64",
                    "--set", "sim.bundled_steps=2", "--set", "sim.bundled_num_envs=2", "--results", str(results)], 200)
    assert run.returncode == 0, run.stderr
    out = ANSI.sub("", gpuprobe(["show", "latest", "--results", str(results)], 200, tty=True).stdout)
    assert "│" in out or "┃" in out                           # a table at 200 columns
    sim_reason = next(ln for ln in out.splitlines() if ln.startswith("note ") and "dflex" in ln)
    assert out.count(sim_reason) == 1
    table_rows = [ln for ln in out.splitlines() if ln.startswith("│") or ln.startswith("┃")]
    assert all(len(ln) <= 200 for ln in table_rows) and len(table_rows) <= 8   # one row per stage, no 15-row cells


def test_a_failed_sim_does_not_skip_buffer(tmp_path):
    """Requirements, not order: sim fails (a failpoint raising at its first mark), buffer still runs."""
    results = tmp_path / "r"
    run = gpuprobe(["run", "--device", "cpu", "--stage", "buffer", "--set", "alloc.cpu_max_mib=64",
                    "--set", "buffer.capacities=[]", "--set", "buffer.capacity=2000", "--set", "buffer.samples=3",
                    "--results", str(results), "--json"], 200, {"GPUPROBE_FAILPOINTS": "sim.*=raise"})
    import json

    stages = {s["stage"]: s for s in json.loads(run.stdout)["stages"]}
    assert stages["sim"]["status"] == "fail" and run.returncode == 1
    assert stages["buffer"]["status"] == "pass", stages["buffer"].get("reason")
