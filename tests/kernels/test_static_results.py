"""Static results in the store: ``gpuprobe kernels --save`` is a stage of its own that the matrix shows."""

from __future__ import annotations

import json
import os

from conftest_paths import ROOT, run


def test_saved_check_is_a_static_stage_in_the_matrix(cuda13_site, kernel_libs, tmp_path):
    results = tmp_path / "results"
    env = {"PYTHONPATH": f"{cuda13_site}{os.pathsep}{ROOT}"}
    saved = run(["kernels", "--gpu", "L40S", "--driver", "575.57.08", "--save", "--results", str(results)], tmp_path, env)
    assert saved.returncode == 4, saved.stderr
    fine = run(["kernels", "--gpu", "H200", "--driver", "580.65.06", "--no-env", "--save", "--results", str(results),
                str(kernel_libs["sm90"])], tmp_path)
    assert fine.returncode == 0, fine.stderr
    docs = [json.loads(p.read_text()) for p in sorted(results.glob("*.result.json"))]
    assert len(docs) == 2
    for doc in docs:
        assert doc["provenance"]["kind"] == "static"
        (stage,) = doc["stages"]
        assert stage["stage"] == "kernels" and stage["provenance"] == "static"
    by_model = {d["fingerprint"]["gpus"][0]["name"]: d for d in docs}
    l40s = by_model["NVIDIA L40S"]
    assert l40s["stages"][0]["status"] == "fail" and "runtime-newer-than-driver" in l40s["stages"][0]["reason"]
    assert l40s["fingerprint"]["driver_version"] == "575.57.08" and l40s["fingerprint"]["cuda_driver_version"] == "12.9"
    assert l40s["stages"][0]["data"]["contract"]["verdict"] == "runtime-newer-than-driver"
    assert by_model["NVIDIA H200"]["stages"][0]["status"] == "pass"

    m = run(["matrix", "--results", str(results), "--by", "model", "--format", "json"], tmp_path)
    assert m.returncode == 0, m.stderr
    matrix = json.loads(m.stdout)
    assert matrix["stages"][0] == "kernels"
    cells = {r["key"]["gpu_model"]: r["cells"]["kernels"] for r in matrix["rows"]}
    assert cells["L40S"]["status"] == "fail" and cells["H200"]["status"] == "pass"
    only_static = run(["matrix", "--results", str(results), "--provenance", "static", "--format", "json"], tmp_path)
    assert only_static.returncode == 0 and len(json.loads(only_static.stdout)["rows"]) == 2


def test_matrix_without_static_results_has_no_kernels_column(tmp_path):
    (tmp_path / "r").mkdir()
    m = run(["matrix", "--results", str(tmp_path / "r"), "--format", "json"], tmp_path)
    assert "kernels" not in json.loads(m.stdout)["stages"]
