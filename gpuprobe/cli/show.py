"""``gpuprobe show``: one stored result."""

from __future__ import annotations

from pathlib import Path

import click

from gpuprobe.cli.common import command, emit_json, json_option, locate_run, results_option


@command(exit_codes=(0, 2))
@click.argument("run_ref", metavar="RUN", default="latest")
@click.option("--verbose", "full", is_flag=True, help="Every mark and every stage's detail.")
@results_option(multiple=True)
@json_option
def show(run_ref: str, full: bool, results: tuple[Path, ...], as_json: bool) -> None:
    """Show one stored result. RUN is a result file, a run id (or a unique prefix of one),
    or 'latest' (the default): the newest result over the --results folders.

    \b
    Example:
      gpuprobe show latest
      gpuprobe show 20261128T2310 --json
    """
    found = locate_run(results, run_ref)
    doc = found.record.doc
    if as_json:
        emit_json({**doc, "skipped": [s.to_dict() for s in found.skipped]} if found.skipped else doc)
        return
    from gpuprobe.cli.console import print_run, stdout_console

    print_run(stdout_console(), doc, str(found.path), verbose=full)
