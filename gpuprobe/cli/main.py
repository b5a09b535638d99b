"""The ``gpuprobe`` command line: one click group that loads each command's module only
when that command runs, and one :func:`main` that turns errors into exit codes.

``gpuprobe`` (the script), ``python -m gpuprobe`` and ``python -m gpuprobe.cli`` all call
:func:`main`. Loading lazily is what keeps ``gpuprobe preflight`` (run before every job)
fast: it never imports rich, torch or the other commands.

Adding a command is one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys

import click

from gpuprobe import __version__, exitcodes
from gpuprobe.cli.common import CONTEXT, MEANINGS

# name -> "module:attribute" of its click command, in the order --help lists them
COMMANDS: dict[str, str] = {
    "info": "gpuprobe.cli.info:info",
    "run": "gpuprobe.cli.run:run",
    "show": "gpuprobe.cli.show:show",
    "signatures": "gpuprobe.cli.signatures:signatures",
    "matrix": "gpuprobe.cli.matrix:matrix",
    "preflight": "gpuprobe.cli.preflight:preflight",
    "report": "gpuprobe.cli.report:report",
    "sweep": "gpuprobe.cli.sweep:sweep",
    "attach": "gpuprobe.cli.attach:attach",
    "watch": "gpuprobe.cli.watch:watch",
    "kernels": "gpuprobe.cli.kernels:kernels",
}


class LazyGroup(click.Group):
    """Imports a command's module when the command is asked for (a run, or its --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Exit codes (each command's --help lists its own)"):
            formatter.write_dl([(str(code), text) for code, text in MEANINGS.items()])


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="gpuprobe")
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
    if verbose:
        import logging

        level = logging.WARNING - 10 * verbose
        logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


def _error(message: str) -> None:
    """One error line; it may quote a file name or a value from a result file, so no escape
    sequence or line break in it reaches the terminal."""
    from gpuprobe import textsafe

    click.echo(f"Error: {textsafe.one_line(message)}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is one line on stderr with its exit code, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="gpuprobe", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `gpuprobe`: help, not an error
        click.echo(exc.ctx.get_help())
        code = exitcodes.OK
    except click.UsageError as exc:
        hint = (f" (see 'gpuprobe {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent
                else " (see 'gpuprobe --help')")
        _error(f"{exc.format_message()}{hint}")
        code = exitcodes.USAGE
    except click.ClickException as exc:
        _error(exc.format_message())
        code = exc.exit_code if exc.exit_code != 1 else exitcodes.USAGE
    except exitcodes.UsageProblem as exc:  # the library's input errors (results folder, result file, ...)
        _error(str(exc))
        code = exc.exit_code
    except ValueError as exc:  # a bad value the library found before anything ran
        _error(str(exc))
        code = exitcodes.USAGE
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("Interrupted.", err=True)
        code = exitcodes.INTERRUPTED
    sys.exit(code if isinstance(code, int) else exitcodes.OK)


if __name__ == "__main__":
    main()
