"""``gpuprobe sweep``: one probe per node through SLURM, then what works where."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from gpuprobe import exitcodes
from gpuprobe.cli.common import SECONDS, command, json_option, parse_stage_options, results_option, set_option, stage_option

log = logging.getLogger(__name__)


def _matrix_for(results: Path, nodes: list[str]) -> dict | None:
    """The matrix's node view of these hosts."""
    from gpuprobe.store import matrix

    return matrix.build([results], view="node", flt=matrix.MatrixFilter(hosts=tuple(nodes)))


SWEEP_EXIT_CODES = (
    (exitcodes.OK, "every node passed"),
    (exitcodes.FAILED, "a node failed, crashed or wrote no result"),
    (exitcodes.USAGE, "no sbatch, unknown partition or bad options"),
    (exitcodes.HANG, "a node hung"),
    (exitcodes.TEMPFAIL, "the wait timed out (the job keeps running; results keep arriving)"),
)


@command(exit_codes=SWEEP_EXIT_CODES)
@click.option("--partition", "-p", default=None, help="SLURM partition. Default: the cluster's default partition.")
@click.option("--nodes", "-N", type=click.IntRange(min=1), default=None,
              help="Probe this many nodes (any free ones). Default: 1.")
@click.option("--nodelist", "-w", default=None, metavar="LIST",
              help="Probe exactly these nodes, SLURM host list syntax: gpu[01-04],gpu07.")
@stage_option("Run up to this stage on every node (gpuprobe run --stage). Default: every stage.")
@click.option("--only", is_flag=True, help="Run just --stage, without the stages before it.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Passed to gpuprobe run on each node.")
@click.option("--timeout", type=SECONDS, default=None,
              help="Seconds each stage may take on each node (gpuprobe run --timeout).")
@set_option("A stage option passed to gpuprobe run, e.g. --set alloc.cpu_max_mib=64 (repeatable).")
@click.option("-t", "--time", "time_limit", default="00:30:00", show_default=True,
              help="sbatch --time for the sweep job.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=None,
              help="sbatch --gpus-per-node (ask for GPUs on GPU partitions).")
@click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="ARG",
              help="Extra sbatch option, e.g. --sbatch-arg=--account=proj (repeatable).")
@results_option(multiple=False, help="Shared results folder every node writes into (made absolute). "
                                     "Default: $GPUPROBE_RESULTS, else the user data folder (~/.local/share/gpuprobe/results).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Job and per-node logs. Default: RESULTS/.sweep-logs (shared, like the results).")
@click.option("--no-wait", is_flag=True, help="Submit, print the job id, and return.")
@click.option("--wait-timeout", type=SECONDS, default=1800, show_default=True,
              help="Seconds to wait for the job (queueing included); then exit 75 with what arrived.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between squeue polls.")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script and submit nothing.")
@json_option
@click.pass_context
def sweep(ctx: click.Context, partition: str | None, nodes: int | None, nodelist: str | None, stage: str | None,
          only: bool, device: str, timeout: float | None, options: tuple[str, ...], time_limit: str,
          gpus_per_node: int | None, sbatch_args: tuple[str, ...], results: Path | None, log_dir: Path | None,
          no_wait: bool, wait_timeout: float, poll_s: float, dry_run: bool, as_json: bool) -> None:
    """Probe nodes through SLURM: one `gpuprobe run` per node, into one shared results folder.

    One batch job allocates the nodes and srun starts one probe task on each (a job
    array cannot promise one task per node). Every probe writes its result file into
    --results, which must be on a filesystem all nodes share. Then the sweep waits
    (polling squeue, bounded by --wait-timeout) and prints one row per node and the
    matrix of those nodes.

    \b
    Example:
      gpuprobe sweep --partition l40s --nodes 4 --stage buffer --results /shared/gpuprobe
      gpuprobe sweep -p h200 -w 'gpu[01-03]' --stage cuda --gpus-per-node 1
      gpuprobe sweep -p debug -t 10:00 --device cpu --only --stage alloc --set alloc.cpu_max_mib=64 --dry-run
    """
    from gpuprobe import paths
    from gpuprobe.run import sweep as sw

    if only and stage is None:
        raise click.UsageError("--only needs --stage")
    if nodes is not None and nodelist is not None:
        raise click.UsageError("give --nodes or --nodelist, not both")
    parse_stage_options(options)   # a bad --set fails here, in one line, not on every node
    target = paths.resolve_results_dir(results)
    results_dir = target.path
    spec = sw.SweepSpec(results_dir=results_dir, log_dir=sw.absolute(log_dir) if log_dir else sw.default_log_dir(results_dir),
                        partition=partition, nodes=nodes, nodelist=nodelist, stage=stage, only=only, device=device,
                        timeout=timeout, options=options, time_limit=time_limit, gpus_per_node=gpus_per_node,
                        sbatch_args=sbatch_args, checkout=paths.checkout_root())
    try:
        expected = spec.expected_nodes
        if dry_run:
            click.echo(sw.sbatch_script(spec), nl=False)
            return
        sw.check_slurm(spec)
        paths.ensure_writable(target)
        job_id, script = sw.submit(spec)
    except sw.SweepError as exc:
        raise click.ClickException(str(exc)) from None
    from gpuprobe.cli.console import line, stderr_console

    err = stderr_console()
    line(err, f"sweep {spec.sweep_id}: job {job_id}, {spec.node_count} node(s) -> {results_dir}", "dim")
    if no_wait:
        data = {"sweep_id": spec.sweep_id, "job_id": job_id, "script": str(script), "results": str(results_dir),
                "log_dir": str(spec.log_dir)}
        click.echo(_dump(data) if as_json else job_id)
        return

    started = time.monotonic()
    last: list[str] = []

    def progress(state: str, where: str, found: int, want: int) -> None:
        text = f"job {job_id}: {state} {where} - results {found}/{want} ({time.monotonic() - started:.0f} s)"
        if text.split(" (")[0] != (last[0] if last else ""):   # one line per change, not per poll
            line(err, text, "dim")
            last[:] = [text.split(" (")[0]]

    try:
        final = sw.wait(job_id, spec, timeout=wait_timeout, poll_s=poll_s, on_progress=progress)
    except sw.SweepError as exc:
        raise click.ClickException(str(exc)) from None
    rows = sw.outcomes(sw.collect(results_dir, spec.sweep_id), expected)
    code = sw.sweep_exit_code(rows, final)
    matrix = _matrix_for(results_dir, [r.node for r in rows]) if rows else None
    data = {"sweep_id": spec.sweep_id, "job_id": job_id, "job_state": final, "results": str(results_dir),
            "log_dir": str(spec.log_dir), "nodes": [r.to_dict() for r in rows], "exit_code": code,
            "matrix": matrix,
            "matrix_note": None if matrix is not None else "no node wrote a result: no matrix"}
    if as_json:
        click.echo(_dump(data))
    else:
        _print_human(data, final, job_id, spec.log_dir)
    ctx.exit(code)


def _print_human(data: dict, final: str, job_id: str, log_dir: Path) -> None:
    from gpuprobe.cli.console import line, lines, print_matrix, stdout_console

    out = stdout_console()
    line(out, "sweep: one row per node", "bold")
    for r in data["nodes"]:
        stages = ", ".join(f"{k} {v}" for k, v in r["stages"].items()) or "-"
        lines(out, f"{r['node']}: {r['status']} (exit {'-' if r['exit_code'] is None else r['exit_code']}); "
                   f"{stages}; gpus {', '.join(r['gpus']) or 'none'}; run {r['run_id'] or '-'}", "  ", "    ")
    if data["matrix"] is not None:
        print_matrix(out, data["matrix"])
    else:
        lines(out, data["matrix_note"], style="yellow")
    if final.startswith("TIMEOUT"):
        lines(out, f"gave up waiting: job {job_id} is still {final[8:-1]}; results keep arriving in {data['results']}",
              style="yellow")
    if any(r["exit_code"] is None for r in data["nodes"]) or not data["nodes"]:
        lines(out, f"nodes without a result: see the logs in {log_dir}", style="yellow")
    lines(out, f"sweep {data['sweep_id']}: job {job_id} {final}, exit {data['exit_code']}")


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, default=str)
