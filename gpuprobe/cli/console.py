"""Human views of fingerprints and results (rich); the JSON views come from the same dicts."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "pass": "green", "skip": "dim", "fail": "red", "crash": "bold red",
    "hang": "bold magenta", "slow": "yellow", "hang-unkillable": "bold white on red",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def gib(n: object) -> str:
    return f"{n / 1024**3:.1f} GiB" if isinstance(n, (int, float)) else "-"


def print_fingerprint(console: Console, fp: dict) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("host", fp["hostname"])
    table.add_row("os", f"{fp['os']} (kernel {fp['kernel']})")
    table.add_row("cpu", f"{fp['cpu_model']} x {fp['cpu_count']}, RAM {gib(fp['ram_bytes'])}")
    table.add_row("python", fp["python"])
    nvml = fp.get("nvml") or {}
    table.add_row("driver", f"{fp.get('driver_version') or '-'}  CUDA {fp.get('cuda_driver_version') or '-'}"
                  if nvml.get("available") else f"not available: {nvml.get('reason')}")
    for gpu in fp.get("gpus") or []:
        table.add_row(f"gpu {gpu['index']}", f"{gpu.get('name')}  cc {gpu.get('compute_capability')}  "
                      f"{gib(gpu.get('memory_total_bytes'))}  {gpu.get('pci_bus_id')}")
    torch = fp.get("torch")
    table.add_row("torch", f"{torch['version']} (CUDA build {torch.get('cuda') or 'none'})" if torch else "not installed")
    dflex = fp.get("dflex") or {}
    table.add_row("dflex", dflex.get("version", "?") if dflex.get("available") else f"no: {dflex.get('reason')}")
    if fp.get("simulated"):
        table.add_row("simulated", Text(f"NVML fake scenario {fp['simulated']!r}", style="yellow"))
    console.print(table)


def stage_table(stages: list[dict]) -> Table:
    table = Table(title=None)
    for col in ("stage", "gpu", "status", "time", "last mark", "detail"):
        table.add_column(col, overflow="fold")
    for s in stages:
        detail = s.get("reason") or ""
        if s.get("signatures"):
            detail += ("\n" if detail else "") + "; ".join(f"[{m['id']}] {m['title']}" for m in s["signatures"])
        dur = s.get("duration_s")
        table.add_row(s["stage"], "-" if s.get("gpu") is None else str(s["gpu"]), status_text(s["status"]),
                      f"{dur:.2f} s" if isinstance(dur, (int, float)) else "-", s.get("last_mark") or "-", detail)
    return table


def print_run(console: Console, doc: dict, path: str | None = None, verbose: bool = False) -> None:
    fp = doc["fingerprint"]
    gpus = ", ".join(g.get("name") or "?" for g in fp.get("gpus") or []) or "no GPU"
    console.print(f"[bold]run[/] {doc['run_id']}  [dim]{doc['started_at']}[/]  host {fp['hostname']}  {gpus}"
                  f"  device {doc['config']['device']}  provenance {doc['provenance']['kind']}"
                  + ("" if doc.get("complete") else "  [yellow](incomplete)[/]"))
    console.print(stage_table(doc["stages"]))
    for s in doc["stages"]:
        if verbose or s["status"] not in ("pass", "skip"):
            print_stage_detail(console, s, full=verbose)
    summary = doc.get("summary") or {}
    console.print(f"summary: {summary.get('status')} (exit {summary.get('exit_code')})")
    if path:
        console.print(f"result: {path}")


def print_stage_detail(console: Console, s: dict, full: bool = False) -> None:
    console.rule(f"{s['stage']}: {s['status']}")
    marks = s.get("marks") or []
    shown = marks if full else marks[-8:]
    if len(shown) < len(marks):
        console.print(f"[dim]... {len(marks) - len(shown)} earlier marks[/]")
    for m in shown:
        console.print(f"  {m['t']:8.3f} s  {m['name']}  [dim]{_short(m.get('data'))}[/]")
    if s.get("error"):
        console.print(Text(s["error"].get("traceback") or s["error"].get("message", ""), style="red"))
    ev = s.get("evidence") or {}
    stacks = (ev.get("stacks") or {})
    if stacks.get("text"):
        console.print(f"[bold]stacks[/] ({stacks.get('method')}):")
        console.print(Text(stacks["text"].rstrip()))
    elif stacks.get("attempts"):
        console.print(f"[bold]stacks[/]: none ({'; '.join(a.get('error', '') for a in stacks['attempts'])})")
    proc = ev.get("process") or {}
    for p in proc.get("processes") or []:
        console.print(f"  pid {p.get('pid')} state {p.get('state')} cpu {p.get('cpu_percent')}% "
                      f"threads {p.get('num_threads')} wchan {p.get('wchan')}  [dim]{(p.get('cmdline') or '')[:100]}[/]")
    for m in s.get("signatures") or []:
        console.print(f"[bold yellow]known issue[/] [{m['id']}] {m['title']}\n  {m['explanation']}\n  [bold]remedy:[/] {m['remedy']}")


def _short(data: object, limit: int = 100) -> str:
    if not data:
        return ""
    text = ", ".join(f"{k}={v}" for k, v in data.items()) if isinstance(data, dict) else str(data)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LiveProgress:
    """One line per stage as it finishes; on a terminal, a spinner with the current mark."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console = console
        self.enabled = enabled
        self.status = None
        self.current: tuple[str, float] | None = None

    def __enter__(self) -> "LiveProgress":
        if self.enabled and self.console.is_terminal:
            self.status = self.console.status("starting")
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def event(self, stage: str, gpu: int | None, ev: dict) -> None:
        if not self.enabled:
            return
        label = stage if gpu is None else f"{stage}[gpu{gpu}]"
        if self.current is None or self.current[0] != label:
            self.current = (label, time.monotonic())
            if self.status is None:
                self.console.print(f"[dim]... {label}[/]")
        if ev.get("ev") == "mark" and self.status is not None:
            elapsed = time.monotonic() - self.current[1]
            self.status.update(f"{label}: {ev['name']} ({elapsed:.1f} s)")

    def stage_done(self, result) -> None:
        if not self.enabled:
            return
        d = result.to_dict()
        dur = d.get("duration_s")
        label = d["stage"] if d.get("gpu") is None else f"{d['stage']}[gpu{d['gpu']}]"
        line = Text.assemble((f"{label:<12}", "bold"), status_text(d["status"]),
                             f"  {dur:.2f} s" if isinstance(dur, (int, float)) else "",
                             (f"  {d.get('reason')}" if d.get("reason") else "", "dim"))
        self.console.print(line)
        self.current = None
