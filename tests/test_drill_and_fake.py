"""Done when "Drill and fake": a fire drill and a fake-NVML run beside a real pass.

The drill and the fake run are real ``gpuprobe run``s (the README's fire drill, on the L40S
NVML fake); the real pass is the fake run's own document with the fake taken out, written
through the run record's writer, so all three are on one stack. The drill and the fake are
newer than the pass: counted, either would be "the latest evidence" and change the answer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gpuprobe.store.record import load_record
from gpuprobe.store.results import write_atomic
from gpuprobe_pwm import gate
from tests.conftest import run_gpuprobe

NVML_ONLY = ["run", "--only", "--stage", "nvml", "--no-fork-server"]


def _run(folder: Path, env: dict) -> Path:
    before = set(folder.glob("*.result.json"))
    run = run_gpuprobe(NVML_ONLY, folder, env=env, timeout=120)
    (new,) = set(folder.glob("*.result.json")) - before
    assert run.returncode in (0, 1), run.stderr
    return new


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("drill-and-fake")
    drill = _run(folder, {"GPUPROBE_FAKE_NVML": "l40s", "GPUPROBE_FAILPOINTS": "nvml.init=raise"})
    fake = _run(folder, {"GPUPROBE_FAKE_NVML": "l40s"})
    doc = json.loads(fake.read_text())
    doc["run_id"] = "20261101T120000Z-l40s-real-000001"
    doc["started_at"] = doc["stages"][0]["started_at"] = "2026-11-01T12:00:00.000000Z"
    doc["fingerprint"]["simulated"] = None
    doc["fingerprint"]["hostname"] = "l40s-real"
    doc["provenance"] = {"kind": "probed", "command": ["gpuprobe", "run"], "note": None}
    for stage in doc["stages"]:
        stage["provenance"] = "probed"
    doc["config"]["environment"] = {k: v for k, v in doc["config"]["environment"].items()
                                    if not k.startswith("GPUPROBE_")}
    real = write_atomic(folder / f"{doc['run_id']}.result.json", doc)
    return {"folder": folder, "drill": drill, "fake": fake, "real": real}


def _id(path: Path) -> str:
    return path.name.removesuffix(".result.json")


def test_the_runs_are_what_they_claim(folder):
    drill, fake, real = (load_record(folder[k]) for k in ("drill", "fake", "real"))
    assert [s.status for s in drill.stages] == ["fail"] and drill.provenance == "drill"
    assert [s.status for s in fake.stages] == ["pass"] and fake.provenance == "simulated"
    assert [s.status for s in real.stages] == ["pass"] and real.provenance == "probed"
    assert drill.started_at > real.started_at and fake.started_at > real.started_at
    # stored as what it is, not only read so: the writer resolves provenance too
    on_disk = json.loads(folder["drill"].read_text())
    assert on_disk["provenance"]["kind"] == "drill" and on_disk["stages"][0]["provenance"] == "drill"


def test_preflight_answers_from_the_real_run(folder):
    run = run_gpuprobe(["preflight", "--json", "--stage", "nvml", "--fingerprint", str(folder["real"])],
                       folder["folder"], timeout=30)
    verdict = json.loads(run.stdout)
    assert run.returncode == 0 and verdict["verdict"] == "ok", run.stderr
    (nvml,) = verdict["stages"]
    assert nvml["scope"] == "stack" and nvml["runs"] == 1 and nvml["counts"] == {"pass": 1}
    assert nvml["latest"][0]["run_id"] == _id(folder["real"])


def test_the_trainer_gate_is_not_refused_by_a_drill(folder, tmp_path, monkeypatch, caplog):
    only_drill = tmp_path / "only-drill"
    only_drill.mkdir()
    (only_drill / folder["drill"].name).write_bytes(folder["drill"].read_bytes())
    monkeypatch.setenv("GPUPROBE_RESULTS", str(only_drill))
    monkeypatch.setenv("GPUPROBE_PREFLIGHT_FINGERPRINT", str(folder["real"]))
    with caplog.at_level(logging.INFO, logger="gpuprobe_pwm.gate"):
        gate.preflight_gate({"preflight": "enforce"}, stages=["nvml"])   # a refusal would SystemExit(4)
    assert "preflight: no-evidence" in caplog.text


def test_default_matrix_hides_the_drill_and_the_fake(folder):
    run = run_gpuprobe(["matrix", "--json"], folder["folder"], timeout=30)
    m = json.loads(run.stdout)
    assert run.returncode == 0, run.stderr
    assert [r["id"] for r in m["rows"]] == [m["rows"][0]["id"]] and "provenance" not in m["columns"]
    assert m["rows"][0]["cells"]["nvml"]["counts"] == {"pass": 1}
    assert m["rows"][0]["cells"]["nvml"]["latest"][0]["run_id"] == _id(folder["real"])
    compare = run_gpuprobe(["matrix", "--json", "--by", "model"], folder["folder"], timeout=30)
    assert [r["id"] for r in json.loads(compare.stdout)["rows"]] == ["L40S"]


def test_provenance_all_shows_them_labelled_in_every_view(folder):
    m = json.loads(run_gpuprobe(["matrix", "--json", "--provenance", "all"], folder["folder"], timeout=30).stdout)
    assert "provenance" in m["columns"]
    by_label = {r["key"]["provenance"]: r["cells"]["nvml"] for r in m["rows"]}
    assert by_label.keys() == {"-", "drill", "simulated"}
    assert by_label["drill"]["counts"] == {"fail": 1} and by_label["drill"]["latest"][0]["run_id"] == _id(folder["drill"])
    assert by_label["simulated"]["counts"] == {"pass": 1} and by_label["-"]["counts"] == {"pass": 1}
    views = {fmt: run_gpuprobe(["matrix", "--provenance", "all", "--format", fmt], folder["folder"], timeout=30)
             for fmt in ("text", "markdown", "html", "prom")}
    assert all(v.returncode == 0 for v in views.values()), {f: v.stderr for f, v in views.items()}
    assert "(drill)" in views["text"].stdout or "provenance drill" in views["text"].stdout
    assert "provenance simulated" in views["text"].stdout or "(simulated)" in views["text"].stdout
    md_rows = [line for line in views["markdown"].stdout.splitlines() if line.startswith("| L40S")]
    assert sorted(line.split(" | ")[6] for line in md_rows) == ["-", "drill", "simulated"]
    assert "<th>provenance</th>" in views["html"].stdout
    assert '<td class="key">drill</td>' in views["html"].stdout
    assert '<td class="key">simulated</td>' in views["html"].stdout
    prom = views["prom"].stdout
    assert 'provenance="drill"' in prom and 'provenance="simulated"' in prom
    real_series = [line for line in prom.splitlines() if line.startswith("gpuprobe_stage_runs{") and "provenance" not in line]
    assert real_series and all('status="pass"' in line for line in real_series)
    # each exercise alone, asked for by name, is labelled too
    drills = json.loads(run_gpuprobe(["matrix", "--json", "--provenance", "drill"], folder["folder"], timeout=30).stdout)
    assert [r["key"]["provenance"] for r in drills["rows"]] == ["drill"]


def test_compare_leaves_the_fake_out_unless_asked(folder):
    run = run_gpuprobe(["matrix", "--json", "--compare", "L40S", "L40S"], folder["folder"], timeout=30)
    cmp = json.loads(run.stdout)
    assert cmp["cells"]["nvml"]["L40S"]["counts"] == {"pass": 1}


def test_a_simulated_node_counts_the_exercises_labelled(folder):
    # the drill's own fingerprint is a simulated node (NVML fake): there, exercises count, said so
    run = run_gpuprobe(["preflight", "--json", "--stage", "nvml", "--fingerprint", str(folder["drill"])],
                       folder["folder"], timeout=30)
    verdict = json.loads(run.stdout)
    (nvml,) = verdict["stages"]
    assert verdict["node"]["simulated"] == "l40s" and nvml["runs"] == 3, run.stdout + run.stderr
    assert nvml["counts"] == {"pass": 2, "fail": 1}
    kinds = {entry["run_id"]: entry["provenance"] for entry in nvml["latest"]}
    assert kinds == {_id(folder["drill"]): "drill", _id(folder["fake"]): "simulated", _id(folder["real"]): "probed"}
    # the newest is the fake run's pass: its summary says it is a simulation
    assert nvml["latest"][0]["run_id"] == _id(folder["fake"]) and verdict["verdict"] == "ok"
    assert f"(run {_id(folder['fake'])}, simulated)" in nvml["summary"]
