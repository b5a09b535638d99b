"""``gpuprobe matrix``: what works where, over one or more results folders."""

from __future__ import annotations

import io
from pathlib import Path

import click

from gpuprobe.cli.preflight import ExitCodesCommand

from gpuprobe.run.stages import STAGE_NAMES, STATIC_STAGES


def _folders(results: tuple[Path, ...]) -> list[Path]:
    from gpuprobe import paths

    return [paths.resolve_results_dir(r).path for r in results] or [paths.resolve_results_dir(None).path]


@click.command(cls=ExitCodesCommand)
@click.option("--results", "results", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results folder (repeatable). Default: $GPUPROBE_RESULTS, else reports/ of the checkout, "
                   "else the user data folder.")
@click.option("--by", "view", type=click.Choice(["stack", "model", "node"]), default="stack", show_default=True,
              help="Rows: software stack (GPU model, arch, driver, CUDA, torch, dflex), GPU model, or node.")
@click.option("--model", "models", multiple=True, help="Only this GPU model, e.g. L40S (repeatable).")
@click.option("--stage", "stages", multiple=True, type=click.Choice(STATIC_STAGES + STAGE_NAMES + ("job",)),
              help="Only this stage (repeatable); job: the user's own jobs (attach, watch); kernels: gpuprobe kernels --save.")
@click.option("--host", "hosts", multiple=True, help="Only this node (repeatable).")
@click.option("--since", default=None, metavar="DATE", help="Only runs at or after DATE (ISO, e.g. 2025-11-01).")
@click.option("--provenance", "provenance", multiple=True,
              type=click.Choice(["probed", "reported", "simulated", "observed", "static"]),
              help="Only results probed by gpuprobe, reported by hand, simulated (NVML fake), observed (attach, watch) "
                   "or static (gpuprobe kernels --save: judged from the binaries) (repeatable).")
@click.option("--compare", nargs=2, default=None, metavar="MODEL_A MODEL_B",
              help="Two GPU models side by side: stage cells, fingerprint differences, signatures.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json", "html", "prom"]), default="table",
              show_default=True, help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to FILE (atomically: temporary file + rename) instead of stdout.")
@click.option("--write", "write_default", is_flag=True,
              help="Write to MATRIX.<md|json|html|prom> in the (first) results folder, e.g. reports/MATRIX.md.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the index (.gpuprobe-cache/index.sqlite).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def matrix(results: tuple[Path, ...], view: str, models: tuple[str, ...], stages: tuple[str, ...],
           hosts: tuple[str, ...], since: str | None, provenance: tuple[str, ...], compare: tuple[str, str] | None,
           fmt: str, output: Path | None, write_default: bool, no_cache: bool, as_json: bool) -> None:
    """The compatibility matrix: rows are stacks (or models, or nodes), columns are stages.

    A cell counts the runs by status ("hang 3/3"), with the last run's date and the median
    duration; known-issue signatures are listed with their remedies. Results are read
    through an index per results folder (.gpuprobe-cache/index.sqlite, or the user cache folder
    when the results folder is read-only), so only new or changed files are read.
    Unreadable (corrupt, partial) files are reported and skipped.

    \b
    Example:
      gpuprobe matrix
      gpuprobe matrix --by model --stage buffer --since 2025-11-01
      gpuprobe matrix --compare L40S H200
      gpuprobe matrix --format markdown --write          # -> reports/MATRIX.md
      gpuprobe matrix --format prom -o /var/lib/node_exporter/textfile/gpuprobe.prom
      gpuprobe matrix --results /shared/a --results /shared/b --format html -o matrix.html
    """
    from gpuprobe.store import matrix as mx
    from gpuprobe.store import render
    from gpuprobe.store.results import write_atomic

    if as_json:
        fmt = "json"
    if output and write_default:
        raise click.UsageError("give -o FILE or --write, not both")
    folders = _folders(results)
    flt = mx.MatrixFilter(models=models, stages=stages, since=since, provenance=provenance, hosts=hosts)
    try:
        if compare:
            from gpuprobe.store.compare import compare as do_compare

            data = do_compare(folders, compare[0], compare[1], flt, cache=not no_cache)
        else:
            data = mx.build(folders, view=view, flt=flt, cache=not no_cache)
        if write_default:
            output = folders[0] / f"MATRIX.{render.EXTENSIONS[fmt]}"
        if fmt == "table":
            from rich.console import Console

            if output is not None:
                console = Console(record=True, width=200, file=io.StringIO())
                console.print(render.rich_view(data))
                write_atomic(output, console.export_text())
            else:
                Console().print(render.rich_view(data))
        else:
            text = render.render(data, fmt)
            if output is not None:
                write_atomic(output, text)
            else:
                click.echo(text, nl=False)
    except mx.MatrixError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    if output is not None:
        click.echo(f"wrote {output}", err=True)
    if data.get("skipped_message") and (output is not None or fmt != "table"):
        click.echo(data["skipped_message"], err=True)
