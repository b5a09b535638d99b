"""``gpuprobe report``: one run as Markdown or HTML."""

from __future__ import annotations

from pathlib import Path

import click

from gpuprobe.cli.preflight import ExitCodesCommand


@click.command(cls=ExitCodesCommand)
@click.argument("run_ref", metavar="RUN", required=False)
@click.option("--latest", is_flag=True, help="The newest result in the results folder.")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True,
              help="Markdown or self-contained HTML.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to FILE (atomically) instead of stdout.")
@click.option("--results", "results", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder. Default: $GPUPROBE_RESULTS, else reports/ of the checkout, else the user data folder.")
def report(run_ref: str | None, latest: bool, fmt: str, output: Path | None, results: Path | None) -> None:
    """A report of one run: stages, node and stack, a timeline of the marks, and for each
    stage with evidence its stacks, process and GPU snapshots and signature matches.

    RUN is a result file, a run id (or its prefix), or 'latest'.

    \b
    Example:
      gpuprobe report --latest --format html -o run.html
      gpuprobe report 20261128T2310 > run.md
    """
    from gpuprobe import paths
    from gpuprobe.store import report as rp
    from gpuprobe.store.results import find_run, read_result, write_atomic

    if latest == bool(run_ref):
        raise click.UsageError("give RUN or --latest (one of them)")
    folder = paths.resolve_results_dir(results).path
    try:
        path = find_run(folder, "latest" if latest else run_ref)  # type: ignore[arg-type]
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    text = rp.render(read_result(path), fmt, path)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomic(output, text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}", err=True)
