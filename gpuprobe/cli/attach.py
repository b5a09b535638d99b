"""``gpuprobe attach``: the forensics of a probe hang, for a job that is running now."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gpuprobe import exitcodes
from gpuprobe.cli.common import command


def verdict_lines(stage: dict, path: Path | None) -> list[str]:
    """The human view of one observed ``job`` stage (also printed by ``watch`` at a stall)."""
    from gpuprobe import textsafe
    from gpuprobe.redact import redact_argv

    stage = textsafe.tree(stage)   # the job's text is untrusted: no escape sequences
    data = stage.get("data") or {}
    ev = stage.get("evidence") or {}
    cpu = data.get("cpu") or {}
    streams = data.get("streams") or {}
    gpu = ev.get("gpu") or {}
    lines = [f"job {', '.join(map(str, data.get('roots') or []))}: {stage.get('reason')}"]
    if data.get("command"):
        lines.append(f"  command: {' '.join(redact_argv(data['command']))[:300]}")
    lines.append(f"  stdout/stderr: {streams.get('summary')}")
    lines.append(f"  CPU: {cpu.get('summary')}")
    if gpu.get("available"):
        mem = gpu.get("job_memory_bytes") or 0
        lines.append(f"  GPU: {len(gpu.get('gpus') or [])} visible; the job holds {mem / 2**20:.0f} MiB")
    else:
        lines.append(f"  GPU: NVML not available ({gpu.get('reason')})")
    stacks = (ev.get("stacks") or {})
    lines.append(f"  stacks: {stacks.get('method') or 'none (' + '; '.join(a.get('error', '') for a in stacks.get('attempts') or []) + ')'}")
    for sig in stage.get("signatures") or []:
        lines.append(f"  known issue [{sig['id']}]: {sig['title']}")
        if sig.get("detail"):
            lines.append(f"    {sig['detail']}")
        lines.append(f"    remedy: {sig['remedy']}")
    if path is not None:
        lines.append(f"  evidence: {path}")
    return lines


@command("attach", exit_codes=((exitcodes.OK, "the job is progressing"), exitcodes.USAGE,
                              (exitcodes.HANG, "the job is stuck or spinning")))
@click.argument("pid", type=int, required=False)
@click.option("--job", "job_id", metavar="JOBID", default=None, help="A SLURM job: its processes on this node.")
@click.option("--step", default=None, metavar="S", help="With --job: one step (batch, 0, 1, ...).")
@click.option("--samples", type=click.IntRange(1, 1000), default=2, show_default=True,
              help="Stack dumps to take; 2 or more tell stuck, spinning and progressing apart.")
@click.option("--interval", type=click.FloatRange(0.05, 3600), default=0.5, show_default=True,
              help="Seconds between dumps.")
@click.option("--results", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder. Default: $GPUPROBE_RESULTS, else the user data folder (~/.local/share/gpuprobe/results).")
@click.option("--json", "as_json", is_flag=True, help="Print the result document as JSON.")
@click.pass_context
def attach(ctx: click.Context, pid: int | None, job_id: str | None, step: str | None, samples: int, interval: float,
           results: Path | None, as_json: bool) -> None:
    """Look inside a running job without stopping or killing it.

    Takes py-spy stacks (native frames too) of the whole process tree, a process and
    an NVML snapshot (with the job's GPU memory and utilisation), reads where its stdout
    and stderr go and how far behind its log may be, the tail of its output file and its
    CPU allotment, matches known issues, and writes a result file (stage 'job',
    provenance 'observed') that matrix and preflight count. py-spy pauses a process for
    a moment to read it; every process of the tree is sent SIGCONT afterwards.

    Verdict over the samples: stuck (same stacks, no CPU), spinning (same stacks, busy
    CPU) or progressing (stacks or output changed).

    \b
    Example:
      gpuprobe attach 12345
      gpuprobe attach --job 4711 --samples 5 --interval 2
      gpuprobe attach --job 4711 --step batch --json
    """
    from gpuprobe import paths
    from gpuprobe.jobs import observe, slurm

    if (pid is None) == (job_id is None):
        raise click.UsageError("give a PID or --job JOBID (one of them)")
    if step is not None and job_id is None:
        raise click.UsageError("--step needs --job")
    target = paths.resolve_results_dir(results)
    paths.ensure_writable(target)
    job: dict = {}
    if job_id is not None:
        try:
            pids, job = slurm.job_pids(job_id, step)
        except slurm.JobNotFound as exc:
            raise click.ClickException(str(exc)) from None
    else:
        pids = [pid]
    try:
        res, fp = observe.observe(pids, samples=samples, interval=interval, job=job)
    except observe.NoSuchProcess as exc:
        raise click.ClickException(str(exc)) from None
    doc = observe.document(res, fp)
    path = observe.save(doc, target.path)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        click.echo("\n".join(verdict_lines(doc["stages"][0], path)))
    ctx.exit(exitcodes.HANG if res.status == "hang" else exitcodes.OK)
