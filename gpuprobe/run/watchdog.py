"""Watch one stage process: read its events with deadlines, notice when time is up.

The parent never blocks on the child: the event file is polled, ``poll()`` is
non-blocking, and every loop checks the stage's deadline.

When time is up, "118% CPU and no output" is told apart: if no mark arrived within
the stall window the stage is stalled (``hang``); if marks were still arriving it is a
loop too slow to finish (``slow``), and we estimate how long it would have needed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gpuprobe.run.launcher import StageProcess
from gpuprobe.store.results import HANG, SLOW

POLL_INTERVAL_S = 0.02


class EventTail:
    """Reads the JSON lines appended to an event file since the last read."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished line waits for its end
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write
        return events


@dataclass
class Supervision:
    outcome: str                      # "exited" or "timeout"
    returncode: int | None
    events: list[dict] = field(default_factory=list)
    started: float = 0.0              # monotonic
    ended: float = 0.0                # monotonic: exit seen, or the deadline

    @property
    def marks(self) -> list[dict]:
        return [e for e in self.events if e.get("ev") == "mark"]

    @property
    def result(self) -> dict | None:
        return next((e for e in reversed(self.events) if e.get("ev") == "result"), None)


def supervise(proc: StageProcess, tail: EventTail, timeout: float,
              on_event: Callable[[dict], None] | None = None, started: float | None = None) -> Supervision:
    started = time.monotonic() if started is None else started
    deadline = started + timeout
    sup = Supervision("timeout", None, started=started)

    def drain() -> None:
        for ev in tail.read():
            sup.events.append(ev)
            if on_event is not None:
                on_event(ev)

    while True:
        drain()
        code = proc.poll()
        if code is not None:
            drain()
            sup.outcome, sup.returncode, sup.ended = "exited", code, time.monotonic()
            return sup
        now = time.monotonic()
        if now >= deadline:
            sup.ended = now
            return sup
        time.sleep(min(POLL_INTERVAL_S, max(deadline - now, 0.0)))


def classify_timeout(sup: Supervision, stall_window: float) -> tuple[str, dict]:
    """``hang`` or ``slow``, with what the marks say about the rate of progress."""
    marks = sup.marks
    last_t = marks[-1]["t"] if marks else sup.started
    quiet_for = sup.ended - last_t
    detail: dict = {"quiet_for_s": round(quiet_for, 3), "stall_window_s": stall_window,
                    "marks_in_window": sum(1 for m in marks if m["t"] >= sup.ended - stall_window)}
    if not marks or quiet_for > stall_window:
        return HANG, detail
    detail.update(_rate(marks, sup))
    return SLOW, detail


def _rate(marks: list[dict], sup: Supervision) -> dict:
    """Progress rate from marks that carry done/total, else marks per second."""
    last = marks[-1]
    series = [m for m in marks if m["name"] == last["name"] and isinstance(m.get("data", {}).get("done"), (int, float))]
    if len(series) >= 2:
        first, latest = series[0], series[-1]
        elapsed = latest["t"] - first["t"]
        done = latest["data"]["done"] - first["data"]["done"]
        total = latest["data"].get("total")
        rate = done / elapsed if elapsed > 0 else None
        out: dict = {"progress_mark": last["name"], "done": latest["data"]["done"], "total": total,
                     "rate_per_s": round(rate, 4) if rate else None}
        if rate and isinstance(total, (int, float)):
            remaining = (total - latest["data"]["done"]) / rate
            out["eta_s"] = round(remaining, 1)
            out["estimated_total_s"] = round(latest["t"] - sup.started + remaining, 1)
        return out
    window = max(sup.ended - marks[0]["t"], 1e-9)
    return {"progress_mark": last["name"], "marks_per_s": round(len(marks) / window, 3)}
