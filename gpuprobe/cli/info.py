"""``gpuprobe info``: this node's fingerprint."""

from __future__ import annotations

from gpuprobe.cli.common import command, emit_json, json_option


@command(exit_codes=(0,))
@json_option
def info(as_json: bool) -> None:
    """This node's fingerprint: GPUs, driver, CUDA, torch, dflex, CPU, OS.

    Taken through NVML and package metadata only: no torch import, no CUDA context.

    \b
    Example:
      gpuprobe info
      gpuprobe info --json > node.json
    """
    from gpuprobe.cli.kernels import info_section
    from gpuprobe.node import fingerprint

    fp = fingerprint.take().to_dict()
    kernels, kernels_text = info_section(fp)   # will the stack's CUDA binaries run on this GPU
    if as_json:
        emit_json({**fp, "kernels": kernels})
        return
    import click

    from gpuprobe.cli.console import print_fingerprint, stdout_console

    from gpuprobe.cli.plain import wrap

    print_fingerprint(stdout_console(), fp)
    for line in kernels_text.splitlines():   # wrapped between words, like the rest of the view
        click.echo("\n".join(wrap(line, hang="  ")) if line.strip() else line)
