"""``gpuprobe report``: one run as Markdown or HTML."""

from __future__ import annotations

from pathlib import Path

import click

from gpuprobe.cli.common import command, format_option, locate_run, output_option, results_option


@command(exit_codes=(0, 2))
@click.argument("run_ref", metavar="RUN", default="latest")
@click.option("--latest", is_flag=True, hidden=True, help="The same as RUN 'latest' (kept for old scripts).")
@format_option("markdown", "html", default="markdown")
@output_option
@results_option(multiple=True)
def report(run_ref: str, latest: bool, fmt: str, output: Path | None, results: tuple[Path, ...]) -> None:
    """A report of one run: stages, node and stack, a timeline of the marks, and for each
    stage with evidence its stacks, process and GPU snapshots and signature matches.

    RUN is a result file, a run id (or a unique prefix of one), or 'latest' (the default):
    the newest result over the --results folders.

    \b
    Example:
      gpuprobe report latest --format html -o run.html
      gpuprobe report 20261128T2310 > run.md
    """
    from gpuprobe.cli.common import write_output
    from gpuprobe.store import report as rp

    if latest and run_ref != "latest":
        raise click.UsageError("give RUN or --latest, not both")
    found = locate_run(results, run_ref)
    text = rp.render(found.record.doc, "md" if fmt == "markdown" else fmt, found.path)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_output(output, text)
