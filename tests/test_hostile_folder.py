"""Done when "Hostile folder": one good run beside dozens of hostile files of every kind.

``matrix``, ``preflight`` and ``report`` answer from the good run within 10 s (the subprocess
timeout is the bound: a FIFO that blocked an open would hang past it), count it once, and
list every bad file as skipped: under "skipped" in --json, one warning line each on stderr.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_gpuprobe
from tests.hostile import hostile_files
from tests.result_factory import make_result

BOUND_S = 10


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path, set[str]]:
    folder = tmp_path / "results"
    good = make_result(folder, "l40s", "l40s-n1", {"nvml": "pass", "buffer": "hang"})
    made = hostile_files(folder, json.loads(good.read_text()))
    # every bad file is newer than the good run: "latest" must walk past each of them
    newer = good.stat().st_mtime + 60
    for name in made:
        os.utime(folder / name, (newer, newer), follow_symlinks=False)
    return folder, good, set(made)


def _warned(stderr: str, folder: Path) -> set[str]:
    """The files named by "warning: skipped <file>: <reason>" lines, one per line."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith(f"warning: skipped {folder}/"):
            names.add(line[len(f"warning: skipped {folder}/"):].split(": ", 1)[0])
    return names


def test_matrix_answers_from_the_good_run_and_lists_every_bad_file(hostile):
    folder, good, bad = hostile
    assert len(bad) >= 40
    run = run_gpuprobe(["matrix", "--json"], folder, timeout=BOUND_S)
    assert run.returncode == 0, run.stderr
    m = json.loads(run.stdout)
    assert len(m["rows"]) == 1
    cells = m["rows"][0]["cells"]
    assert (cells["nvml"]["counts"], cells["buffer"]["counts"]) == ({"pass": 1}, {"hang": 1})
    assert m["sources"][0]["files"] == len(bad) + 1
    assert sorted(Path(s["file"]).name for s in m["skipped"]) == sorted(bad)
    assert all(s["reason"] and "\n" not in s["reason"] for s in m["skipped"])
    assert _warned(run.stderr, folder) == bad
    # the text view answers too, and names the skipped files on stderr
    text = run_gpuprobe(["matrix"], folder, timeout=BOUND_S)
    assert text.returncode == 0 and "hang 1/1" in text.stdout and _warned(text.stderr, folder) == bad


def test_preflight_answers_from_the_good_run_and_lists_every_bad_file(hostile):
    folder, good, bad = hostile
    run = run_gpuprobe(["preflight", "--json", "--stage", "nvml,buffer", "--fingerprint", str(good)], folder,
                       timeout=BOUND_S)
    verdict = json.loads(run.stdout)
    assert run.returncode == 4 and verdict["verdict"] == "known-incompatible", run.stderr
    buffer = next(s for s in verdict["stages"] if s["stage"] == "buffer")
    assert buffer["runs"] == 1 and buffer["latest"][0]["run_id"] == good.name.removesuffix(".result.json")
    assert sorted(Path(s["file"]).name for s in verdict["skipped"]) == sorted(bad)
    assert _warned(run.stderr, folder) == bad


def test_report_latest_is_the_good_run_past_every_bad_file(hostile):
    folder, good, bad = hostile
    run = run_gpuprobe(["report", "latest"], folder, timeout=BOUND_S)
    assert run.returncode == 0, run.stderr
    assert good.name.removesuffix(".result.json") in run.stdout and "l40s-n1" in run.stdout
    assert _warned(run.stderr, folder) == bad
    shown = run_gpuprobe(["show", "latest", "--json"], folder, timeout=BOUND_S)
    doc = json.loads(shown.stdout)
    assert doc["run_id"] == good.name.removesuffix(".result.json")
    assert sorted(Path(s["file"]).name for s in doc["skipped"]) == sorted(bad)


def test_a_bad_file_asked_for_by_name_is_one_line_exit_2(hostile):
    folder, _good, _bad = hostile
    for name in ("fifo.result.json", "huge-int.result.json", "loop-a.result.json", "newer.result.json"):
        run = run_gpuprobe(["show", str(folder / name)], folder, timeout=BOUND_S)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, (name, run.stderr)
        assert name in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("command", [["preflight"], ["matrix"], ["show", "latest"], ["report", "latest"]])
def test_a_missing_results_folder_is_named_not_no_evidence(tmp_path, command):
    missing = tmp_path / "nonexistent"
    run = run_gpuprobe([*command], missing, env={"GPUPROBE_FAKE_NVML": "l40s"}, timeout=BOUND_S)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and lines == [f"Error: results folder {missing} (from --results) does not exist"], \
        run.stdout + run.stderr
    env_run = run_gpuprobe(["preflight"], None, env={"GPUPROBE_RESULTS": str(missing)}, timeout=BOUND_S)
    assert env_run.returncode == 2 and "from $GPUPROBE_RESULTS" in env_run.stderr and str(missing) in env_run.stderr
