"""Prometheus text for node_exporter's textfile collector.

By its conventions: base units in the name (``_seconds``), every metric a gauge (a count
of files read now is not a counter: it can go down), no placeholder label values (a
label that is unknown is left out, never ``"-"``), and a status as a metric of its own:
a state set, one series per status with 1 for the current one and 0 for the others,
so ``skip`` is never counted as a pass.
"""

from __future__ import annotations

import calendar
import time
from typing import Any, Iterable

from gpuprobe import textsafe
from gpuprobe.store.results import STATUSES

PREFLIGHT_VERDICTS = ("ok", "known-incompatible", "no-evidence", "transient")
UNKNOWN = ("", "-", None, "unknown")


def label_value(value: object) -> str:
    # a label value from a result file (a hostname, a GPU name) keeps no control characters
    return textsafe.terminal(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(pairs: dict[str, Any]) -> str:
    known = {k: v for k, v in pairs.items() if v not in UNKNOWN}
    return "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in known.items()) + "}" if known else ""


def unix_seconds(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        whole = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    frac = iso[20:26] if len(iso) > 20 and iso[19] == "." else ""
    return whole + (float("0." + frac) if frac.isdigit() else 0.0)


class Exposition:
    """Collects samples per metric and prints each metric's HELP and TYPE once."""

    def __init__(self) -> None:
        self.metrics: dict[str, tuple[str, list[str]]] = {}

    def add(self, name: str, help: str, value: float, lab: dict[str, Any] | None = None) -> None:
        _help, samples = self.metrics.setdefault(name, (help, []))
        samples.append(f"{name}{labels(lab or {})} {_number(value)}")

    def state_set(self, name: str, help: str, current: str | None, states: Iterable[str],
                  lab: dict[str, Any], key: str = "status") -> None:
        for state in states:
            self.add(name, help, 1 if state == current else 0, {**lab, key: state})

    def text(self) -> str:
        out = []
        for name, (help, samples) in self.metrics.items():
            out += [f"# HELP {name} {help}", f"# TYPE {name} gauge", *samples]
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return repr(float(value))


PROM_LABELS = {"gpu_model": "model", "hostname": "host"}


def matrix_metrics(matrix: dict) -> str:
    if "models" in matrix:
        raise ValueError("--format prom renders the matrix, not --compare")
    ex = Exposition()
    for r in matrix["rows"]:
        base = {PROM_LABELS.get(c, c): r["key"].get(c) for c in matrix["columns"]}
        for s in matrix["stages"]:
            c = r["cells"][s]
            if not c:
                continue
            lab = {**base, "stage": s}
            for status, n in sorted(c["counts"].items()):
                ex.add("gpuprobe_stage_runs", "Stage runs in the gpuprobe results, by row, stage and status.", n,
                       {**lab, "status": status})
            ex.state_set("gpuprobe_stage_latest_status",
                         "1 for the status of the stage's latest run, 0 for the other statuses.", c["status"],
                         STATUSES, lab)
            ts = unix_seconds(c.get("last_at"))
            if ts is not None:
                ex.add("gpuprobe_stage_last_run_timestamp_seconds",
                       "Start time of the latest run of the stage (Unix seconds).", round(ts, 3), lab)
            if c.get("median_duration_s") is not None:
                ex.add("gpuprobe_stage_duration_seconds", "Median duration of the stage's runs.",
                       c["median_duration_s"], lab)
    ex.add("gpuprobe_unreadable_result_files", "Result files that could not be read (corrupt or partial).",
           len(matrix.get("skipped") or []))
    return ex.text()


def preflight_metrics(verdict: dict, now: float | None = None) -> str:
    """This node's preflight answer: one gauge per stage verdict, and the overall answer."""
    ex = Exposition()
    stack = verdict["node"]["stack"]
    node = {"model": stack.get("gpu_model"), "arch": stack.get("arch"), "driver": stack.get("driver"),
            "cuda": stack.get("cuda"), "torch": stack.get("torch"), "dflex": stack.get("dflex"),
            "simulated": verdict["node"].get("simulated")}
    ex.add("gpuprobe_preflight_node_info", "The stack preflight judged on this node (value always 1).", 1, node)
    ex.state_set("gpuprobe_preflight_verdict", "1 for this node's preflight answer, 0 for the other answers.",
                 verdict["verdict"], PREFLIGHT_VERDICTS, {}, key="verdict")
    ex.add("gpuprobe_preflight_exit_code", "The exit code gpuprobe preflight returned.", verdict["exit_code"])
    for s in verdict["stages"]:
        lab = {"stage": s["stage"]}
        ex.add("gpuprobe_preflight_stage_ok", "1 when the stage's latest evidence passed, else 0 (bad or none).",
               1 if s["status"] == "pass" else 0, lab)
        ex.add("gpuprobe_preflight_stage_evidence", "1 when the stage has evidence for this node, else 0.",
               0 if s["scope"] is None else 1, lab)
        if s["status"] is not None:
            ex.state_set("gpuprobe_preflight_stage_status", "1 for the status of the stage's latest run, else 0.",
                         s["status"], [st for st in STATUSES if st != "skip"], lab)
        ex.add("gpuprobe_preflight_stage_runs", "Runs of the stage in the evidence preflight used.", s["runs"], lab)
    ex.add("gpuprobe_preflight_timestamp_seconds", "When this answer was computed (Unix seconds).",
           round(time.time() if now is None else now, 3))
    return ex.text()
