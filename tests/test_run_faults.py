"""A results folder that fails mid-run (deleted, or its disk full): the verdict is printed in
full, the result goes to a fallback folder named in one line, and the exit code stays the
stage's. The fault is injected at a fixed point of the run (no race with a timer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs the real CLI with the fault injected: "removed" deletes the results folder just before
# the stage starts (after the run's first save there); "full" makes every write into the
# results folder fail with ENOSPC, as a full disk does.
WRAPPER = """
import errno, shutil, sys
from pathlib import Path
from gpuprobe import atomic
from gpuprobe.run import runner

folder, mode = Path(sys.argv[1]).resolve(), sys.argv[2]
if mode == "removed":
    launch = runner.Runner._launch
    def removing_launch(self, *args, **kwargs):
        shutil.rmtree(folder)
        return launch(self, *args, **kwargs)
    runner.Runner._launch = removing_launch
else:
    write = atomic.write_atomic
    def full_disk(path, text):
        if Path(path).resolve().parent == folder:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, text)
    atomic.write_atomic = full_disk
from gpuprobe.cli.main import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize("mode, why", [("removed", "No such file or directory"), ("full", "No space left on device")])
def test_verdict_survives_a_failing_results_folder(tmp_path, mode, why):
    results, fallback = tmp_path / "results", tmp_path / "fallback"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_")}
    # a failpoint fails the nvml stage: exit 1, which the fault must not change
    env.update(PYTHONPATH=str(ROOT), GPUPROBE_FAILPOINTS="nvml.init=raise", GPUPROBE_FALLBACK_DIR=str(fallback))
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(results), mode, "run", "--only", "--stage", "nvml",
                           "--results", str(results)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nvml" in proc.stdout and "fail" in proc.stdout and "FailpointError" in proc.stdout   # the verdict, printed
    saved = list(fallback.glob("*.result.json"))
    assert len(saved) == 1
    notes = [line for line in proc.stderr.splitlines() if "written to" in line]
    assert len(notes) == 1 and why in notes[0] and str(saved[0]) in notes[0], proc.stderr
    doc = json.loads(saved[0].read_text())
    assert doc["complete"] and [s["status"] for s in doc["stages"]] == ["fail"]
    assert not list(results.glob(".*.tmp")) if results.exists() else True   # no temporary file left behind


def test_writer_falls_back_in_order_and_says_so_when_nothing_takes_it(tmp_path, monkeypatch):
    from gpuprobe.run import fallback
    from gpuprobe.store.results import SCHEMA_VERSION

    doc = {"schema": SCHEMA_VERSION, "run_id": "r1", "stages": []}   # the writer checks a result as readers will
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where a folder should be")
    second = tmp_path / "second"
    monkeypatch.setattr(fallback, "folders", lambda: [blocked / "sub", second])
    writer = fallback.ResultWriter(tmp_path / "gone" / "r1.result.json")
    assert writer.message() is None
    assert writer.write(doc) == second / "r1.result.json"    # the first fallback cannot take it
    assert writer.path == second / "r1.result.json" and "gone" in writer.message()
    monkeypatch.setattr(fallback, "folders", lambda: [blocked / "sub"])
    nowhere = fallback.ResultWriter(tmp_path / "gone" / "r2.result.json")
    assert nowhere.write(doc) is None
    assert "no fallback folder took the result" in nowhere.message()
