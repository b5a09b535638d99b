"""Renderers for the matrix and the model comparison: Markdown, HTML, Prometheus text, rich.

Every renderer takes the dict :func:`gpuprobe.store.matrix.build` (or ``matrix_compare.compare``)
returns, so the JSON and the human views always agree. Its text comes from result files, so
it is untrusted: each format escapes it through :mod:`gpuprobe.textsafe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuprobe import textsafe

TEMPLATES = Path(__file__).resolve().parent / "templates"
FORMATS = ("text", "markdown", "json", "html", "prom")
EXTENSIONS = {"markdown": "md", "json": "json", "html": "html", "prom": "prom", "text": "txt"}
COLUMN_TITLES = {"gpu_model": "GPU model", "arch": "arch", "driver": "driver", "cuda": "CUDA", "torch": "torch",
                 "dflex": "dflex", "hostname": "node"}


def cell_text(cell: dict | None, detail: bool = True) -> str:
    """ "hang 3/3 · last 2026-11-01 · 2.5 s" (or "-" for no runs)."""
    if not cell:
        return "-"
    parts = [cell["summary"]]
    if detail and cell.get("last_at"):
        parts.append(f"last {cell['last_at'][:10]}")
    if detail and cell.get("median_duration_s") is not None:
        parts.append(f"{cell['median_duration_s']:.3g} s")
    return " · ".join(parts)


_md_escape = textsafe.markdown


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return out


def _signature_lines(cells: list[tuple[str, str, dict]]) -> list[str]:
    lines = []
    for row_label, stage, sig in cells:
        lines.append(f"- **{_md_escape(row_label)}**, {textsafe.code_span(stage)}: **{_md_escape(sig['title'])}** "
                     f"({textsafe.code_span(sig['id'])}, {_md_escape(sig.get('runs', '?'))} runs). {_md_escape(sig.get('explanation') or '')} "
                     f"*Remedy:* {_md_escape(sig.get('remedy') or '')}")
    return lines


def row_label(matrix: dict, row: dict) -> str:
    return " / ".join(str(row["key"].get(c, "-")) for c in matrix["columns"])


def to_markdown(matrix: dict) -> str:
    if "models" in matrix:
        return compare_markdown(matrix)
    header = [COLUMN_TITLES.get(c, c) for c in matrix["columns"]] + matrix["stages"]
    rows = [[str(r["key"].get(c, "-")) for c in matrix["columns"]] + [cell_text(r["cells"][s]) for s in matrix["stages"]]
            for r in matrix["rows"]]
    lines = ["# gpuprobe compatibility matrix", "",
             f"Generated {matrix['generated_at'][:19]}Z by `gpuprobe matrix --format markdown --write`, "
             f"view: by {matrix['view']}. A cell counts the runs of that row and stage by status "
             f"(\"hang 3/3\": 3 of 3 runs hung), then the last run's date and the median duration.", ""]
    if matrix.get("filters"):
        lines += ["Filters: " + ", ".join(_md_escape(f"{k}={v}") for k, v in matrix["filters"].items()), ""]
    lines += _md_table(header, rows) if rows else ["No results."]
    sigs = [(row_label(matrix, r), s, sig) for r in matrix["rows"] for s in matrix["stages"]
            for sig in (r["cells"][s] or {}).get("signatures") or []]
    if sigs:
        lines += ["", "## Known-issue signatures", ""] + _signature_lines(sigs)
    latest = [(row_label(matrix, r), s, c) for r in matrix["rows"] for s in matrix["stages"]
              if (c := r["cells"][s]) and c["status"] not in ("pass", "skip")]
    if latest:
        lines += ["", "## Failing cells: latest runs", ""]
        for label, s, c in latest:
            runs = ", ".join(f"{x['run_id']} ({x['host']}, {x['status']})" for x in c["latest"])
            lines.append(f"- {_md_escape(label)}, {textsafe.code_span(s)}: {_md_escape(runs)}")
    lines += ["", "Sources: " + ", ".join(_md_escape(f"{s['folder']} ({s['files']} files)") for s in matrix["sources"])]
    if matrix.get("skipped_message"):
        lines += ["", f"Note: {_md_escape(matrix['skipped_message'])}"]
    return "\n".join(lines) + "\n"


def compare_markdown(cmp: dict) -> str:
    a, b = cmp["models"]
    lines = [f"# {_md_escape(a)} vs {_md_escape(b)}", "",
             f"Generated {cmp['generated_at'][:19]}Z by {textsafe.code_span(f'gpuprobe matrix --compare {a} {b}')}.", ""]
    lines += _md_table(["stage", a, b], [[s, cell_text(cmp["cells"][s][a]), cell_text(cmp["cells"][s][b])]
                                         for s in cmp["stages"]])
    lines += ["", "## Fingerprint differences", ""]
    lines += _md_table(["", a, b], [[d["label"], ", ".join(d["a"]) or "-", ", ".join(d["b"]) or "-"]
                                    for d in cmp["differences"]]) if cmp["differences"] else ["None recorded."]
    lines += ["", "## Signatures", ""]
    sigs = [(m, ", ".join(sig["stages"]), sig) for m in (a, b) for sig in cmp["signatures"][m]]
    lines += _signature_lines(sigs) if sigs else ["No known-issue signature matched."]
    if cmp.get("skipped_message"):
        lines += ["", f"Note: {_md_escape(cmp['skipped_message'])}"]
    return "\n".join(lines) + "\n"


def to_html(matrix: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=textsafe.html_finalize)
    env.filters["cell_text"] = cell_text
    return env.get_template("matrix.html.j2").render(m=matrix, titles=COLUMN_TITLES,
                                                     is_compare="models" in matrix)


def to_prom(matrix: dict) -> str:
    from gpuprobe.store.prom import matrix_metrics

    return matrix_metrics(matrix)


def to_json(matrix: dict) -> str:
    import json

    return json.dumps(matrix, indent=2, default=str) + "\n"


def render(matrix: dict, fmt: str) -> str:
    """Text of ``matrix`` in ``fmt`` (every format but ``table``)."""
    if fmt == "markdown":
        return to_markdown(matrix)
    if fmt == "html":
        return to_html(matrix)
    if fmt == "prom":
        return to_prom(matrix)
    if fmt == "json":
        return to_json(matrix)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def rich_view(matrix: dict, styles: dict[str, str] | None = None) -> Any:
    """A rich renderable: the matrix table, or the comparison tables (``styles``: status -> style)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    STATUS_STYLE = styles or {}
    matrix = textsafe.tree(matrix)   # no escape sequences reach the terminal

    def cell(c: dict | None) -> Text:
        return Text(cell_text(c), style=STATUS_STYLE.get(c["status"], "")) if c else Text("-", style="dim")

    parts: list[Any] = []
    if "models" in matrix:
        a, b = matrix["models"]
        t = Table(title=Text(f"{a} vs {b}"))
        for col in ("stage", a, b):
            t.add_column(Text(col), overflow="fold")
        for s in matrix["stages"]:
            t.add_row(Text(s), cell(matrix["cells"][s][a]), cell(matrix["cells"][s][b]))
        parts.append(t)
        d = Table(title="fingerprint differences")
        for col in ("", a, b):
            d.add_column(Text(col), overflow="fold")
        for diff in matrix["differences"]:
            d.add_row(Text(diff["label"]), Text(", ".join(diff["a"]) or "-"), Text(", ".join(diff["b"]) or "-"))
        parts.append(d)
        for m in (a, b):
            for sig in matrix["signatures"][m]:
                parts.append(Text.assemble((f"{m} [{sig['id']}] ", "bold"), sig["title"], "\n  ",
                                           (f"remedy: {sig.get('remedy') or '-'}", "cyan")))
    else:
        t = Table(title=Text(f"gpuprobe matrix (by {matrix['view']})"))
        for c in matrix["columns"]:
            t.add_column(Text(COLUMN_TITLES.get(c, c)), style="bold" if c == "gpu_model" else "", overflow="fold")
        for s in matrix["stages"]:
            t.add_column(Text(s), overflow="fold")
        for r in matrix["rows"]:
            t.add_row(*[Text(str(r["key"].get(c, "-"))) for c in matrix["columns"]],
                      *[cell(r["cells"][s]) for s in matrix["stages"]])
        parts.append(t)
        seen = set()
        for r in matrix["rows"]:
            for s in matrix["stages"]:
                for sig in (r["cells"][s] or {}).get("signatures") or []:
                    if (row_label(matrix, r), sig["id"]) not in seen:
                        seen.add((row_label(matrix, r), sig["id"]))
                        parts.append(Text.assemble((f"{row_label(matrix, r)} {s}: [{sig['id']}] ", "bold"), sig["title"],
                                                   "\n  ", (f"remedy: {sig.get('remedy') or '-'}", "cyan")))
        if not matrix["rows"]:
            parts.append(Text("No results (see --results, filters).", style="yellow"))
    if matrix.get("skipped_message"):
        parts.append(Text(matrix["skipped_message"], style="yellow"))
    return Group(*parts)
