"""What every command shares: the command class (help ending with its exit codes), the
option decorators, and how data is printed.

One meaning per option name across commands:
  --results DIR   a results folder (repeatable where reading several makes sense)
  --format F      one vocabulary: text, markdown, json, html, prom (each command takes a subset)
  --json          the same as --format json
  -o/--output     a file to write (atomically) instead of stdout
  --stage NAME    a stage of the stage table
  --set S.K=V     a stage option (``run``, ``sweep``)
  RUN             a result file, a run id (or a unique prefix of one), or ``latest``

Kept light (click and the stage table only): preflight's start-up pays for this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable

import click

from gpuprobe import exitcodes
from gpuprobe.run.stages import STAGE_NAMES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 120}

# the generic meaning of each code; a command may word a code its own way
MEANINGS = {
    exitcodes.OK: "success",
    exitcodes.FAILED: "a stage failed or crashed",
    exitcodes.USAGE: "usage or input error (bad option, corrupt file, results folder not writable)",
    exitcodes.HANG: "a stage hung, was too slow to finish, or could not be killed",
    exitcodes.INCOMPATIBLE: "this node's stack is known to be incompatible",
    exitcodes.TEMPFAIL: "retry later or elsewhere",
    exitcodes.INTERRUPTED: "interrupted (Ctrl-C)",
}

ExitCodes = Iterable["int | tuple[int, str]"]


def _rows(codes: ExitCodes) -> list[tuple[str, str]]:
    rows = []
    for item in codes:
        code, text = item if isinstance(item, tuple) else (item, MEANINGS[item])
        rows.append((str(code), text))
    return rows


class Command(click.Command):
    """A command whose ``--help`` ends with the exit codes it can return."""

    def __init__(self, *args: object, exit_codes: ExitCodes = (exitcodes.OK, exitcodes.USAGE), **kwargs: object):
        kwargs["context_settings"] = {**CONTEXT, **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)
        self.exit_codes = _rows(exit_codes)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Exit codes"):
            formatter.write_dl(self.exit_codes)


def command(name: str | None = None, exit_codes: ExitCodes = (exitcodes.OK, exitcodes.USAGE), **kwargs: object) -> Callable:
    """``@command(exit_codes=(...))`` in place of ``@click.command()``."""
    return click.command(name, cls=Command, exit_codes=exit_codes, **kwargs)


# -- types -------------------------------------------------------------------------------
class Seconds(click.ParamType):
    """A duration in seconds, more than 0 (the one check for every timeout-like option)."""

    name = "SECONDS"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds):   # nan would disable the watchdog; inf is no deadline at all
            self.fail(f"must be a finite number of seconds, got {value!r}", param, ctx)
        if not seconds > 0:
            self.fail(f"must be more than 0 seconds, got {seconds:g}", param, ctx)
        return seconds


SECONDS = Seconds()

FORMATS = ("text", "markdown", "json", "html", "prom")
FORMAT_ALIASES = {"table": "text", "md": "markdown"}   # the names older versions used


class FormatChoice(click.Choice):
    """``--format`` from the one vocabulary; the old spellings (table, md) still work."""

    def __init__(self, *choices: str):
        assert set(choices) <= set(FORMATS), choices
        super().__init__(choices)

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, str):
            value = FORMAT_ALIASES.get(value.lower(), value)
        return super().convert(value, param, ctx)


# -- option decorators ----------------------------------------------------------------------
RESULTS_HELP = ("Default: $GPUPROBE_RESULTS, else the user data folder (~/.local/share/gpuprobe/results) "
                "and, read-only, the checkout's shipped field reports (reports/).")


def results_option(multiple: bool = True, help: str | None = None) -> Callable:
    text = help or ("Results folder (repeatable). " if multiple else "Results folder. ") + RESULTS_HELP
    return click.option("--results", "results", multiple=multiple, type=click.Path(file_okay=False, path_type=Path),
                        default=None, help=text)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as --format json).")(f)


def format_option(*choices: str, default: str = "text") -> Callable:
    return click.option("--format", "fmt", type=FormatChoice(*choices), default=default, show_default=True,
                        help=f"Output format: {', '.join(choices)}.")


def output_option(f: Callable) -> Callable:
    return click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        metavar="FILE", help="Write to FILE (atomically: temporary file + rename) instead of stdout.")(f)


def stage_option(help: str, multiple: bool = False, extra: tuple[str, ...] = ()) -> Callable:
    """``--stage``; ``extra``: names a command also judges that are not run stages (``job``)."""
    if multiple:
        names = STAGE_NAMES + tuple(extra)

        def check(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
            return stage_list(ctx, param, value, names)

        return click.option("--stage", "stages", multiple=True, metavar="STAGE", callback=check,
                            help=f"{help} Repeatable, or comma-separated. One of: {', '.join(names)}.")
    return click.option("--stage", type=click.Choice(STAGE_NAMES), default=None, help=help)


def stage_list(ctx: click.Context, param: click.Parameter, value: tuple[str, ...],
               names: tuple[str, ...] = STAGE_NAMES) -> tuple[str, ...]:
    stages = tuple(s.strip() for v in value for s in v.split(",") if s.strip())
    unknown = [s for s in stages if s not in names]
    if unknown:
        raise click.BadParameter(f"unknown stage {', '.join(map(repr, unknown))} (one of: {', '.join(names)})")
    return stages


def renamed_option(old: str, new: str, why: str = "") -> Callable:
    """A hidden option that fails in one line and says what replaced it."""

    def refuse(ctx: click.Context, param: click.Parameter, value: object) -> None:
        if value:
            raise click.UsageError(f"{old} is now {new}{why}")

    dest = "renamed_" + old.lstrip("-").replace("-", "_")   # its own name: never the new option's value
    return click.option(old, dest, multiple=True, hidden=True, expose_value=False, callback=refuse)


def set_option(help: str) -> Callable:
    """``--set [STAGE.]KEY=VALUE`` (was ``-o``, which now means an output file everywhere)."""

    def decorate(f: Callable) -> Callable:
        f = renamed_option("-o", "--set [STAGE.]KEY=VALUE", " (-o means an output file in every command)")(f)
        f = renamed_option("--option", "--set [STAGE.]KEY=VALUE")(f)
        return click.option("--set", "options", multiple=True, metavar="[STAGE.]KEY=VALUE", help=help)(f)

    return decorate


def parse_stage_options(pairs: Iterable[str]) -> dict:
    """``--set buffer.capacity=1e5`` -> {"buffer": {"capacity": 100000}}, each value checked against
    its stage's schema; ``--set key=v`` applies to every stage that has ``key``. A bad pair is a
    one-line usage error (exit 2) naming it."""
    from gpuprobe.run import options

    return options.resolve(tuple(pairs))


# -- shared plumbing ------------------------------------------------------------------------
def results_folders(results: Iterable[Path] | Path | None) -> list[Path]:
    """The folders a reader takes evidence from: those of ``--results`` (or $GPUPROBE_RESULTS),
    which must exist (exit 2, naming the folder), else the user data folder and the
    checkout's shipped field reports (gpuprobe.paths.evidence_dirs)."""
    from gpuprobe import paths

    given = [results] if isinstance(results, Path) else list(results or ())
    return [r.path for r in paths.evidence_dirs(given)]


def locate_run(results: Iterable[Path] | Path | None, ref: str):
    """RUN (a path, a run id or prefix, ``latest``) over the ``--results`` folders, read
    through the validating loader: a :class:`gpuprobe.store.runs.Found` (record, path,
    files skipped). A RUN that is a path needs no folder.

    Files passed over on the way to ``latest`` are warned about on stderr, one line each.
    """
    import os

    from gpuprobe.store import runs

    is_path = ref != "latest" and os.path.lexists(Path(ref).expanduser())
    try:
        found = runs.find([] if is_path else results_folders(results), ref)
    except runs.RunNotFound as exc:   # exit 1, as it always was: no such run is not a bad option
        warn_skipped(getattr(exc, "skipped", []))
        raise click.ClickException(str(exc)) from None
    warn_skipped(found.skipped)
    return found


def warn_skipped(skipped: list) -> None:
    """One stderr line per skipped file: the file and why."""
    from gpuprobe import textsafe

    for item in skipped:
        click.echo(textsafe.terminal(item.line()), err=True)   # a file name is whatever is in the folder


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def write_output(output: Path, text: str) -> None:
    """Write a command's output file atomically and say so on stderr."""
    from gpuprobe.atomic import write_atomic

    try:
        write_atomic(output, text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}", err=True)
