"""Human views of fingerprints, runs and the matrix, for any terminal width.

On a terminal, a view is a rich table when it fits the width without breaking a word
(checked by rendering it, see :func:`fits`), else the plain layout, styled. When stdout
is not a terminal (a SLURM log, a pipe) every view is plain lines: no table art, wrapped
between words at ``$COLUMNS`` (else 80). The JSON views come from the same dicts.

What a view shows from a result file is untrusted: each view takes the document through
:func:`gpuprobe.textsafe.tree` (no escape sequences) and hands rich ``Text``, never a
string it would parse as markup (``[/x]`` would raise mid-run).
"""

from __future__ import annotations

import io
import time
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpuprobe import textsafe
from gpuprobe.cli import plain
from gpuprobe.cli.nextstep import next_step, progress
from gpuprobe.redact import redact_command, redact_stacks

STATUS_STYLE = {
    "pass": "green", "skip": "dim", "fail": "red", "crash": "bold red",
    "hang": "bold magenta", "slow": "yellow", "hang-unkillable": "bold white on red",
}
LONG_DETAIL = 60   # a detail longer than this goes below the table, once, as a note


def stdout_console() -> Console:
    return Console(highlight=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def export_text(draw: Callable[[Console], None], width: int = 200) -> str:
    """What ``draw`` prints, as plain text of ``width`` columns (for -o FILE)."""
    console = Console(record=True, width=width, file=io.StringIO(), highlight=False)
    draw(console)
    return console.export_text()


def words(text: str) -> set[str]:
    return {w.strip("│┃|─━┏┓┗┛┡┩└┘┌┐├┤┬┴┼╇╈╸╹╺╻") for w in text.split()} - {""}


def fits(renderable: Any, width: int) -> bool:
    """Does ``renderable`` render at ``width`` columns without folding a word?"""
    narrow = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    narrow.print(renderable)
    wide = Console(width=1000, file=io.StringIO(), record=True, color_system=None)
    wide.print(renderable)
    return words(narrow.export_text()) <= words(wide.export_text())


def line(console: Console, text: str | Text, style: str = "") -> None:
    """One line that rich must not wrap again (it is wrapped already)."""
    console.print(text if isinstance(text, Text) else textsafe.rich_text(text, style), soft_wrap=True, highlight=False)


def lines(console: Console, text: str, indent: str = "", hang: str | None = None, style: str = "") -> None:
    for ln in plain.wrap(text, indent, hang, cols=console.width):
        line(console, ln, style)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def gib(n: object) -> str:
    return f"{n / 1024**3:.1f} GiB" if isinstance(n, (int, float)) else "-"


def seconds(d: object) -> str:
    return f"{d:.2f} s" if isinstance(d, (int, float)) else "-"


# -- info --------------------------------------------------------------------------------
def fingerprint_rows(fp: dict) -> list[tuple[str, str]]:
    nvml = fp.get("nvml") or {}
    rows = [("host", fp["hostname"]), ("os", f"{fp['os']} (kernel {fp['kernel']})"),
            ("cpu", f"{fp['cpu_model']} x {fp['cpu_count']}, RAM {gib(fp['ram_bytes'])}"), ("python", fp["python"]),
            ("driver", f"{fp.get('driver_version') or '-'}  CUDA {fp.get('cuda_driver_version') or '-'}"
             if nvml.get("available") else f"not available: {nvml.get('reason')}")]
    for gpu in fp.get("gpus") or []:
        rows.append((f"gpu {gpu['index']}", f"{gpu.get('name')}  cc {gpu.get('compute_capability')}  "
                     f"{gib(gpu.get('memory_total_bytes'))}  {gpu.get('pci_bus_id')}"))
    torch = fp.get("torch")
    rows.append(("torch", f"{torch['version']} (CUDA build {torch.get('cuda') or 'none'})" if torch else "not installed"))
    dflex = fp.get("dflex") or {}
    rows.append(("dflex", dflex.get("version", "?") if dflex.get("available") else f"no: {dflex.get('reason')}"))
    if fp.get("simulated"):
        rows.append(("simulated", f"NVML fake scenario {fp['simulated']!r}"))
    return rows


def print_fingerprint(console: Console, fp: dict) -> None:
    for key, value in fingerprint_rows(textsafe.tree(fp)):   # hostname and GPU names are not ours
        first, *rest = plain.wrap(value, f"{key:<10}", " " * 10, cols=console.width)
        line(console, Text.assemble((first[:10], "bold"), first[10:]))
        for ln in rest:
            line(console, ln)


# -- a run ---------------------------------------------------------------------------------
def stage_label(s: dict) -> str:
    return s["stage"] if s.get("gpu") is None else f"{s['stage']}[gpu{s['gpu']}]"


def stage_table(stages: list[dict], notes: list[str]) -> Table:
    """The stages as a table; details too long for a cell become numbered notes."""
    table = Table(title=None)
    for col in ("stage", "status", "time", "last mark"):
        table.add_column(col, no_wrap=True)
    table.add_column("detail", ratio=1)
    for s in stages:
        table.add_row(Text(stage_label(s)), status_text(s["status"]), seconds(s.get("duration_s")),
                      Text(s.get("last_mark") or "-"), Text(_detail(s, notes)))
    return table


def _detail(s: dict, notes: list[str]) -> str:
    detail = s.get("reason") or ""
    if len(detail) > LONG_DETAIL:
        if detail in notes:
            n = notes.index(detail) + 1
        else:
            notes.append(detail)
            n = len(notes)
        detail = f"see note {n}"
    sigs = "; ".join(f"[{m['id']}]" for m in s.get("signatures") or [])
    return f"{detail} {sigs}".strip()


def print_stages_plain(console: Console, stages: list[dict]) -> None:
    seen: list[str] = []
    for s in stages:
        head = Text.assemble((f"{stage_label(s):<8}", "bold"), " ", status_text(s["status"]),
                             f"  {seconds(s.get('duration_s'))}",
                             f"  last mark {s['last_mark']}" if s.get("last_mark") else "")
        line(console, head)
        reason = s.get("reason")
        if reason and reason in seen:   # a long hint (dflex's install hint) is printed once
            lines(console, f"(as for {stage_label(next(x for x in stages if x.get('reason') == reason))})",
                  "    ", style="dim")
        elif reason:
            seen.append(reason)
            lines(console, reason, "    ", "    ", style="dim")
        for m in s.get("signatures") or []:
            lines(console, f"known issue [{m['id']}] {m['title']}", "    ", "      ")


def _gpu_name(gpu: dict) -> str:
    """A GPU's name, or why NVML could not say (a lost GPU's name is ``{"not_available": why}``)."""
    name = gpu.get("name")
    if isinstance(name, dict):
        return f"? ({name.get('not_available') or 'name not available'})"
    return str(name) if name else "?"


def print_run(console: Console, doc: dict, path: str | None = None, verbose: bool = False) -> None:
    doc = textsafe.tree(doc)
    fp = doc["fingerprint"]
    gpus = ", ".join(_gpu_name(g) for g in fp.get("gpus") or []) or "no GPU"
    head = (f"run {doc['run_id']}  {doc['started_at']}  host {fp['hostname']}  {gpus}  device {doc['config']['device']}"
            f"  provenance {doc['provenance']['kind']}" + ("" if doc.get("complete") else "  (incomplete)"))
    lines(console, head, style="bold")
    notes: list[str] = []
    table = stage_table(doc["stages"], notes)
    if console.is_terminal and fits(table, console.width):
        console.print(table)
        for n, note in enumerate(notes, 1):
            lines(console, f"note {n}: {note}", "", "  ", style="dim")
    else:
        print_stages_plain(console, doc["stages"])
    for s in doc["stages"]:
        if verbose or s["status"] not in ("pass", "skip"):
            print_stage_detail(console, s, full=verbose, run_id=doc.get("run_id"))
    summary = doc.get("summary") or {}
    line(console, f"summary: {summary.get('status')} (exit {summary.get('exit_code')})")
    if path:
        lines(console, f"result: {path}")


def print_stage_detail(console: Console, s: dict, full: bool = False, run_id: str | None = None) -> None:
    s = textsafe.tree(s)
    title = f"{stage_label(s)}: {s['status']}"
    if console.is_terminal:
        console.rule(Text(title))
    else:
        line(console, f"-- {title} --")
    marks = s.get("marks") or []
    shown = marks if full else marks[-8:]
    if len(shown) < len(marks):
        line(console, f"... {len(marks) - len(shown)} earlier marks", "dim")
    for m in shown:
        lines(console, f"{m['t']:8.3f} s  {m['name']}  {_short(m.get('data'))}".rstrip(), "  ", " " * 14)
    if s.get("error"):
        console.print(Text(s["error"].get("traceback") or s["error"].get("message", ""), style="red"))
    ev = s.get("evidence") or {}
    stacks = ev.get("stacks") or {}
    if stacks.get("text"):
        line(console, f"stacks ({stacks.get('method')}):", "bold")
        # redacted again: files from older versions; each line keeps the stack's own indentation
        for raw in redact_stacks(stacks["text"]).rstrip().splitlines():
            body = raw.lstrip()
            lead = raw[: len(raw) - len(body)]
            lines(console, body, lead, lead + "    ")
    elif stacks.get("attempts"):
        lines(console, f"stacks: none ({'; '.join(a.get('error', '') for a in stacks['attempts'])})")
    for p in (ev.get("process") or {}).get("processes") or []:
        lines(console, f"pid {p.get('pid')} state {p.get('state')} cpu {p.get('cpu_percent')}% "
                       f"threads {p.get('num_threads')} wchan {p.get('wchan')}  {redact_command(p.get('cmdline'))[:100]}",
              "  ", "      ")
    for m in s.get("signatures") or []:
        lines(console, f"known issue [{m['id']}] {m['title']}", style="bold yellow")
        lines(console, m["explanation"], "  ", "  ")
        lines(console, f"remedy: {m['remedy']}", "  ", "    ")
    rate = progress(s)
    if rate:
        lines(console, rate, "progress: ", "  ")
    step = next_step(s, run_id)
    if step:
        lines(console, f"next step: {step}", "", "  ", style="bold")


def _short(data: object, limit: int = 100) -> str:
    if not data:
        return ""
    text = ", ".join(f"{k}={v}" for k, v in data.items()) if isinstance(data, dict) else str(data)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the matrix ----------------------------------------------------------------------------
def print_matrix(console: Console, matrix: dict) -> None:
    from gpuprobe.store.render import rich_view

    matrix = textsafe.tree(matrix)
    view = rich_view(matrix, STATUS_STYLE)
    if console.is_terminal and fits(view, console.width):
        console.print(view)
    elif "models" in matrix:
        _compare_plain(console, matrix)
    else:
        _matrix_plain(console, matrix)


def _cell(console: Console, label: str, cell: dict | None, indent: str, pad: int) -> None:
    from gpuprobe.store.render import cell_text

    text = cell_text(cell)
    first, *rest = plain.wrap(text, f"{indent}{label:<{pad}} ", " " * (len(indent) + pad + 3), cols=console.width)
    style = STATUS_STYLE.get(cell["status"], "") if cell else "dim"
    cut = len(indent) + pad + 1
    line(console, Text.assemble(first[:cut], (first[cut:], style)))
    for ln in rest:
        line(console, ln, style)


def _matrix_plain(console: Console, matrix: dict) -> None:
    from gpuprobe.store.render import COLUMN_TITLES, row_label

    lines(console, f"gpuprobe matrix (by {matrix['view']})", style="bold")
    pad = max([len(s) for s in matrix["stages"]] + [5])
    for r in matrix["rows"]:
        key = ", ".join(f"{COLUMN_TITLES.get(c, c)} {r['key'].get(c, '-')}" for c in matrix["columns"])
        lines(console, key, "", "  ", style="bold")
        for s in matrix["stages"]:
            _cell(console, s, r["cells"][s], "  ", pad)
    if not matrix["rows"]:
        line(console, "No results (see --results, filters).", "yellow")
    seen = set()
    for r in matrix["rows"]:
        for s in matrix["stages"]:
            for sig in (r["cells"][s] or {}).get("signatures") or []:
                if (row_label(matrix, r), sig["id"]) in seen:
                    continue
                seen.add((row_label(matrix, r), sig["id"]))
                lines(console, f"{row_label(matrix, r)} {s}: [{sig['id']}] {sig['title']}", "", "  ", style="bold")
                lines(console, f"remedy: {sig.get('remedy') or '-'}", "  ", "    ")
    if matrix.get("skipped_message"):
        lines(console, matrix["skipped_message"], style="yellow")


def _compare_plain(console: Console, cmp: dict) -> None:
    a, b = cmp["models"]
    lines(console, f"{a} vs {b}", style="bold")
    pad = max(len(a), len(b))
    for s in cmp["stages"]:
        line(console, s, "bold")
        _cell(console, a, cmp["cells"][s][a], "  ", pad)
        _cell(console, b, cmp["cells"][s][b], "  ", pad)
    if cmp["differences"]:
        line(console, "fingerprint differences", "bold")
    for d in cmp["differences"]:
        lines(console, f"{d['label']}: {a} {', '.join(d['a']) or '-'}; {b} {', '.join(d['b']) or '-'}", "  ", "    ")
    for m in (a, b):
        for sig in cmp["signatures"][m]:
            lines(console, f"{m} [{sig['id']}] {sig['title']}", "", "  ", style="bold")
            lines(console, f"remedy: {sig.get('remedy') or '-'}", "  ", "    ")
    if cmp.get("skipped_message"):
        lines(console, cmp["skipped_message"], style="yellow")


# -- the live line -----------------------------------------------------------------------
class LiveProgress:
    """What a run is doing now, on stderr.

    On a terminal, one line that ticks four times a second: stage k/n and its name
    (``preload`` while the fork server imports), seconds in the stage, seconds since the
    last mark, and the countdowns to the stall window and the timeout. Then one line per
    finished stage. Elsewhere, a plain line when a stage starts and when it ends.
    """

    def __init__(self, console: Console, stages: list | None = None, enabled: bool = True):
        self.console = console
        self.enabled = enabled
        self.plan = {s.name: s for s in stages or []}
        self.order = [s.name for s in stages or []]
        self.live = None
        self.stage: str | None = None
        self.label = ""
        self.started = 0.0
        self.last_mark: tuple[str, float] | None = None
        self.announced: set[tuple[str, str]] = set()

    def __enter__(self) -> "LiveProgress":
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def note(self, text: str, style: str = "") -> None:
        if self.enabled:
            lines(self.console, text, "", "  ", style=style)

    def event(self, stage: str, gpu: int | None, ev: dict) -> None:
        if not self.enabled:
            return
        preload = ev.get("ev") == "mark" and str(ev.get("name", "")).startswith("preload.")
        label = "preload" if preload else (stage if gpu is None else f"{stage}[gpu{gpu}]")
        now = time.monotonic()
        if self.stage != stage or self.label != label:
            if self.stage != stage:
                self.started = now
            self.stage, self.label, self.last_mark = stage, label, None
            if self.live is None and (stage, label) not in self.announced:   # plain: one line per phase
                self.announced.add((stage, label))
                what = "fork server importing for " + stage if preload else label
                line(self.console, f"... [{self.position()}] {what}", "dim")
        if ev.get("ev") == "mark":
            self.last_mark = (textsafe.one_line(ev.get("name")), now)

    def position(self) -> str:
        n = len(self.order)
        k = self.order.index(self.stage) + 1 if self.stage in self.order else 0
        return f"{k}/{n}"

    def ticker(self, now: float | None = None) -> str:
        """The live line, e.g. ``[5/6] buffer 12.4 s | buffer.fill 0.3 s ago | stall in 9.7 s | timeout in 588 s``."""
        if self.stage is None:
            return "starting"
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        parts = [f"[{self.position()}] {self.label} {elapsed:.1f} s"]
        quiet = now - (self.last_mark[1] if self.last_mark else self.started)
        parts.append(f"{self.last_mark[0]} {quiet:.1f} s ago" if self.last_mark else f"no mark yet ({quiet:.1f} s)")
        spec = self.plan.get(self.stage)
        if spec is not None and spec.stall_window_s is not None:
            left = spec.stall_window_s - quiet
            parts.append(f"stall in {left:.1f} s" if left > 0 else f"quiet {-left:.1f} s past the stall window")
            parts.append(f"timeout in {max(spec.timeout_s - elapsed, 0):.0f} s")
        return " | ".join(parts)

    def __rich__(self) -> Text:
        text = self.ticker()
        if len(text) > self.console.width - 1:
            text = text[: self.console.width - 4] + "..."
        return Text(text, style="cyan")

    def stage_done(self, result: Any) -> None:
        if not self.enabled:
            return
        d = textsafe.tree(result.to_dict())
        head = Text.assemble((f"{stage_label(d):<8} ", "bold"), status_text(d["status"]),
                             f"  {seconds(d.get('duration_s'))}" if d.get("duration_s") is not None else "")
        line(self.console, head)
        if d.get("reason"):
            lines(self.console, d["reason"], "    ", "    ", style="dim")
        self.stage, self.last_mark = None, None
