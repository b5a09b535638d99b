"""``gpuprobe matrix``: what works where, over one or more results folders."""

from __future__ import annotations

from pathlib import Path

import click

from gpuprobe.cli.common import (command, format_option, json_option, output_option, results_folders, results_option,
                                 stage_option, write_output)
from gpuprobe.run.stages import STATIC_STAGES
from gpuprobe.store.provenance import ALL as PROVENANCE_ALL
from gpuprobe.store.provenance import PROVENANCES


@command(exit_codes=(0, 2))
@results_option(multiple=True)
@click.option("--by", "view", type=click.Choice(["stack", "model", "node"]), default="stack", show_default=True,
              help="Rows: software stack (GPU model, arch, driver, CUDA, torch, dflex), GPU model, or node.")
@click.option("--model", "models", multiple=True, help="Only this GPU model, e.g. L40S (repeatable).")
@stage_option("Only this stage; job: the user's own jobs (attach, watch); kernels: gpuprobe kernels --save.",
              multiple=True, extra=STATIC_STAGES + ("job",))
@click.option("--host", "hosts", multiple=True, help="Only this node (repeatable).")
@click.option("--since", default=None, metavar="DATE", help="Only runs at or after DATE (ISO, e.g. 2025-11-01).")
@click.option("--provenance", "provenance", multiple=True,
              type=click.Choice([*PROVENANCES, PROVENANCE_ALL]),
              help="Only results probed by gpuprobe, reported by hand, observed (attach, watch), static (gpuprobe "
                   "kernels --save: judged from the binaries), drill (a failpoint was active) or simulated (NVML fake, "
                   "emulated GPU, --free-memory-gb) (repeatable); all: every one. Default: every kind but drill and "
                   "simulated. Drills and simulations shown get rows of their own, labelled in every format.")
@click.option("--compare", nargs=2, default=None, metavar="MODEL_A MODEL_B",
              help="Two GPU models side by side: stage cells, fingerprint differences, signatures.")
@format_option("text", "markdown", "json", "html", "prom")
@output_option
@click.option("--write", "write_default", is_flag=True,
              help="Write to MATRIX.<md|json|html|prom> in the (first) results folder; with --results reports, "
                   "the shipped reports/MATRIX.md.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the index (the local cache of the results): read every file.")
@json_option
def matrix(results: tuple[Path, ...], view: str, models: tuple[str, ...], stages: tuple[str, ...],
           hosts: tuple[str, ...], since: str | None, provenance: tuple[str, ...], compare: tuple[str, str] | None,
           fmt: str, output: Path | None, write_default: bool, no_cache: bool, as_json: bool) -> None:
    """The compatibility matrix: rows are stacks (or models, or nodes), columns are stages.

    A cell counts the runs by status ("hang 3/3"), with the last run's date and the median
    duration; known-issue signatures are listed with their remedies. Results are read
    through an index per results folder (a cache on local disk, ~/.cache/gpuprobe/index/), so
    only new or changed files are read. Unusable files (corrupt, truncated, oversized, not a regular file, a newer schema) are
    skipped with one warning line each on stderr, and listed under "skipped" in --json.
    Fire drills and simulations are left out unless --provenance all (or drill, simulated).

    \b
    Example:
      gpuprobe matrix
      gpuprobe matrix --by model --stage buffer --since 2025-11-01
      gpuprobe matrix --compare L40S H200
      gpuprobe matrix --provenance all             # drills and NVML fakes too, labelled
      gpuprobe matrix --results reports --format markdown --write   # -> reports/MATRIX.md
      gpuprobe matrix --format prom -o /var/lib/node_exporter/textfile/gpuprobe.prom
      gpuprobe matrix --results /shared/a --results /shared/b --format html -o matrix.html
    """
    from gpuprobe.store import matrix as mx
    from gpuprobe.store import render

    if as_json:
        fmt = "json"
    if output and write_default:
        raise click.UsageError("give -o FILE or --write, not both")
    folders = results_folders(results)
    flt = mx.MatrixFilter(models=models, stages=stages, since=since, provenance=provenance, hosts=hosts)
    try:
        if compare:
            from gpuprobe.store.compare import compare as do_compare

            data = do_compare(folders, compare[0], compare[1], flt, cache=not no_cache)
        else:
            data = mx.build(folders, view=view, flt=flt, cache=not no_cache)
    except mx.MatrixError as exc:
        raise click.UsageError(str(exc)) from None
    if write_default:
        output = folders[0] / f"MATRIX.{render.EXTENSIONS[fmt]}"
    if fmt == "text":
        from gpuprobe.cli.console import export_text, print_matrix, stdout_console

        if output is not None:
            write_output(output, export_text(lambda console: print_matrix(console, data), width=200))
        else:
            print_matrix(stdout_console(), data)
    else:
        try:
            text = render.render(data, fmt)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if output is not None:
            write_output(output, text)
        else:
            click.echo(text, nl=False)
    from gpuprobe.cli.common import warn_skipped
    from gpuprobe.store.record import Skipped

    warn_skipped([Skipped(s["file"], s["reason"]) for s in data.get("skipped") or []])
