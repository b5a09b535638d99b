"""The ``gpuprobe`` command line (click). Commands parse, call library code, and turn
the library's errors into one-line messages with the documented exit codes."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from gpuprobe import __version__, exitcodes

from gpuprobe.run import options as run_options
from gpuprobe.run.stages import STAGE_NAMES

def results_option(f):
    return click.option(
        "--results", "results", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Results folder. Default: $GPUPROBE_RESULTS, else reports/ of the checkout, else the user data folder.",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the human view.")(f)


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class _ExitCodesHelp:
    """Every command's --help ends with the exit codes a script can branch on."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Exit codes"):
            formatter.write_dl(exitcodes.HELP_ROWS)


class Command(_ExitCodesHelp, click.Command):
    pass


class Group(_ExitCodesHelp, click.Group):
    command_class = Command


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gpuprobe")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """GPU compatibility probe for training stacks.

    Runs staged probes (NVML, CUDA init, allocations, the simulator, the replay Buffer,
    a training step), each in its own process with a timeout; a hang yields stacks
    (Python and native), the last progress mark, CPU and GPU state, and a match
    against known causes.

    \b
    Example:
      gpuprobe info
      gpuprobe run --stage buffer
      gpuprobe show latest
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@json_option
def info(as_json: bool) -> None:
    """This node's fingerprint: GPUs, driver, CUDA, torch, dflex, CPU, OS.

    Taken through NVML and package metadata only: no torch import, no CUDA context.

    \b
    Example:
      gpuprobe info --json > node.json
    """
    from gpuprobe.node import fingerprint
    from gpuprobe.cli.console import print_fingerprint

    from gpuprobe.cli.kernels import info_section

    fp = fingerprint.take().to_dict()
    kernels, kernels_text = info_section(fp)   # will the stack's CUDA binaries run on this GPU
    if as_json:
        emit_json({**fp, "kernels": kernels})
    else:
        print_fingerprint(Console(), fp)
        click.echo(kernels_text)


def _parse_gpus(value: str | None) -> list[int] | None:
    if value is None or value == "all":
        return None if value is None else _all_gpus()
    try:
        gpus = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of GPU indices like 0,1 or 'all'", param_hint="--gpus")
    if not gpus or any(g < 0 for g in gpus):
        raise click.BadParameter(f"{value!r} is not a list of GPU indices like 0,1 or 'all'", param_hint="--gpus")
    return gpus


def _all_gpus() -> list[int]:
    from gpuprobe.node import fingerprint

    return [g["index"] for g in fingerprint.take().gpus] or [0]


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be more than 0 seconds, got {value:g}")
    return value


def _parse_options(pairs: tuple[str, ...]) -> dict:
    """``-o buffer.capacity=1e5`` -> {"buffer": {"capacity": 100000.0}}; ``-o key=v`` applies to all."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-o/--option")
        stage, dot, name = key.rpartition(".")
        if stage and stage not in STAGE_NAMES:
            raise click.BadParameter(f"unknown stage {stage!r} in {pair!r}", param_hint="-o/--option")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(stage or "*", {})[name] = value
    return out


@cli.command()
@click.option("--stage", type=click.Choice(STAGE_NAMES), default=None,
              help="Run up to this stage (its prerequisites first). Default: every stage.")
@click.option("--only", is_flag=True, help="Run just --stage, without the stages before it.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the stages run. auto: the GPU when NVML sees one, else the CPU.")
@click.option("--gpus", default=None, help="GPU indices for the GPU stages, e.g. 0,1 or all. Default: 0.")
@click.option("--timeout", type=float, default=None, callback=_positive,
              help="Seconds each stage may take (default: each stage's own, 30-600 s).")
@click.option("--stall-window", type=float, default=None, callback=_positive,
              help="At a timeout, no mark for this long means 'hang', else 'slow'. Default: min(10, timeout/2).")
@click.option("-o", "--option", "options", multiple=True, metavar="[STAGE.]KEY=VALUE",
              help="A stage option, e.g. -o alloc.cpu_max_mib=256 (repeatable).")
@click.option("--no-fork-server", is_flag=True, help="Start each stage in a fresh interpreter (slower).")
@click.option("--keep-scratch", is_flag=True, help="Keep the raw event and log files of the stages.")
@run_options.probe_flags
@results_option
@json_option
@click.pass_context
def run(ctx: click.Context, stage: str | None, only: bool, device: str, gpus: str | None, timeout: float | None,
        stall_window: float | None, options: tuple[str, ...], no_fork_server: bool, keep_scratch: bool,
        results: Path | None, as_json: bool, **probe_flags: object) -> None:
    """Run the staged probes, each in its own process with a timeout.

    Stages, in order: nvml, cuda, alloc, sim, buffer, train. --stage X runs the stages
    before X too; --only --stage X runs X alone. Without a GPU, every stage that can
    run on the CPU does, and the GPU-only ones report skip with the reason.

    On a timeout the stage's stacks (py-spy, native too; faulthandler when py-spy cannot
    attach), a process and a GPU snapshot are recorded before the stage and everything
    it started is killed. The result file is written after every stage.

    \b
    Example:
      gpuprobe run --stage buffer
      gpuprobe run --device cpu --only --stage alloc --timeout 5
      GPUPROBE_FAILPOINTS='alloc.alloc@64MiB=hang' gpuprobe run --only --stage alloc --timeout 5
      gpuprobe run --stage buffer --storage auto --pin-memory --prefetch 12 --free-memory-gb 48
    """
    from gpuprobe import paths
    from gpuprobe.run import stages
    from gpuprobe.cli.console import LiveProgress, print_run
    from gpuprobe.run.runner import RunConfig, Runner

    if only and stage is None:
        raise click.UsageError("--only needs --stage")
    gpu_list = _parse_gpus(gpus)
    stage_options = run_options.apply(_parse_options(options), probe_flags)
    target = paths.resolve_results_dir(results)
    paths.ensure_writable(target)
    cfg = RunConfig(stages=stages.plan(stage, only), results_dir=target.path, device=device, gpus=gpu_list,
                    timeout=timeout, stall_window=stall_window, fork_server=not no_fork_server,
                    options=stage_options, keep_scratch=keep_scratch)
    err = Console(stderr=True)
    _exit_cleanly_on_sigterm()
    with LiveProgress(err, enabled=True) as live:
        runner = Runner(cfg, on_event=live.event, on_stage_done=live.stage_done)
        if runner.device == "cpu" and device == "auto":
            err.print(f"[yellow]{runner.device_reason}[/]")
        err.print(f"[dim]run {runner.run_id}: {', '.join(s.name for s in cfg.stages)} -> {runner.path}[/]")
        doc = runner.run()
    if as_json:
        emit_json(doc)
    else:
        print_run(Console(), doc, str(runner.path))
    ctx.exit(doc["summary"]["exit_code"])


class Terminated(SystemExit):
    """SIGTERM (scancel, a job's time limit): unwind so the stage in flight is killed too."""


def _exit_cleanly_on_sigterm() -> None:
    import signal

    def handler(signum: int, frame: object) -> None:
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@cli.command()
@click.argument("run_ref", metavar="RUN", default="latest")
@click.option("--verbose", "full", is_flag=True, help="Every mark and every stage's detail.")
@results_option
@json_option
def show(run_ref: str, full: bool, results: Path | None, as_json: bool) -> None:
    """Show one stored result: RUN is a result file, a run id (or its prefix), or 'latest'.

    \b
    Example:
      gpuprobe show latest
      gpuprobe show 20261128T2310 --json
    """
    from gpuprobe import paths
    from gpuprobe.cli.console import print_run
    from gpuprobe.store.results import find_run, read_result

    folder = paths.resolve_results_dir(results).path
    try:
        path = find_run(folder, run_ref)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    doc = read_result(path)
    if as_json:
        emit_json(doc)
    else:
        print_run(Console(), doc, str(path), verbose=full)


def _register_optional_commands() -> None:
    """Commands that live in their own modules (kept out of this file to keep it small)."""
    import importlib

    for module, name in (("gpuprobe.cli.signatures", "signatures"), ("gpuprobe.cli.matrix", "matrix"),
                         ("gpuprobe.cli.preflight", "preflight"), ("gpuprobe.cli.report", "report"),
                         ("gpuprobe.cli.sweep", "sweep"),
                         ("gpuprobe.cli.attach", "attach"), ("gpuprobe.cli.watch", "watch"),
                         ("gpuprobe.cli.kernels", "kernels")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        command = getattr(mod, name)
        if not isinstance(command, _ExitCodesHelp):  # same --help ending for every command
            command.__class__ = type(type(command).__name__, (_ExitCodesHelp, type(command)), {})
        cli.add_command(command)


_register_optional_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is one line on stderr with its exit code, never a traceback."""
    from gpuprobe.paths import ResultsDirError
    from gpuprobe.store.results import ResultFileError

    try:
        code = cli.main(args=argv, prog_name="gpuprobe", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `gpuprobe`: help, not an error
        click.echo(exc.ctx.get_help())
        code = exitcodes.OK
    except click.UsageError as exc:
        hint = f" (see 'gpuprobe {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else " (see 'gpuprobe --help')"
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        code = exitcodes.USAGE
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        code = exc.exit_code if exc.exit_code != 1 else exitcodes.USAGE
    except (ResultsDirError, ResultFileError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        code = exitcodes.USAGE
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        code = exitcodes.INTERRUPTED
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = exitcodes.INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
