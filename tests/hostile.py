"""Hostile result files: every kind a reader of a shared results folder must survive."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpuprobe.store.record import MAX_BYTES
from tests.result_factory import make_result


def good_doc(tmp_path: Path) -> dict:
    return json.loads(make_result(tmp_path / "src", "l40s", "l40s-n1", {"nvml": "pass", "buffer": "hang"}).read_text())


def hostile_files(folder: Path, good: dict) -> dict[str, str]:
    """Every kind of file a reader must survive, named ``*.result.json``; name -> words of its reason."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(good)
    made: dict[str, str] = {}

    def put(name: str, data: bytes | str, words: str) -> None:
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        made[name] = words

    def with_stage(name: str, words: str, **changes: object) -> None:
        doc = json.loads(text)
        doc["stages"][0].update(changes)
        put(name, json.dumps(doc), words)

    put("empty.result.json", "", "not valid JSON")
    put("truncated.result.json", text[: len(text) // 2], "not valid JSON")
    put("truncated-tail.result.json", text[:-1], "not valid JSON")
    put("garbage.result.json", b"\x00\x01binary\xff", "not UTF-8")
    put("latin1.result.json", text.replace("l40s-n1", "l40s-n\u00e9").encode("latin-1"), "not UTF-8")
    put("surrogate.result.json", text.replace('"l40s-n1"', '"\\ud800x"', 1), "lone surrogate")
    put("surrogate-key.result.json", text.replace('"hostname"', '"\\udfffhost"', 1), "lone surrogate")
    put("nan.result.json", text.replace('"duration_s": 1.5', '"duration_s": NaN', 1), "NaN")
    put("infinity.result.json", text.replace('"duration_s": 1.5', '"duration_s": -Infinity', 1), "Infinity")
    put("overflow-float.result.json", text.replace('"duration_s": 1.5', '"duration_s": 1e400', 1), "infinity")
    put("huge-int.result.json", text.replace('"gpu": 0', '"gpu": 99999999999999999999', 1), "64-bit")
    put("huge-int-payload.result.json",
        text.replace('"bytes": 1073741824', '"bytes": -9223372036854775809', 1), "64-bit")
    put("enormous-int.result.json", text.replace('"gpu": 0', '"gpu": ' + "9" * 5000, 1), "not usable JSON")
    put("deep.result.json", '{"schema": 1, "stages": [], "x": ' + "[" * 200_000 + "]" * 200_000 + "}",
        "nested too deeply")
    put("deep-under-recursion.result.json", '{"schema": 1, "stages": [], "x": ' + "[" * 500 + "]" * 500 + "}",
        "nested too deeply")
    put("list.result.json", "[]", "not a gpuprobe result")
    put("alien.result.json", '{"hello": "world"}', "schema")
    put("schema-text.result.json", text.replace('"schema": 1', '"schema": "1"', 1), "schema")
    put("newer.result.json", text.replace('"schema": 1', '"schema": 7', 1), "schema 7 is newer")
    doc = json.loads(text)
    doc["stages"] = {"a": doc["stages"]}
    put("stages-object.result.json", json.dumps(doc), "stages: expected a list")
    with_stage("stage-dict-name.result.json", "stages[0].stage", stage={"x": 1})
    with_stage("status-dict.result.json", "stages[0].status", status={"a": "pass"})
    with_stage("status-unknown.result.json", "unknown status", status="great")
    with_stage("reason-dict.result.json", "stages[0].reason: expected text", reason={"a": "b"})
    with_stage("gpu-text.result.json", "stages[0].gpu: expected an integer", gpu="0")
    with_stage("gpu-bool.result.json", "stages[0].gpu: expected an integer", gpu=True)
    with_stage("duration-text.result.json", "stages[0].duration_s", duration_s="fast")
    with_stage("marks-text.result.json", "stages[0].marks", marks="many")
    with_stage("mark-shape.result.json", "stages[0].marks[0]", marks=[{"name": 3, "t": 0}])
    with_stage("signature-shape.result.json", "signatures[0]", signatures=[{"id": ["x"]}])
    with_stage("evidence-list.result.json", "stages[0].evidence", evidence=["x"])
    doc = json.loads(text)
    doc["fingerprint"]["hostname"] = {"$ne": 1}
    put("hostname-dict.result.json", json.dumps(doc), "fingerprint.hostname")
    doc = json.loads(text)
    doc["fingerprint"]["gpus"] = "H200"
    put("gpus-text.result.json", json.dumps(doc), "fingerprint.gpus")
    with open(folder / "oversized.result.json", "wb") as fh:   # sparse: big to stat, no disk
        fh.truncate(MAX_BYTES + 1)
    made["oversized.result.json"] = "too large"
    os.mkfifo(folder / "fifo.result.json")
    made["fifo.result.json"] = "FIFO"
    (folder / "dir.result.json").mkdir()
    made["dir.result.json"] = "directory"
    os.symlink("/dev/zero", folder / "device.result.json")
    made["device.result.json"] = "character device"
    os.symlink("loop-b.result.json", folder / "loop-a.result.json")
    os.symlink("loop-a.result.json", folder / "loop-b.result.json")
    made["loop-a.result.json"] = made["loop-b.result.json"] = "symlink loop"
    os.symlink("self.result.json", folder / "self.result.json")
    made["self.result.json"] = "symlink loop"
    os.symlink(folder / "no-such-target", folder / "dangling.result.json")
    made["dangling.result.json"] = "cannot read"
    return made
