"""Bad input gives one line, the documented exit code and no traceback; every command has help."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import click
import pytest
from click.testing import CliRunner

from gpuprobe.cli.main import cli


def one_line_error(run, code: int) -> str:
    assert run.returncode == code, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_unknown_stage(gpuprobe_cli):
    line = one_line_error(gpuprobe_cli(["run", "--stage", "warp"]), 2)
    assert "warp" in line and "buffer" in line  # says what is allowed


@pytest.mark.parametrize("value", ["0", "-3"])
def test_timeout_must_be_positive(gpuprobe_cli, value):
    line = one_line_error(gpuprobe_cli(["run", "--timeout", value]), 2)
    assert "--timeout" in line


def test_results_folder_not_writable(gpuprobe_cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(gpuprobe_cli(["run", "--device", "cpu"], results=blocker / "results"), 2)
    assert "not writable" in line and str(blocker) in line


def test_corrupt_result_file_given_to_show(gpuprobe_cli, tmp_path):
    bad = tmp_path / "x.result.json"
    bad.write_text('{"schema": 1, "stages": [')
    line = one_line_error(gpuprobe_cli(["show", str(bad)]), 2)
    assert f"{bad}: not valid JSON" in line and "corrupt or partial file" in line


def test_show_unknown_run(gpuprobe_cli, tmp_path):
    line = one_line_error(gpuprobe_cli(["show", "20991231"], results=tmp_path), 2)
    assert "no run" in line


def test_only_needs_stage(gpuprobe_cli):
    one_line_error(gpuprobe_cli(["run", "--only"]), 2)


def test_bad_failpoint_spec_is_refused_before_the_run(gpuprobe_cli):
    # checked in the parent: a typo is a usage error, never a stored fail that condemns the node
    run = gpuprobe_cli(["run", "--device", "cpu", "--only", "--stage", "alloc", "--json"],
                       env={"GPUPROBE_FAILPOINTS": "alloc.x=explode"})
    assert run.returncode == 2
    assert "unknown failpoint action 'explode'" in run.stderr and run.result_files() == []


def _walk(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(None):
            yield from _walk(command.get_command(None, name), path + [name])


def test_every_command_has_help_with_example_and_exit_codes():
    runner = CliRunner()
    for path, command in _walk(cli, []):
        assert command.help, f"{' '.join(path)} has no help"
        out = runner.invoke(cli, path + ["--help"])
        assert out.exit_code == 0, out.output
        assert "Exit codes" in out.output
        if path:
            assert "Example" in out.output, f"{' '.join(path)} --help has no Example"


def test_info_json_is_the_fingerprint(gpuprobe_cli):
    run = gpuprobe_cli(["info", "--json"], results=False)
    fp = json.loads(run.stdout)
    assert fp["nvml"]["available"] is False
    assert fp["torch"]["version"].startswith("2.")
    if importlib.util.find_spec("dflex") is None:
        assert fp["dflex"]["available"] is False and "DiffRL" in fp["dflex"]["reason"]
    else:  # the vendored wheel, installed by the README's test command
        assert fp["dflex"]["available"] is True and fp["dflex"]["version"] == importlib.metadata.version("dflex")


def test_info_with_l40s_fake(gpuprobe_cli):
    fp = json.loads(gpuprobe_cli(["info", "--json"], results=False, env={"GPUPROBE_FAKE_NVML": "l40s"}).stdout)
    assert fp["simulated"] == "l40s"
    assert fp["driver_version"] == "575.57.08" and fp["cuda_driver_version"] == "12.9"
    assert fp["gpus"][0]["name"] == "NVIDIA L40S" and fp["gpus"][0]["compute_capability"] == "8.9"
