"""``gpuprobe signatures``: the known-issue rules this gpuprobe ships."""

from __future__ import annotations

import click


@click.command("signatures")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the human view.")
def signatures(as_json: bool) -> None:
    """List the known-issue signatures that stage results are matched against.

    Each rule names a cause, what it looks like in the evidence, and the remedy; the
    matches of a run are shown by `gpuprobe run` and `gpuprobe show`.

    \b
    Example:
      gpuprobe signatures
      gpuprobe signatures --json
    """
    from gpuprobe.signatures import rules

    described = [rule.describe() for rule in rules()]
    if as_json:
        import json

        click.echo(json.dumps(described, indent=2))
        return
    for rule in described:
        stages = ", ".join(rule["stages"]) or "any stage"
        click.echo(click.style(f"[{rule['id']}] ", bold=True) + rule["title"])
        click.echo(f"  applies to: {stages}; status {', '.join(rule['statuses'])}")
        click.echo(f"  {rule['explanation']}")
        click.echo(f"  remedy: {rule['remedy']}")
        click.echo()
