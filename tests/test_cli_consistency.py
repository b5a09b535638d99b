"""One meaning per option across commands, and each command's help ends with its own exit codes."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from gpuprobe.cli.main import COMMANDS, cli


def command(name: str) -> click.Command:
    return cli.get_command(None, name)


def exit_codes_of(name: str) -> dict[str, str]:
    text = CliRunner().invoke(cli, [name, "--help"], terminal_width=200).output
    section = text.split("Exit codes:")[1]
    return dict(re.findall(r"^\s+(\d+)\s+(.+)$", section, re.M))


def test_every_command_is_registered_once_and_loads():
    assert list(COMMANDS) == cli.list_commands(None)
    for name in COMMANDS:
        assert command(name).name == name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_short_and_long_help_everywhere_end_with_the_exit_codes(name):
    runner = CliRunner()
    short, long = runner.invoke(cli, [name, "-h"]), runner.invoke(cli, [name, "--help"])
    assert short.exit_code == 0 and short.output == long.output
    assert long.output.count("Exit codes") == 1
    assert long.output.rstrip().splitlines()[-1].lstrip()[0].isdigit() or "Exit codes" in long.output.split("\n\n")[-1]


def test_each_command_lists_the_codes_it_can_return():
    assert set(exit_codes_of("preflight")) == {"0", "2", "4", "75"}
    assert set(exit_codes_of("matrix")) == {"0", "2"} and set(exit_codes_of("report")) == {"0", "2"}
    assert set(exit_codes_of("signatures")) == {"0"}
    assert set(exit_codes_of("run")) == {"0", "1", "2", "3", "130"}
    sweep = exit_codes_of("sweep")
    assert set(sweep) == {"0", "1", "2", "3", "75"} and "wait timed out" in sweep["75"]
    assert "no-evidence" in exit_codes_of("preflight")["75"]


def _options(name: str) -> dict[str, click.Option]:
    return {opt: p for p in command(name).params if isinstance(p, click.Option) and not p.hidden for opt in p.opts}


def test_one_meaning_per_option_name():
    outputs = [name for name in COMMANDS if "-o" in _options(name)]
    assert set(outputs) == {"matrix", "preflight", "report"}
    for name in outputs:
        assert _options(name)["-o"].name == "output" and _options(name)["--output"] is _options(name)["-o"]
    for name in COMMANDS:
        opts = _options(name)
        if "--format" in opts:
            assert set(opts["--format"].type.choices) <= {"text", "markdown", "json", "html", "prom"}
        if "--json" in opts:
            assert opts["--json"].is_flag
        assert "--stages" not in opts and "--option" not in opts
    for name in ("matrix", "preflight", "show", "report"):
        assert _options(name)["--results"].multiple, name      # reading several folders makes sense
    for name in ("run", "sweep"):
        assert not _options(name)["--results"].multiple, name  # one folder is written
        assert _options(name)["--set"].multiple


def test_sweep_takes_sbatch_short_flags():
    opts = _options("sweep")
    assert opts["-t"].name == "time_limit" and opts["-p"].name == "partition"
    assert opts["-N"].name == "nodes" and opts["-w"].name == "nodelist"


@pytest.mark.parametrize("args, says", [
    (["run", "-o", "alloc.cpu_max_mib=64"], "--set [STAGE.]KEY=VALUE"),
    (["sweep", "-o", "alloc.cpu_max_mib=64", "--dry-run"], "--set [STAGE.]KEY=VALUE"),
    (["preflight", "--stages", "cuda"], "--stage"),
])
def test_old_spellings_fail_in_one_line_saying_the_new_one(gpuprobe_cli, args, says):
    res = gpuprobe_cli(args, results=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], res.stderr


def test_old_format_names_still_work(tmp_path):
    from tests.result_factory import make_result

    make_result(tmp_path, "h200", "h1", {"cuda": "pass"})
    runner = CliRunner()
    a = runner.invoke(cli, ["report", "--results", str(tmp_path), "--format", "md"])
    b = runner.invoke(cli, ["report", "latest", "--results", str(tmp_path), "--format", "markdown"])
    assert a.exit_code == b.exit_code == 0 and a.output == b.output
    assert runner.invoke(cli, ["matrix", "--results", str(tmp_path), "--format", "table"]).exit_code == 0


def test_show_and_report_take_the_same_run_references(tmp_path):
    from tests.result_factory import make_result

    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir(), second.mkdir()
    make_result(first, "h200", "h1", {"cuda": "pass"})
    path = next(first.glob("*.result.json"))
    run_id = path.name.split(".")[0]
    runner = CliRunner()
    for ref in ("latest", run_id, run_id[:12], str(path)):
        for name in ("show", "report"):
            res = runner.invoke(cli, [name, ref, "--results", str(second), "--results", str(first)])
            assert res.exit_code == 0 and run_id in res.output, (name, ref, res.output)
