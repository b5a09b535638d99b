"""``gpuprobe report``: one run as a document to attach to a ticket (Markdown or HTML).

Sections: the verdict per stage, the node and its stack, a timeline of every mark (seconds
since the run started), and for each stage with evidence the stacks, the process and GPU
snapshots, and the known-issue signatures it matched with their remedies.

The run's text is untrusted (it comes from a result file): command lines and stacks are
redacted again here (files from older versions), and each format escapes the rest
through :mod:`gpuprobe.textsafe`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from gpuprobe import textsafe
from gpuprobe.redact import redact_command, redact_snapshot, redact_stacks, redact_text
from gpuprobe.store.render import TEMPLATES

MAX_DATA_CHARS = 160
MAX_STACK_CHARS = 20_000


def _seconds_between(start: str | None, end: str | None) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _short(data: object) -> str:
    text = json.dumps(data, default=str, separators=(",", ":")) if data else ""
    return text if len(text) <= MAX_DATA_CHARS else text[: MAX_DATA_CHARS - 1] + "…"


def context(doc: dict, path: Path | None = None) -> dict:
    """Everything the templates show, as plain data (also the report's JSON form)."""
    from gpuprobe.node.fingerprint import Fingerprint

    fp = doc.get("fingerprint") or {}
    run_start = doc.get("started_at")
    timeline, stages = [], []
    for st in doc.get("stages") or []:
        offset = _seconds_between(run_start, st.get("started_at")) or 0.0
        for m in st.get("marks") or []:
            timeline.append({"t": round(offset + float(m.get("t") or 0.0), 3), "stage": st.get("stage"),
                             "gpu": st.get("gpu"), "mark": m.get("name"), "data": _short(m.get("data"))})
        ev = st.get("evidence") or {}
        stacks = (ev.get("stacks") or {})
        process = redact_snapshot(ev.get("process") or {})
        gpu = ev.get("gpu") or {}
        stages.append({
            "stage": st.get("stage"), "gpu": st.get("gpu"), "status": st.get("status"), "reason": st.get("reason"),
            "duration_s": st.get("duration_s"), "last_mark": st.get("last_mark"), "started_at": st.get("started_at"),
            "signatures": [s for s in st.get("signatures") or [] if isinstance(s, dict)],
            "error": (st.get("error") or {}).get("traceback") or (st.get("error") or {}).get("message"),
            "stacks_method": stacks.get("method"), "stacks": redact_stacks(stacks.get("text") or "")[:MAX_STACK_CHARS],
            "process": {"cpu_percent_total": process.get("cpu_percent_total"), "window_s": process.get("window_s"),
                        "processes": process.get("processes") or [], "threads": process.get("threads") or [],
                        "threads_total": process.get("threads_total")} if process else None,
            "gpu_snapshot": gpu.get("gpus") or [], "gpu_reason": None if gpu.get("available", True) else gpu.get("reason"),
            "log_tail": redact_text(ev.get("log_tail") or ""),
        })
    timeline.sort(key=lambda r: r["t"])
    return {
        "run_id": doc.get("run_id"), "path": str(path) if path else None, "started_at": run_start,
        "finished_at": doc.get("finished_at"), "complete": bool(doc.get("complete")),
        "provenance": doc.get("provenance") or {}, "summary": doc.get("summary") or {},
        "command": redact_command([str(c) for c in (doc.get("provenance") or {}).get("command") or []]),
        "stack": Fingerprint.from_dict(fp).stack_key(), "fingerprint": fp, "stages": stages, "timeline": timeline,
    }


_md = textsafe.markdown
_fence = textsafe.code_block


def to_markdown(ctx: dict) -> str:
    s = ctx["summary"]
    lines = [f"# gpuprobe run {_md(ctx['run_id'])}", "",
             f"- status: **{_md(s.get('status'))}** (exit {s.get('exit_code')}), "
             f"{'complete' if ctx['complete'] else 'incomplete (killed before the end)'}",
             f"- started {_md(ctx['started_at'])}, finished {_md(ctx['finished_at'])}",
             f"- provenance: {_md(ctx['provenance'].get('kind'))}"
             + (f", source {_md(ctx['provenance'].get('source'))}" if ctx["provenance"].get("source") else ""),
             f"- command: {textsafe.code_span(ctx['command'])}" if ctx["command"] else "- command: -", ""]
    lines += ["## Stages", "", "| stage | gpu | status | time | last mark | reason |", "|---|---|---|---|---|---|"]
    for st in ctx["stages"]:
        dur = f"{st['duration_s']:.2f} s" if isinstance(st["duration_s"], (int, float)) else "-"
        lines.append(f"| {_md(st['stage'])} | {_md(st['gpu'])} | **{_md(st['status'])}** | {dur} | "
                     f"{_md(st['last_mark'])} | {_md(st['reason'])} |")
    fp = ctx["fingerprint"]
    lines += ["", "## Node and stack", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in ctx["stack"].items()]
    lines += [f"| host | {_md(fp.get('hostname'))} |", f"| os | {_md(fp.get('os'))} (kernel {_md(fp.get('kernel'))}) |",
              f"| cpu | {_md(fp.get('cpu_model'))} x {_md(fp.get('cpu_count'))} |", f"| python | {_md(fp.get('python'))} |"]
    for g in fp.get("gpus") or []:
        lines.append(f"| gpu {_md(g.get('index'))} | {_md(g.get('name'))}, cc {_md(g.get('compute_capability'))}, "
                     f"{_md(g.get('memory_total_bytes'))} bytes, {_md(g.get('pci_bus_id'))} |")
    if fp.get("simulated"):
        lines.append(f"| simulated | NVML fake scenario {_md(fp['simulated'])} |")
    lines += ["", "## Timeline (seconds since the run started)", ""]
    if ctx["timeline"]:
        lines += ["| t (s) | stage | mark | data |", "|---|---|---|---|"]
        lines += [f"| {r['t']:.3f} | {_md(r['stage'])} | {_md(r['mark'])} | {_md(r['data'])} |" for r in ctx["timeline"]]
    else:
        lines.append("No marks recorded.")
    for st in ctx["stages"]:
        if not (st["signatures"] or st["stacks"] or st["process"] or st["error"] or st["gpu_snapshot"]):
            continue
        lines += ["", f"## Evidence: {_md(st['stage'])} ({_md(st['status'])})", ""]
        for sig in st["signatures"]:
            lines.append(f"- signature **{_md(sig.get('title'))}** ({textsafe.code_span(sig.get('id'))}): {_md(sig.get('explanation'))} "
                         f"*Remedy:* {_md(sig.get('remedy'))}")
        if st["process"]:
            p = st["process"]
            lines += ["", f"Process snapshot: {_md(p['cpu_percent_total'])}% CPU over {_md(p['window_s'])} s, "
                      f"{_md(p['threads_total'])} threads", "", "| pid | state | cpu % | threads | rss | command |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {_md(x.get('pid'))} | {_md(x.get('state'))} | {_md(x.get('cpu_percent'))} | "
                      f"{_md(x.get('num_threads'))} | {_md(x.get('rss_bytes'))} | {_md(x.get('cmdline'))} |"
                      for x in p["processes"]]
        if st["gpu_snapshot"] or st["gpu_reason"]:
            lines += ["", "GPU snapshot: " + (_md(st["gpu_reason"]) if st["gpu_reason"] else "")]
            lines += [f"- gpu {_md(g.get('index'))}: " + ", ".join(f"{k}={_md(v)}" for k, v in g.items() if k != "index")
                      for g in st["gpu_snapshot"]]
        if st["stacks"]:
            lines += ["", f"Stacks ({_md(st['stacks_method'])}):", ""] + _fence(st["stacks"])
        if st["error"]:
            lines += ["", "Error:", ""] + _fence(str(st["error"]))
    return "\n".join(lines) + "\n"


def to_html(ctx: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=textsafe.html_finalize)
    return env.get_template("report.html.j2").render(r=ctx)


def render(doc: dict, fmt: str, path: Path | None = None) -> str:
    ctx = context(doc, path)
    if fmt in ("md", "markdown"):
        return to_markdown(ctx)
    if fmt == "html":
        return to_html(ctx)
    raise ValueError(f"unknown report format {fmt!r} (known: md, html)")
