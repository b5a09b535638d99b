"""``gpuprobe preflight``: should a job start on this node?

Job scripts call it before every job, so its start-up is the budget: this module and
what it imports at the top stay light (click and the stage table; no rich, no torch),
and the answer is printed with plain ``click.echo``.
"""

from __future__ import annotations

from pathlib import Path

import click

from gpuprobe import exitcodes
from gpuprobe.cli.common import (SECONDS, command, emit_json, format_option, json_option, output_option,
                                 renamed_option, results_folders, results_option, stage_list, stage_option,
                                 write_output)

PREFLIGHT_EXIT_CODES = (
    (exitcodes.OK, "ok; also no-evidence without --strict"),
    exitcodes.USAGE,
    (exitcodes.INCOMPATIBLE, "known-incompatible: some stage's latest run here went bad"),
    (exitcodes.TEMPFAIL, "no-evidence with --strict, or transient (a lost GPU): retry elsewhere"),
)


@command(exit_codes=PREFLIGHT_EXIT_CODES)
@stage_option("Stage to judge (job: the user's own jobs, judged when there is evidence). Default: every stage.",
              multiple=True, extra=("job",))
@renamed_option("--stages", "--stage (repeatable, or comma-separated)")
@click.option("--live", "live", multiple=True, metavar="STAGE", callback=stage_list,
              help="Also probe this stage now (tight timeout; repeatable or comma-separated); its result is "
                   "the newest evidence.")
@click.option("--live-timeout", type=SECONDS, default=30.0, show_default=True, help="Seconds per live stage.")
@click.option("--strict", is_flag=True, help="No evidence for a requested stage exits 75 instead of 0.")
@click.option("--fingerprint", "fingerprint_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Judge the node of this fingerprint (`gpuprobe info --json`) or result file instead of this one. "
                   "Also: $GPUPROBE_PREFLIGHT_FINGERPRINT.")
@results_option(multiple=True)
@click.option("--no-cache", is_flag=True, help="Do not read or write the index (the local cache of the results): read every file.")
@format_option("text", "json", "prom")
@json_option
@output_option
@click.pass_context
def preflight(ctx: click.Context, stages: tuple[str, ...], live: tuple[str, ...], live_timeout: float, strict: bool,
              fingerprint_file: Path | None, results: tuple[Path, ...], no_cache: bool, fmt: str, as_json: bool,
              output: Path | None) -> None:
    """Should a job start on this node? Answers from the stored evidence, in well under a second.

    Fingerprints the node through NVML (no torch import), looks up the evidence for its
    stack (exact stack first, then the same GPU model) and answers, per the rule "the
    latest run of each stage wins":

    \b
      ok                  every requested stage's latest run passed
      known-incompatible  some stage's latest run hung, was slow, failed,
                          crashed or could not be killed
      no-evidence         some stage has no runs, none is bad
      transient           NVML reports a lost GPU: retry elsewhere

    Only real evidence judges a real node: fire drills (a failpoint was active) and
    simulations (NVML fake, emulated GPU) count only for a simulated node. A --results
    folder (or $GPUPROBE_RESULTS) that does not exist is an error (exit 2), not "no
    evidence". Unusable result files are skipped with one warning line each, and
    listed under "skipped" in --json. --format prom
    writes one gauge per stage verdict and the answer, for node_exporter's textfile
    collector (with -o, atomically).

    \b
    Example:
      gpuprobe preflight || exit $?               # in a job script
      gpuprobe preflight --stage cuda,buffer --strict --json
      gpuprobe preflight --fingerprint node17.json
      gpuprobe preflight --live cuda --live-timeout 20
      gpuprobe preflight --format prom -o /var/lib/node_exporter/textfile/gpuprobe_preflight.prom
    """
    from gpuprobe.store import preflight as pf

    fmt = "json" if as_json else fmt
    fp, _source = pf.node_fingerprint(fingerprint_file)
    verdict = pf.evaluate(results_folders(results), fp, list(stages) or None, strict=strict, live=list(live) or None,
                          live_timeout=live_timeout, cache=not no_cache).to_dict()
    for item in verdict["skipped"]:   # one line each: the file and why
        click.echo(f"warning: skipped {item['file']}: {item['reason']}", err=True)
    if fmt == "prom":
        from gpuprobe.store.prom import preflight_metrics

        text = preflight_metrics(verdict)
    elif fmt == "json":
        text = None
    else:
        from gpuprobe.cli.plain import preflight_view

        text = preflight_view(verdict)
    if output is not None:
        import json

        write_output(output, text if text is not None else json.dumps(verdict, indent=2, default=str) + "\n")
    elif text is None:
        emit_json(verdict)
    else:
        click.echo(text, nl=not text.endswith("\n"))
    ctx.exit(verdict["exit_code"])

