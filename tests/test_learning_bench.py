"""Smoke test of the learning benchmark's parsing (no learning assertions: those are runs of an
hour and more, recorded in BENCHMARKS.md). The upstream log is real output of upstream's code
(tests/fixtures/upstream_pwm_log/README.md says how it was made)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "upstream_pwm_log"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_upstream_log_parses_epoch_lines_between_progress_lines():
    bench = _load("learning_hopper")
    records = bench.parse_upstream_log((FIXTURE / "stdout.log").read_text(errors="replace"))
    # alg.max_epochs=4: upstream's first pass only collects (the buffer has no episode yet) and prints nothing
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert [r["env_steps"] for r in records] == [128, 192, 256]
    assert records[0]["train_return"] == 15.77 and records[2]["train_return"] == 12.35
    assert all(r["max_epochs"] == 4 for r in records)


def test_upstream_summary_joins_the_shim_timers(tmp_path):
    bench = _load("learning_hopper")
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    curves = bench.upstream_curves(run)
    walls = [r["wall_s"] for r in curves["records"]]
    assert None not in walls and walls == sorted(walls)
    assert curves["first_epoch_start_s"] < walls[0]
    # the world-model warm-up before the first epoch: env.episode_length=16 iterations
    assert curves["warmup_iterations"] == [16, 16]
    args = type("A", (), {"impl": "upstream-code", "env": "dflex_hopper", "seed": 0, "env_steps": 200,
                          "wall_s": None})()
    s = bench.summarise(args, run)
    # the budget is read at the first epoch that reaches it
    assert s["reached_budget"] and s["env_steps_reached"] == 256 and s["epochs"] == 3
    assert s["median_epoch_s_after_first"] > 0


def test_a_wall_clock_budget_is_read_at_the_first_epoch_that_ends_past_it(tmp_path):
    bench = _load("learning_hopper")
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    walls = [r["wall_s"] for r in bench.upstream_curves(run)["records"]]
    # a budget between the first and second epoch's end: the second epoch is the reading
    args = type("A", (), {"impl": "upstream-code", "env": "dflex_ant", "seed": 0, "env_steps": None,
                          "wall_s": (walls[0] + walls[1]) / 2})()
    s = bench.summarise(args, run)
    assert s["reached_budget"] and s["epochs"] == 2 and s["env_steps_reached"] == 192
    assert s["wall_s_reached"] == walls[1] and s["wall_s_budget"] == args.wall_s
    # a budget past the last epoch: the run was cut short, and says so
    args.wall_s = walls[-1] + 1
    s = bench.summarise(args, run)
    assert not s["reached_budget"] and s["epochs"] == 3


def test_side_by_side_reads_the_paper_curves():
    fig = _load("learning_side_by_side")
    steps, values = fig.read_reference(ROOT / "benchmarks" / "reference" / "pwm_hopper.csv")
    assert len(values[0]) == 5 and steps[0] == 25600.0
    # the paper's median at 358,400 env steps, as quoted in the issue
    i = steps.index(358400.0)
    assert round(sorted(values[i])[2], 1) == 2677.3
    ant_steps, ant_values = fig.read_reference(ROOT / "benchmarks" / "reference" / "pwm_ant.csv")
    assert all(len(v) == 5 for v in ant_values) and ant_steps == sorted(ant_steps)


def test_side_by_side_claims_use_only_runs_that_reached_the_budget():
    fig = _load("learning_side_by_side")

    def run(impl, seed, ret, reached=True):
        return {"env": "dflex_hopper", "impl": impl, "seed": seed, "train_return_last": ret,
                "reached_budget": reached}

    lines = fig.claims([run("upstream-code", 42, 10.0), run("upstream-code", 43, 30.0),
                        run("upstream-variant", 42, 25.0), run("upstream-variant", 43, 45.0),
                        run("bundled", 42, 70.0), run("bundled", 43, 90.0),
                        run("bundled", 44, 1.0, reached=False)])  # cut short: left out of the median
    text = "\n".join(lines)
    assert "median 20.0, spread [10.0, 30.0] over 2 seed(s)" in text
    assert "alg=pwm median 35.0 over 2 seed(s): outside" in text
    assert "bundled median 80.0 over 2 seed(s) = 4.00x upstream's code's median: holds" in text
    lines = fig.claims([run("upstream-code", 42, 40.0), run("bundled", 42, 100.0)])
    assert "= 2.50x upstream's code's median: does not hold" in "\n".join(lines)
    assert "no run of upstream's own code" in "\n".join(fig.claims([run("bundled", 42, 5.0)]))


def test_ablation_share_is_the_part_of_the_lead_lost_on_the_shared_seeds(tmp_path):
    abl = _load("learning_ablation")

    def run(impl, seed, ret, tag=None, reached=True):
        return {"env": "dflex_hopper", "impl": impl, "seed": seed, "train_return_last": ret,
                "reached_budget": reached, "curve": {"env_steps": [0, 350_000], "train_return": [0.0, ret]},
                **({"tag": tag, "overrides": [f"alg.x={tag}"]} if tag else {})}

    runs = [run("upstream-code", 42, 10.0), run("upstream-code", 43, 30.0),   # median 20
            run("bundled", 42, 100.0), run("bundled", 43, 60.0),
            run("bundled", 42, 60.0, tag="a"),                                  # half of s42's lead of 80
            run("bundled", 42, 120.0, tag="b"), run("bundled", 43, 5.0, tag="b", reached=False),
            run("bundled", 44, 50.0, tag="c")]                                  # no bundled run on s44
    rows = {r["tag"]: r for r in abl.ablation_rows(runs, "dflex_hopper")}
    assert rows["a"]["seeds"] == [42] and rows["a"]["share"] == 0.5
    assert rows["b"]["share"] == -0.25            # better without it; the cut-short s43 is left out
    assert rows["c"]["seeds"] == [] and rows["c"]["share"] is None
    assert abl.share(20.0, 10.0, 30.0) is None    # no lead to share
    text = "\n".join(abl.table(runs, "dflex_hopper"))
    assert "| a | `alg.x=a` | s42: 60.0 | s42: 100.0 | 0.50 over 1 seed(s) |" in text
    abl.figure(runs, "dflex_hopper", tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").stat().st_size > 0


def test_a_tagged_run_gets_its_own_summary_and_records_its_overrides(tmp_path, monkeypatch):
    bench = _load("learning_hopper")
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sys, "argv", ["learning_hopper.py", "--impl", "upstream-code", "--seed", "7",
                                      "--env-steps", "200", "--run-dir", str(run), "--parse-only",
                                      "--tag", "x1", "alg.foo=1"])
    assert bench.main() == 0
    (out,) = (tmp_path / "results").iterdir()
    assert out.name == "upstream-code-x1_dflex_hopper_s7.json"
    summary = json.loads(out.read_text())
    assert summary["tag"] == "x1" and summary["overrides"] == ["alg.foo=1"]


def test_pretrained_runs_are_compared_with_scratch_and_kept_out_of_the_ablation(tmp_path):
    pre = _load("learning_pretrain")
    abl = _load("learning_ablation")

    def run(seed, ret, tag=None, overrides=(), reached=True, pretrain=None):
        return {"env": "dflex_hopper", "impl": "bundled", "seed": seed, "train_return_last": ret,
                "reached_budget": reached, "curve": {"env_steps": [0, 350_000], "train_return": [0.0, ret]},
                **({"tag": tag, "overrides": list(overrides)} if tag else {}),
                **({"pretrain": pretrain} if pretrain else {})}

    info = {"files": ["/r/bundled_5M_dflex_hopper_seed43_x/latest_checkpoint.pt"], "rows": 1010,
            "episodes": 10, "steps": 1000, "seconds": 512.3}
    runs = [run(42, 80.0), run(43, 100.0),
            run(42, 120.0, "pretrained", ["general.pretrain=/r/x.pt", "general.pretrain_steps=1000"], pretrain=info),
            run(42, 50.0, "no-target-critic", ["alg.bundled.target_critic_alpha=0"])]
    (row,) = pre.table(runs, "dflex_hopper")[2:]
    assert row == ("| 42 | bundled_5M_dflex_hopper_seed43_x/latest_checkpoint.pt (1,000, 10) | 1000 | 512.3 | "
                   "120.0 | 80.0 | 1.50x |")
    assert [r["tag"] for r in abl.ablation_rows([s for s in runs if not abl.is_pretrained(s)], "dflex_hopper")] \
        == ["no-target-critic"]
    pre.figure(runs, "dflex_hopper", tmp_path / "pretrain.png")
    assert (tmp_path / "pretrain.png").stat().st_size > 0


STOPPED_RUN = """
import importlib.util, sys, types
from pathlib import Path
spec = importlib.util.spec_from_file_location("learning_hopper", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
run_dir, pid_file = Path(sys.argv[2]), sys.argv[3]
# the run is a child that only sleeps; it records the SIGTERM it gets, and writes its pid once ready
child = ("import os, signal, sys, time\\n"
         "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').write('sigterm'), sys.exit(143)))\\n"
         f"open({pid_file!r}, 'w').write(str(os.getpid()))\\n"
         "time.sleep(120)\\n")
bench.command_for = lambda args, run_dir: ([sys.executable, "-c", child, str(run_dir / "child-got")], {}, run_dir)
bench.progress = lambda impl, run_dir: (0, 0.0)
args = types.SimpleNamespace(impl="bundled", env="dflex_hopper", seed=0, env_steps=350_000, wall_s=None,
                             tree=Path.cwd(), nice=0)
bench.stop_on_sigterm()
bench.launch(args, run_dir)
"""


def test_a_sigterm_to_the_benchmark_stops_its_run_too(tmp_path):
    """Killed by a scheduler, learning_hopper.py passes the SIGTERM on (the trainer then saves its
    checkpoint) and records the end, instead of leaving the run behind, orphaned."""
    run_dir, pid_file = tmp_path / "run", tmp_path / "child.pid"
    wrapper = subprocess.Popen([sys.executable, "-c", STOPPED_RUN, str(ROOT / "benchmarks" / "learning_hopper.py"),
                                str(run_dir), str(pid_file)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)  # the file can exist a moment before its pid is in it
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=60) == 0
    child = int(pid_file.read_text())
    assert (run_dir / "child-got").read_text() == "sigterm"
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left behind
        os.kill(child, 0)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["exit_code"] == 143 and meta["stopped_at_budget_env_steps"] is None and meta["ended"]
