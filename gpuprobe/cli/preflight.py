"""``gpuprobe preflight``, and the console entry point that starts it without the heavy CLI.

Job scripts call preflight before every job, so its start-up is the budget: the entry
point (:func:`console_main`, setup.cfg's ``gpuprobe`` script) runs ``gpuprobe preflight``
with click alone — no rich, no other command modules, no torch — and hands every other
command to :func:`gpuprobe.cli.main.main`. Output here is plain ``click.echo``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gpuprobe import exitcodes

STAGES_HELP = "nvml,cuda,alloc,sim,buffer,train"


class ExitCodesCommand(click.Command):
    """--help ends with the exit codes, as gpuprobe.cli.main's commands do (that module is too
    heavy to import on preflight's lean path, hence this twin)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Exit codes"):
            formatter.write_dl(exitcodes.HELP_ROWS)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _human(v: dict) -> str:
    colour = {"ok": "green", "known-incompatible": "red", "no-evidence": "yellow", "transient": "yellow"}[v["verdict"]]
    stack = v["node"]["stack"]
    lines = [click.style(f"preflight: {v['verdict']} (exit {v['exit_code']})", fg=colour, bold=True)
             + f"  node {v['node']['hostname']}: {stack['gpu_model']} (cc {stack['arch']}), driver {stack['driver']}, "
               f"CUDA {stack['cuda']}, torch {stack['torch']}, dflex {stack['dflex']}"
             + (f"  [simulated: {v['node']['simulated']}]" if v["node"].get("simulated") else ""),
             f"  {v['reason']}"]
    for s in v["stages"]:
        mark = {"pass": "ok  ", None: "--  "}.get(s["status"], "BAD ")
        lines.append(f"  {mark}{s['stage']:<7} {s['summary']}")
        for sig in s.get("signatures") or []:
            lines.append(f"        [{sig.get('id')}] {sig.get('title')}")
    if v["advice"]:
        lines.append("  what to do:")
        lines += [f"    - {a}" for a in v["advice"]]
    if v.get("live_run"):
        lines.append(f"  live probe result: {v['live_run']}")
    if v.get("skipped_message"):
        lines.append(f"  note: {v['skipped_message']}")
    return "\n".join(lines)


@click.command(cls=ExitCodesCommand)
@click.option("--stages", default=None, metavar="LIST", help=f"Stages to judge, comma-separated. Default: {STAGES_HELP}.")
@click.option("--live", default=None, metavar="LIST",
              help="Also probe these stages now (tight timeouts); their results are the newest evidence.")
@click.option("--live-timeout", type=float, default=30.0, show_default=True, help="Seconds per live stage.")
@click.option("--strict", is_flag=True, help="No evidence for a requested stage exits 75 instead of 0.")
@click.option("--fingerprint", "fingerprint_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Judge the node of this fingerprint (`gpuprobe info --json`) or result file instead of this one. "
                   "Also: $GPUPROBE_PREFLIGHT_FINGERPRINT.")
@click.option("--results", "results", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results folder with the evidence (repeatable). Default: $GPUPROBE_RESULTS, else reports/ "
                   "of the checkout, else the user data folder.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the index (.gpuprobe-cache/index.sqlite).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the human view.")
@click.pass_context
def preflight(ctx: click.Context, stages: str | None, live: str | None, live_timeout: float, strict: bool,
              fingerprint_file: Path | None, results: tuple[Path, ...], no_cache: bool, as_json: bool) -> None:
    """Should a job start on this node? Answers from the stored evidence, in well under a second.

    Fingerprints the node through NVML (no torch import), looks up the evidence for its
    stack (exact stack first, then the same GPU model) and answers, per the rule "the
    latest run of each stage wins":

    \b
      ok                  every requested stage's latest run passed        exit 0
      known-incompatible  some stage's latest run hung/was slow/failed/
                          crashed/could not be killed                       exit 4
      no-evidence         some stage has no runs, none is bad              exit 0 (75 with --strict)
      transient           NVML reports a lost GPU: retry elsewhere         exit 75

    Results from NVML fakes (simulated) count only for a simulated node.

    \b
    Example:
      gpuprobe preflight || exit $?               # in a job script
      gpuprobe preflight --stages cuda,buffer --strict --json
      gpuprobe preflight --fingerprint node17.json
      gpuprobe preflight --live cuda --live-timeout 20
    """
    from gpuprobe.store import preflight as pf

    if live_timeout <= 0:
        raise click.BadParameter(f"must be more than 0 seconds, got {live_timeout:g}", param_hint="--live-timeout")
    try:
        from gpuprobe import paths

        folders = [paths.resolve_results_dir(r).path for r in results] or [paths.resolve_results_dir(None).path]
        fp, _source = pf.node_fingerprint(fingerprint_file)
        verdict = pf.evaluate(folders, fp, _split(stages), strict=strict, live=_split(live),
                              live_timeout=live_timeout, cache=not no_cache).to_dict()
    except pf.PreflightError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(verdict, indent=2, default=str))
    else:
        click.echo(_human(verdict))
    ctx.exit(verdict["exit_code"])


def _run_preflight(argv: list[str]) -> int:
    """``gpuprobe preflight ...`` with the same one-line error rules as :func:`gpuprobe.cli.main.main`."""
    try:
        code = preflight.main(args=argv, prog_name="gpuprobe preflight", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"Error: {exc.format_message()} (see 'gpuprobe preflight --help')", err=True)
        return exitcodes.USAGE
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code if exc.exit_code != 1 else exitcodes.USAGE
    except (OSError, ValueError) as exc:  # results folder, corrupt index file, bad fingerprint
        click.echo(f"Error: {exc}", err=True)
        return exitcodes.USAGE
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("Interrupted.", err=True)
        return exitcodes.INTERRUPTED
    return code if isinstance(code, int) else exitcodes.OK


def console_main() -> None:
    """The ``gpuprobe`` script: ``preflight`` on the lean path, everything else through the full CLI."""
    argv = sys.argv[1:]
    if argv[:1] == ["preflight"]:
        sys.exit(_run_preflight(argv[1:]))
    from gpuprobe.cli.main import main

    main()
