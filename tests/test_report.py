"""Run reports: timeline, stacks, snapshots, signatures; Markdown and escaped HTML."""

from __future__ import annotations

from click.testing import CliRunner

from gpuprobe.store import report as rp
from gpuprobe.cli.report import report as report_cmd
from gpuprobe.store.results import read_result
from result_factory import make_result


def test_markdown_report_has_timeline_evidence_and_signatures(tmp_path):
    path = make_result(tmp_path, "l40s", "l40s-n1", {"cuda": "pass", "buffer": "hang"})
    md = rp.render(read_result(path), "md", path)
    assert "| 10.010 | buffer | buffer.construct |" in md          # marks on the run's clock
    assert "## Evidence: buffer (hang)" in md and "118.0% CPU" in md
    assert "sample (gpuprobe_pwm/buffer.py:210)" in md                     # the stacks
    assert "memory_free_bytes=" in md                              # the GPU snapshot
    assert "buffer-host-storage" in md and "575.57.08" in md


def test_html_report_escapes_evidence(tmp_path):
    path = make_result(tmp_path, "l40s", "l40s-n1", {"buffer": "hang"})
    html = rp.render(read_result(path), "html", path)
    assert "&lt;MainThread&gt;" in html and "<MainThread>" not in html
    assert "&lt;and looks like a hang&gt;" in html
    assert "https://" not in html and "<script" not in html


def test_cli_latest_and_errors(tmp_path):
    make_result(tmp_path, "h200", "h1", {"cuda": "pass"})
    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(report_cmd, ["--latest", "--results", str(tmp_path), "--format", "html", "-o", str(out)])
    assert res.exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    # RUN defaults to latest, as in `gpuprobe show`; markdown is the default format (md its old name)
    res = runner.invoke(report_cmd, ["--results", str(tmp_path)])
    assert res.exit_code == 0 and res.output.startswith("#")
    assert runner.invoke(report_cmd, ["latest", "--results", str(tmp_path), "--format", "md"]).output == res.output
    res = runner.invoke(report_cmd, ["nosuchrun", "--latest", "--results", str(tmp_path)])
    assert res.exit_code == 2
    res = runner.invoke(report_cmd, ["nosuchrun", "--results", str(tmp_path)])
    assert res.exit_code == 1 and "no run 'nosuchrun'" in res.output
