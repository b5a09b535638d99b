"""The run record: its loader refuses every kind of hostile file in one line, without blocking;
its writer never writes what the loader would refuse; provenance is resolved in one place."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gpuprobe.store import provenance as prov
from gpuprobe.store.record import MAX_DEPTH, RecordError, dump_record, load_record
from gpuprobe.store.results import read_result, write_atomic
from tests.hostile import good_doc, hostile_files
from tests.result_factory import make_result


def test_every_hostile_kind_is_refused_in_one_line_naming_file_and_reason(tmp_path):
    made = hostile_files(tmp_path / "bad", good_doc(tmp_path))
    assert len(made) >= 40
    for name, words in made.items():
        path = tmp_path / "bad" / name
        with pytest.raises(RecordError) as caught:
            load_record(path)
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        assert words.lower() in caught.value.reason.lower(), (name, message)
    with pytest.raises(RecordError) as caught:
        load_record(tmp_path / "bad" / "newer.result.json")
    assert caught.value.newer and "schema 7" in str(caught.value)


def test_a_good_file_loads_typed(tmp_path):
    path = make_result(tmp_path, "h200", "h200-n1", {"nvml": "pass", "buffer": "hang"})
    rec = load_record(path)
    assert rec.run_id and rec.hostname == "h200-n1" and rec.provenance == "probed" and not rec.exercise
    assert [(s.stage, s.status, s.provenance) for s in rec.stages] == [("nvml", "pass", "probed"),
                                                                       ("buffer", "hang", "probed")]
    assert rec.stages[1].marks[1].data == {"bytes": 1 << 30} and rec.stages[1].evidence["process"]
    assert read_result(path) == rec.doc == rec.to_dict()


def test_depth_limit_is_exact(tmp_path):
    def nested(levels: int) -> str:   # the document is level 1, "x" adds ``levels`` lists
        return '{"schema": 1, "stages": [], "x": ' + "[" * levels + "]" * levels + "}"

    ok, bad = tmp_path / "ok.result.json", tmp_path / "bad.result.json"
    ok.write_text(nested(MAX_DEPTH - 1))
    bad.write_text(nested(MAX_DEPTH))
    assert load_record(ok).stages == []
    with pytest.raises(RecordError, match="nested too deeply"):
        load_record(bad)


@pytest.mark.parametrize("env, fp_sim, claimed, stage_claim, want_run, want_stage", [
    ({}, None, "probed", "probed", "probed", "probed"),
    ({"GPUPROBE_FAILPOINTS": "buffer.first_sample=hang"}, None, "probed", "probed", "drill", "drill"),
    ({}, "h200", "probed", "probed", "simulated", "simulated"),
    ({"GPUPROBE_FAILPOINTS": "cuda.context=raise"}, "h200", "simulated", "probed", "drill", "drill"),
    ({}, None, "probed", "simulated", "probed", "simulated"),          # an emulated GPU in one stage
    ({}, None, "reported", "reported", "reported", "reported"),
    ({}, None, "drill", "probed", "drill", "drill"),                    # stamped by the runner
    ({}, None, None, None, "probed", "probed"),                         # before provenance was recorded
])
def test_provenance_is_resolved_from_what_the_file_shows(tmp_path, env, fp_sim, claimed, stage_claim,
                                                         want_run, want_stage):
    doc = good_doc(tmp_path)
    doc["config"] = {"environment": env}
    doc["fingerprint"]["simulated"] = fp_sim
    if claimed is None:
        del doc["provenance"]
    else:
        doc["provenance"]["kind"] = claimed
    for st in doc["stages"]:
        st["provenance"] = stage_claim
    path = tmp_path / "r.result.json"
    path.write_text(json.dumps(doc))
    rec = load_record(path)
    assert rec.provenance == want_run and {s.provenance for s in rec.stages} == {want_stage}
    assert rec.doc.get("provenance", {}).get("kind", "probed") == want_run
    assert {s.get("provenance") or "probed" for s in rec.doc["stages"]} == {want_stage}
    assert prov.resolve(claimed, stage_claim, failpoints=bool(env), simulated=bool(fp_sim)) == want_stage


def test_writer_keeps_evidence_but_never_writes_what_readers_refuse(tmp_path):
    doc = good_doc(tmp_path)
    doc["stages"][1]["data"] = {"loss": math.nan, "grad": math.inf, "low": -math.inf, "count": 10 ** 30,
                                "fine": [1.5, -(1 << 63)], "path": Path("/x")}
    path = write_atomic(tmp_path / "w.result.json", doc)
    rec = load_record(path)
    assert rec.stages[1].data == {"loss": "NaN", "grad": "Infinity", "low": "-Infinity", "count": str(10 ** 30),
                                  "fine": [1.5, -(1 << 63)], "path": "/x"}
    assert "NaN" not in path.read_text().replace('"NaN"', "")   # valid JSON, not Python's NaN


@pytest.mark.parametrize("field, value, words", [
    ("duration_s", math.nan, "duration_s"), ("gpu", 99999999999999999999, "stages[0].gpu"),
    ("duration_s", math.inf, "duration_s"), ("status", "great", "unknown status"),
])
def test_writer_refuses_a_bad_typed_field_and_writes_nothing(tmp_path, field, value, words):
    doc = good_doc(tmp_path)
    doc["stages"][0][field] = value
    target = tmp_path / "out" / "w.result.json"
    target.parent.mkdir()
    with pytest.raises(RecordError, match=words.replace("[", "\\[").replace("]", "\\]")):
        write_atomic(target, doc)
    assert list(target.parent.iterdir()) == []
    with pytest.raises(RecordError):
        dump_record(doc)


def test_shipped_field_reports_stay_readable_evidence(tmp_path):
    import shutil

    from gpuprobe import paths

    shipped = paths.shipped_reports()
    assert shipped is not None
    copy = shutil.copytree(shipped, tmp_path / "reports")   # read a copy: the suite leaves reports/ alone
    records = [load_record(p) for p in sorted(copy.glob("*.result.json"))]
    assert len(records) >= 4
    assert {r.provenance for r in records} == {"reported"} and not any(r.exercise for r in records)


@pytest.mark.parametrize("scenario", ["h200", "l40s", "lost", "nolib"])
def test_every_nvml_scenario_fingerprint_is_a_valid_record(tmp_path, scenario):
    from gpuprobe.node import fingerprint as fpr
    from gpuprobe.node.nvml import Nvml

    nv = Nvml(scenario=scenario)
    nv.init()
    doc = good_doc(tmp_path)
    doc["fingerprint"] = fpr.take(nv).to_dict()
    rec = load_record(write_atomic(tmp_path / "r.result.json", doc))
    assert rec.fingerprint == doc["fingerprint"] and rec.provenance == "simulated"
