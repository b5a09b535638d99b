"""``gpuprobe run``: the staged probes on this node."""

from __future__ import annotations

from pathlib import Path

import click

from gpuprobe import exitcodes
from gpuprobe.cli.common import SECONDS, command, emit_json, json_option, results_option, set_option, stage_option
from gpuprobe.run import options as run_options

RUN_EXIT_CODES = (
    (exitcodes.OK, "every stage passed (skips included)"),
    exitcodes.FAILED, exitcodes.USAGE, exitcodes.HANG,
    (exitcodes.INTERRUPTED, "interrupted (Ctrl-C; 143 for SIGTERM): the result keeps the finished stages"),
)


@command(exit_codes=RUN_EXIT_CODES)
@stage_option("Run up to this stage (the stages it requires first). Default: every stage.")
@click.option("--only", is_flag=True, help="Run just --stage, without the stages it requires.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the stages run. auto: the GPU when NVML sees one, else the CPU.")
@click.option("--gpus", default=None, help="GPU indices for the GPU stages, e.g. 0,1 or all (each must exist on this "
                                         "node). Default: 0.")
@click.option("--timeout", type=SECONDS, default=None,
              help="Seconds each stage may take, finite and more than 0 (default: each stage's own, 30-600 s).")
@click.option("--stall-window", type=SECONDS, default=None,
              help="At a timeout, no mark for this long means 'hang', else 'slow'. Default: min(10, timeout/2).")
@set_option("A stage option, e.g. --set alloc.cpu_max_mib=256 (repeatable; see docs/PROBES.md). KEY=VALUE sets it in "
            "every stage that has KEY; STAGE.KEY wins over KEY, and --set over a flag.")
@click.option("--no-fork-server", is_flag=True, help="Start each stage in a fresh interpreter (slower).")
@click.option("--keep-scratch", is_flag=True, help="Keep the raw event and log files of the stages.")
@run_options.probe_flags
@results_option(multiple=False)
@json_option
@click.pass_context
def run(ctx: click.Context, stage: str | None, only: bool, device: str, gpus: str | None, timeout: float | None,
        stall_window: float | None, options: tuple[str, ...], no_fork_server: bool, keep_scratch: bool,
        results: Path | None, as_json: bool, **probe_flags: object) -> None:
    """Run the staged probes, each in its own process with a timeout.

    Stages, in order: nvml, cuda, alloc, sim, buffer, train. --stage X runs the stages
    X requires too; --only --stage X runs X alone. Without a GPU, every stage that can
    run on the CPU does, and the GPU-only ones report skip with the reason.

    On a timeout the stage's stacks (py-spy, native too; faulthandler when py-spy cannot
    attach), a process and a GPU snapshot are recorded before the stage and everything
    it started is killed. The result file is written after every stage (to a fallback
    folder, named on stderr, when the results folder is full or gone).

    Checked before anything is written or started (exit 2, one line): --set keys and
    values against each stage's options, GPUPROBE_FAILPOINTS, --timeout, --gpus (each must
    exist here), and the device (--device cuda needs a GPU and a CUDA build of torch).
    A run with a failpoint is recorded as a drill; with an NVML fake, --free-memory-gb or
    --emulate-gpu as simulated; never as probed.

    \b
    Example:
      gpuprobe run --stage buffer
      gpuprobe run --device cpu --only --stage alloc --timeout 5
      GPUPROBE_FAILPOINTS='alloc.alloc@64MiB=hang' gpuprobe run --only --stage alloc --timeout 5
      gpuprobe run --stage buffer --storage auto --pin-memory --prefetch 12 --free-memory-gb 48
    """
    from gpuprobe import paths
    from gpuprobe.cli.console import LiveProgress, print_run, stderr_console, stdout_console
    from gpuprobe.node import fingerprint
    from gpuprobe.run import checks, stages
    from gpuprobe.run.runner import RunConfig, Runner

    # every check before anything is written: a bad request is one line and exit 2, and
    # leaves no result file (nor a results folder) behind
    if only and stage is None:
        raise click.UsageError("--only needs --stage")
    planned = stages.plan(stage, only, timeout=timeout, stall_window=stall_window)
    stage_options = run_options.resolve(options, probe_flags)
    checks.failpoint_spec()
    node = fingerprint.take()
    gpu_list = checks.gpus(gpus, node)
    checks.device(device, node, planned)
    target = paths.resolve_results_dir(results)
    paths.ensure_writable(target)
    cfg = RunConfig(stages=planned, results_dir=target.path, device=device, gpus=gpu_list,
                    fork_server=not no_fork_server, options=stage_options, keep_scratch=keep_scratch)
    err = stderr_console()
    _exit_cleanly_on_sigterm()
    with LiveProgress(err, cfg.stages) as live:
        runner = Runner(cfg, on_event=live.event, on_stage_done=live.stage_done, fingerprint=node)
        if runner.device == "cpu" and device == "auto":
            live.note(runner.device_reason, style="yellow")
        live.note(f"run {runner.run_id}: {', '.join(s.name for s in cfg.stages)} -> {runner.path}", style="dim")
        doc = runner.run()
    if as_json:
        emit_json(doc)
    else:
        print_run(stdout_console(), doc, str(runner.path))
    moved = runner.writer.message()   # disk full, folder gone: where the result went instead
    if moved:
        click.echo(f"Warning: {moved}", err=True)
    ctx.exit(doc["summary"]["exit_code"])


class Terminated(SystemExit):
    """SIGTERM (scancel, a job's time limit): unwind so the stage in flight is killed too."""


def _exit_cleanly_on_sigterm() -> None:
    import signal

    def handler(signum: int, frame: object) -> None:
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
