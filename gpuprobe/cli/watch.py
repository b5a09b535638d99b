"""``gpuprobe watch -- CMD ARGS...``: run a job, pass its output through, record a stall."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gpuprobe.cli.common import command


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from gpuprobe.jobs.watch import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@command("watch", exit_codes=((0, "the job's own exit code (128+N when signal N ended it)"),
                             (2, "usage error"), (3, "--on-stall kill ended the job"),
                             (126, "CMD cannot be run"), (127, "CMD not found")),
         context_settings={"allow_interspersed_args": False})
@click.option("--stall", default="15m", show_default=True, callback=_duration, metavar="DURATION",
              help="No output and no change in the stacks for this long is a stall (90, 90s, 15m, 1h30m).")
@click.option("--on-stall", type=click.Choice(["evidence", "kill"]), default="evidence", show_default=True,
              help="evidence: record it and keep watching; kill: record it, end the job's process tree, exit 3.")
@click.option("--sample-every", default=None, callback=lambda c, p, v: None if v is None else _duration(c, p, v),
              metavar="DURATION", help="Seconds between stack looks while the job is quiet. Default: stall/3, 1-60 s.")
@click.option("--results", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder. Default: $GPUPROBE_RESULTS, else the user data folder (~/.local/share/gpuprobe/results).")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@click.pass_context
def watch(ctx: click.Context, stall: float, on_stall: str, sample_every: float | None, results: Path | None,
          cmd: tuple[str, ...]) -> None:
    """Run CMD and watch it: its output passes through unchanged, a stall leaves evidence.

    CMD runs with PYTHONUNBUFFERED=1 in a session of its own; its stdout and stderr are
    copied to ours byte for byte as they arrive. While it is quiet, its stacks are looked
    at without stopping it (py-spy --nonblocking), every stall/3 seconds. No output and
    no change for --stall is a stall: the evidence is recorded as 'gpuprobe attach'
    records it (result file, stage 'job', provenance 'observed'), and the verdict is
    printed on stderr. A job that exits 0 is recorded as a pass. SIGTERM and SIGINT are
    forwarded to the job (scancel, pre-emption); the job dies with the watcher.

    \b
    Example:
      gpuprobe watch -- python -m gpuprobe_pwm.train alg=pwm_5M env=dflex_ant
      gpuprobe watch --stall 10m --on-stall kill -- python train.py
    """
    from gpuprobe import paths
    from gpuprobe.cli.attach import verdict_lines
    from gpuprobe.jobs.watch import WatchConfig, Watcher

    target = paths.resolve_results_dir(results)
    paths.ensure_writable(target)
    argv = list(cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise click.UsageError("no command to watch (gpuprobe watch [OPTIONS] -- CMD ARGS...)")

    def say(line: str) -> None:
        os.write(2, (line + "\n").encode())

    def stalled(doc: dict, path: Path) -> None:
        for line in verdict_lines(doc["stages"][0], path):
            say(f"gpuprobe watch: {line}")

    cfg = WatchConfig(cmd=argv, results_dir=target.path, stall=stall, on_stall=on_stall, sample_every=sample_every)
    try:
        outcome = Watcher(cfg, say=say, on_stall=stalled).run()
    except (FileNotFoundError, PermissionError) as exc:
        found = isinstance(exc, PermissionError)
        err = click.ClickException(f"cannot run {argv[0]!r}: {'permission denied' if found else 'command not found'}")
        err.exit_code = 126 if found else 127   # as a shell says it
        raise err from None
    ctx.exit(outcome.exit_code)
