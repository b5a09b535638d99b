"""``gpuprobe kernels``: will this stack's CUDA binaries run on this GPU, or on a named one?"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from gpuprobe import exitcodes
from gpuprobe.cli.common import command, results_option

VERDICT_COLOUR = {"native": "green", "jit": "yellow", "no-image": "red", "runtime-newer-than-driver": "red",
                  "ptx-newer-than-driver": "red"}


def _short(path: str, roots: list[str]) -> str:
    for root in roots:
        if root and path.startswith(root.rstrip("/") + "/"):
            return path[len(root.rstrip("/")) + 1:]
    return path


def _human(report, show_all: bool) -> str:
    from gpuprobe.kernels import discover

    t = report.target
    lines = [click.style(f"kernels: {report.verdict}", fg=VERDICT_COLOUR[report.verdict], bold=True)
             + f"  for {t.name} (cc {t.cc[0]}.{t.cc[1]})"
             + (f", driver {t.driver} (CUDA {t.driver_cuda or '?'})" if t.driver else ", driver not known: architecture only")
             + f"  [{t.source}]"]
    env = report.env
    if env.torch_version:
        lines.append(f"  torch {env.torch_version} ({'CUDA ' + env.torch_cuda if env.torch_cuda else 'CPU build'})")
    roots = [str(p) for p in discover.site_dirs()]
    counted = [b for b in report.binaries if b.candidate.in_stack]
    shown = report.binaries if show_all else [b for b in counted if b.verdict != "native"]
    for b in shown:
        mark = click.style(f"{b.verdict:<26}", fg=VERDICT_COLOUR[b.verdict])
        where = _short(b.path, roots) + ("" if b.candidate.in_stack else "  (not loaded by this stack)")
        lines.append(f"  {mark} {where}")
        lines.append(f"  {'':<26} {b.reason}")
    native = [b for b in counted if b.verdict == "native"]
    if native and not show_all:
        lines.append(f"  {len(native)} more binar{'ies' if len(native) != 1 else 'y'} run natively (--all lists them)")
    if not counted:
        lines.append("  no CUDA binaries in this stack (a CPU build of torch, no dflex kernels, no extensions)")
    lines.append(f"  {report.cache.describe()}")
    if report.remedies:
        lines.append("  what to do:")
        lines += [f"    - {r}" for r in report.remedies]
    n = len(report.binaries)
    lines.append(f"  ({n} CUDA binar{'ies' if n != 1 else 'y'} judged; {report.scanned} files read, {report.cache_hits} from the scan cache)")
    return "\n".join(lines)


@command(exit_codes=(exitcodes.OK, exitcodes.USAGE, exitcodes.INCOMPATIBLE))
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--gpu", "gpu", default=None, metavar="MODEL", help="Judge for this GPU model (L40S, H200, A100, ...).")
@click.option("--cc", "cc", default=None, metavar="X.Y", help="Judge for this compute capability (e.g. 8.9).")
@click.option("--driver", "driver", default=None, metavar="VERSION",
              help="Judge for this driver version (e.g. 575.57.08): it decides the newest CUDA runtime and PTX that load.")
@click.option("--fingerprint", "fingerprint_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Judge for the GPU and driver of this fingerprint (gpuprobe info --json) or result file.")
@click.option("--no-env", is_flag=True, help="Only the PATHS given, not this environment's stack.")
@click.option("--all", "show_all", is_flag=True, help="List every binary, native ones and those the stack does not load too.")
@click.option("--no-cache", is_flag=True, help="Read every binary again instead of using the scan cache.")
@click.option("--save", is_flag=True, help="Also store the verdict as a result (stage 'kernels', provenance 'static') "
                                           "so the matrix shows it.")
@results_option(multiple=False, help="Results folder for --save. Default: $GPUPROBE_RESULTS, else the user data "
                                     "folder (~/.local/share/gpuprobe/results).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON contract (docs/KERNELS.md) instead of the human view.")
@click.pass_context
def kernels(ctx: click.Context, paths: tuple[Path, ...], gpu: str | None, cc: str | None, driver: str | None,
            fingerprint_file: Path | None, no_env: bool, show_all: bool, no_cache: bool, save: bool,
            results: Path | None, as_json: bool) -> None:
    """Will this stack's CUDA binaries run on this GPU? Checked from the binaries, without running them.

    Finds torch's libraries, the nvidia-* wheels, dflex's built kernels, torch extensions,
    other packages' libraries with device code, and PATHS; reads the device code each carries
    (SASS architectures, PTX and its ISA version: ELF headers only, no CUDA, safe on a login
    node); and judges each for the GPU: this node's (NVML), or one named with --gpu, --cc,
    --driver or --fingerprint.

    \b
    Verdicts, per binary and for the stack (the worst):
      native                     SASS for this GPU: runs as is
      jit                        PTX only: the driver compiles it at first load (minutes
                                 at full CPU for a big library), then caches it
      ptx-newer-than-driver      its PTX is newer than this driver can compile
      no-image                   nothing for this GPU ("no kernel image is available")
      runtime-newer-than-driver  built for a newer CUDA than the driver: CUDA init fails

    Exit 0 when the stack runs (native, jit), 4 when it cannot.

    \b
    Example:
      gpuprobe kernels                                  # this node's GPU and stack
      gpuprobe kernels --gpu L40S --driver 575.57.08    # would it run on the L40S nodes?
      gpuprobe kernels --cc 8.9 --json build/*.so       # these libraries, as JSON
      gpuprobe kernels --fingerprint node17.json --save
    """
    from gpuprobe.kernels import check

    fp, source = None, "NVML"
    if fingerprint_file is not None:
        from gpuprobe.node import fingerprint as fpmod

        try:
            fp = fpmod.load(fingerprint_file).to_dict()
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot use {fingerprint_file}: {getattr(exc, 'strerror', None) or exc}",
                                     param_hint="--fingerprint") from None
        source = f"fingerprint {fingerprint_file}"
    elif not (gpu or cc):
        from gpuprobe.node import fingerprint as fpmod

        fp = fpmod.take().to_dict()
    try:
        target = check.target_from(gpu=gpu, cc=cc, driver=driver, fingerprint=fp, fingerprint_source=source)
        report = check.check(target, [os.fspath(p) for p in paths], include_env=not no_env, use_cache=not no_cache)
    except check.CheckError as exc:
        raise click.UsageError(str(exc)) from None
    if save:
        from gpuprobe.kernels import record

        saved = record.save(report, fp, results)
        click.echo(f"stored: {saved}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_contract(), indent=2))
    else:
        click.echo(_human(report, show_all))
    ctx.exit(exitcodes.INCOMPATIBLE if report.cannot_run else exitcodes.OK)


def info_section(fp: dict) -> tuple[dict | None, str]:
    """``gpuprobe info``'s kernels section: the JSON contract for this node's GPU (None without one), and text."""
    from gpuprobe.kernels import check, gate

    if not gate.gpu_known(fp):
        return None, "kernels: no GPU here to judge the stack for (gpuprobe kernels --gpu MODEL judges for one)"
    try:
        report = check.check(check.target_from(fingerprint=fp), measure_cache_use=False)
    except (check.CheckError, OSError) as exc:
        return None, f"kernels: not checked ({exc})"
    lines = [f"kernels: {report.summary_line()} (gpuprobe kernels for every binary)"]
    lines += [f"  - {r}" for r in report.remedies]
    return report.to_contract(), "\n".join(lines)
