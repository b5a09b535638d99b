"""The matrix: cells, views, filters, compare, formats, and the CLI around them."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpuprobe.store import matrix as mx
from gpuprobe.store import render
from gpuprobe.cli.matrix import matrix as matrix_cmd
from gpuprobe.store.compare import compare
from result_factory import T0, make_result

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def field(tmp_path) -> Path:
    folder = tmp_path / "reports"
    shutil.copytree(FIXTURES / "field", folder)
    return folder


def _row(m: dict, model: str) -> dict:
    return next(r for r in m["rows"] if r["key"]["gpu_model"] == model)


def test_stack_view_counts_runs_by_status(field):
    m = mx.build([field])
    l40s, h200 = _row(m, "L40S"), _row(m, "H200")
    assert l40s["key"] == {"gpu_model": "L40S", "arch": "8.9", "driver": "575.57.08", "cuda": "12.9",
                           "torch": "2.13.0+cu128", "dflex": "-"}
    buf = l40s["cells"]["buffer"]
    assert buf["summary"] == "hang 3/3" and buf["status"] == "hang" and buf["runs"] == 3
    assert buf["last_at"].startswith("2026-11-01T14:00")
    assert buf["median_duration_s"] == 2.5
    assert [r["host"] for r in buf["latest"]] == ["l40s-n3", "l40s-n2", "l40s-n1"]
    assert buf["signatures"][0]["id"] == "buffer-host-storage" and buf["signatures"][0]["runs"] == 3
    assert h200["cells"]["buffer"]["summary"] == "pass 1/1"
    assert l40s["cells"]["train"] is None


def test_mixed_cell_lists_worst_first_and_latest_status(tmp_path):
    for i, status in enumerate(["hang", "pass", "pass"]):
        make_result(tmp_path, "l40s", f"n{i}", {"buffer": status}, at=T0 + timedelta(hours=i),
                    durations={"buffer": float(i + 1)})
    cell = _row(mx.build([tmp_path]), "L40S")["cells"]["buffer"]
    assert cell["summary"] == "hang 1/3, pass 2/3"
    assert cell["status"] == "pass" and cell["median_duration_s"] == 2.0


def test_model_and_node_views(field):
    by_model = mx.build([field], view="model")
    assert sorted(r["id"] for r in by_model["rows"]) == ["H200", "L40S"]
    by_node = mx.build([field], view="node")
    assert sorted(r["key"]["hostname"] for r in by_node["rows"]) == ["h200-n1", "l40s-n1", "l40s-n2", "l40s-n3"]
    assert _row(by_node, "L40S")["cells"]["buffer"]["summary"] == "hang 1/1"


def test_filters(field, tmp_path):
    make_result(field, "l40s", "l40s-n4", {"buffer": "pass"}, at=T0 + timedelta(days=3), simulated=True)
    assert [r["id"] for r in mx.build([field], view="model", flt=mx.MatrixFilter(models=("l40s",)))["rows"]] == ["L40S"]
    only_buffer = mx.build([field], flt=mx.MatrixFilter(stages=("buffer",)))
    assert only_buffer["stages"] == ["buffer"]
    recent = mx.build([field], view="model", flt=mx.MatrixFilter(since="2026-11-02"))
    assert [r["id"] for r in recent["rows"]] == ["L40S"] and _row(recent, "L40S")["cells"]["buffer"]["summary"] == "pass 1/1"
    sim = mx.build([field], view="model", flt=mx.MatrixFilter(provenance=("simulated",)))
    assert _row(sim, "L40S")["cells"]["buffer"]["runs"] == 1
    reported = mx.build([field], view="model", flt=mx.MatrixFilter(provenance=("reported",)))
    assert _row(reported, "L40S")["cells"]["buffer"]["summary"] == "hang 3/3"
    with pytest.raises(mx.MatrixError, match="ISO date"):
        mx.build([field], flt=mx.MatrixFilter(since="last tuesday"))


def test_corrupt_files_are_reported_and_skipped(field):
    (field / "broken.result.json").write_text('{"schema": 1, "stages": [')
    (field / "alien.result.json").write_text('{"hello": "world"}')
    m = mx.build([field])
    assert {Path(s["file"]).name for s in m["skipped"]} == {"broken.result.json", "alien.result.json"}
    assert m["skipped_message"].startswith("skipped 2 unreadable files: ")
    assert _row(m, "L40S")["cells"]["buffer"]["summary"] == "hang 3/3"


def test_incomplete_runs_count_their_finished_stages(tmp_path):
    make_result(tmp_path, "l40s", "n1", {"cuda": "pass", "alloc": "pass"}, complete=False)
    row = _row(mx.build([tmp_path]), "L40S")
    assert row["cells"]["alloc"]["summary"] == "pass 1/1" and row["cells"]["buffer"] is None


def test_several_results_folders_are_one_matrix(field, tmp_path):
    other = tmp_path / "other"
    make_result(other, "l40s", "l40s-n7", {"buffer": "hang"}, at=T0 + timedelta(days=1))
    m = mx.build([field, other])
    assert _row(m, "L40S")["cells"]["buffer"]["summary"] == "hang 4/4"
    assert len(m["sources"]) == 2


def test_compare_l40s_h200(field):
    c = compare([field], "L40S", "h200")
    assert c["models"] == ["L40S", "H200"]
    assert c["cells"]["buffer"]["L40S"]["summary"] == "hang 3/3"
    assert c["cells"]["buffer"]["H200"]["summary"] == "pass 1/1"
    diffs = {d["fact"]: (d["a"], d["b"]) for d in c["differences"]}
    assert diffs["driver"] == (["575.57.08"], ["570.133.20"])
    assert diffs["cuda_driver"] == (["12.9"], ["12.8"])
    assert diffs["compute_capability"] == (["8.9 (Ada)"], ["9.0 (Hopper)"])
    assert "memory_total_bytes" in diffs and "torch" not in diffs
    assert [s["id"] for s in c["signatures"]["L40S"]] == ["buffer-host-storage"] and c["signatures"]["H200"] == []
    with pytest.raises(mx.MatrixError, match="no results for GPU model A100"):
        compare([field], "L40S", "A100")


def test_markdown_html_prom(field):
    m = mx.build([field])
    md = render.to_markdown(m)
    assert "| L40S | 8.9 | 575.57.08 | 12.9 |" in md and "hang 3/3" in md and "buffer-host-storage" in md
    html = render.to_html(m)
    # evidence text is escaped, and the page needs nothing from the network
    assert "&lt;and looks like a hang&gt;" in html and "<and looks" not in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    prom = render.to_prom(m)
    assert "# TYPE gpuprobe_stage_runs gauge" in prom and "counter" not in prom
    # unknown labels (dflex "-") are left out, never a placeholder
    assert ('gpuprobe_stage_runs{model="L40S",arch="8.9",driver="575.57.08",cuda="12.9",'
            'torch="2.13.0+cu128",stage="buffer",status="hang"} 3') in prom
    assert '"-"' not in prom
    # the latest status is a state set of its own: hang is 1, pass (and skip) are 0
    labels = 'model="L40S",arch="8.9",driver="575.57.08",cuda="12.9",torch="2.13.0+cu128",stage="buffer"'
    assert f'gpuprobe_stage_latest_status{{{labels},status="hang"}} 1' in prom
    assert f'gpuprobe_stage_latest_status{{{labels},status="pass"}} 0' in prom
    assert f'gpuprobe_stage_latest_status{{{labels},status="skip"}} 0' in prom
    assert "gpuprobe_stage_duration_seconds{" in prom and "_median" not in prom
    for line in prom.splitlines():
        assert line.startswith("#") or line.startswith("gpuprobe_")
    cmp_html = render.to_html(compare([field], "L40S", "H200"))
    assert "Fingerprint differences" in cmp_html and "575.57.08" in cmp_html


def test_prom_label_values_are_escaped():
    from gpuprobe.store.prom import labels

    assert labels({"host": 'a"b\\c\nd'}) == '{host="a\\"b\\\\c\\nd"}'


def test_cli_write_markdown_and_prom_file(field):
    runner = CliRunner()
    res = runner.invoke(matrix_cmd, ["--results", str(field), "--format", "markdown", "--write"])
    assert res.exit_code == 0, res.output
    assert "hang 3/3" in (field / "MATRIX.md").read_text()
    prom = field / "out" / "gpuprobe.prom"
    prom.parent.mkdir()
    res = runner.invoke(matrix_cmd, ["--results", str(field), "--format", "prom", "-o", str(prom)])
    assert res.exit_code == 0 and prom.read_text().startswith("# HELP")
    assert [p.name for p in prom.parent.iterdir()] == ["gpuprobe.prom"]  # no temporary file left behind


def test_cli_json_and_table(field):
    runner = CliRunner()
    res = runner.invoke(matrix_cmd, ["--results", str(field), "--by", "model", "--json"])
    data = json.loads(res.output)
    assert data["view"] == "model" and _row(data, "L40S")["cells"]["buffer"]["summary"] == "hang 3/3"
    res = runner.invoke(matrix_cmd, ["--results", str(field), "--compare", "L40S", "H200"])
    assert res.exit_code == 0 and "575.57.08" in res.output and "hang 3/3" in res.output


def test_cli_usage_errors_exit_2(field):
    from gpuprobe.cli.main import main

    for args in (["--since", "soon"], ["--compare", "L40S", "A100"], ["--write", "-o", "x.md"]):
        with pytest.raises(SystemExit) as exc:
            main(["matrix", "--results", str(field), *args])
        assert exc.value.code == 2


def test_commands_have_examples():
    from gpuprobe.cli.main import cli

    for name in ("matrix", "preflight", "report"):
        assert "Example:" in (cli.get_command(None, name).help or "")
