"""``gpuprobe signatures``: the known-issue rules this gpuprobe ships."""

from __future__ import annotations

import click

from gpuprobe.cli.common import command, emit_json, json_option


@command("signatures", exit_codes=(0,))
@json_option
def signatures(as_json: bool) -> None:
    """List the known-issue signatures that stage results are matched against.

    Each rule names a cause, what it looks like in the evidence, and the remedy; the
    matches of a run are shown by `gpuprobe run` and `gpuprobe show`.

    \b
    Example:
      gpuprobe signatures
      gpuprobe signatures --json
    """
    from gpuprobe.cli.plain import wrap
    from gpuprobe.signatures import rules

    described = [rule.describe() for rule in rules()]
    if as_json:
        emit_json(described)
        return
    for rule in described:
        stages = ", ".join(rule["stages"]) or "any stage"
        first, *rest = wrap(f"[{rule['id']}] {rule['title']}", "", "  ")
        click.echo(click.style(first, bold=True))
        for ln in rest + wrap(f"applies to: {stages}; status {', '.join(rule['statuses'])}", "  ", "    ") \
                + wrap(rule["explanation"], "  ", "  ") + wrap(f"remedy: {rule['remedy']}", "  ", "    "):
            click.echo(ln)
        click.echo()
