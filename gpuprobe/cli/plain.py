"""Plain-text views (no rich): what preflight and the piped views print.

Lines are wrapped at the terminal's width (``$COLUMNS``, else the terminal, else 80)
between words, never inside one, with a hanging indent so a wrapped line still reads as
part of its item.
"""

from __future__ import annotations

import shutil
import textwrap


def width() -> int:
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def wrap(text: str, indent: str = "", hang: str | None = None, cols: int | None = None) -> list[str]:
    """``text`` as lines of at most ``cols`` characters, first line after ``indent``,
    the others after ``hang`` (default: ``indent`` plus two spaces).

    A single word longer than a whole line (a deep path in a stack) keeps its end, where
    the file name and line number are, after an ellipsis: cut, never broken over lines.
    """
    cols = cols or width()
    hang = indent + "  " if hang is None else hang
    room = cols - max(len(indent), len(hang))
    text = " ".join(w if len(w) <= room else ELLIPSIS + w[-(room - 1):] for w in text.split())
    return textwrap.wrap(text, width=cols, initial_indent=indent, subsequent_indent=hang,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


ELLIPSIS = "\u2026"


def preflight_view(v: dict) -> str:
    import click

    from gpuprobe import textsafe

    v = textsafe.tree(v)   # hostnames and GPU names from result files: no escape sequences
    stack = v["node"]["stack"]
    colour = {"ok": "green", "known-incompatible": "red", "no-evidence": "yellow", "transient": "yellow"}[v["verdict"]]
    head = click.style(f"preflight: {v['verdict']} (exit {v['exit_code']})", fg=colour, bold=True)
    node = (f"node {v['node']['hostname']}: {stack['gpu_model']} (cc {stack['arch']}), driver {stack['driver']}, "
            f"CUDA {stack['cuda']}, torch {stack['torch']}, dflex {stack['dflex']}"
            + (f" [simulated: {v['node']['simulated']}]" if v["node"].get("simulated") else ""))
    lines = [head, *wrap(node, "  "), *wrap(v["reason"], "  ")]
    for s in v["stages"]:
        mark = {"pass": "ok ", None: "-- "}.get(s["status"], "BAD")
        lines += wrap(s["summary"], f"  {mark} {s['stage']:<7} ", " " * 14)
        for sig in s.get("signatures") or []:
            lines += wrap(f"[{sig.get('id')}] {sig.get('title')}", " " * 14)
    if v["advice"]:
        lines.append("  what to do:")
        for a in v["advice"]:
            lines += wrap(a, "    - ", "      ")
    if v.get("live_run"):
        lines += wrap(f"live probe result: {v['live_run']}", "  ")
    if v.get("skipped_message"):
        lines += wrap(f"note: {v['skipped_message']}", "  ")
    return "\n".join(lines)
