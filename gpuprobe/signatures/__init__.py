"""Known-issue signatures: match a stage's evidence to a known cause and its remedy.

A :class:`Signature` is data (id, title, explanation, remedy, which stages and statuses
it concerns) plus one small predicate over a :class:`Case` (the stage result and the
node fingerprint). The shipped rules live in :mod:`gpuprobe.signatures.catalog`; adding
one is adding an entry there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class Case:
    """What a rule may look at."""

    stage: str
    status: str
    marks: list[dict]                  # [{"name", "t", "data"}]
    data: dict
    stacks: str                        # all stack text we have (py-spy / faulthandler / traceback / log)
    fingerprint: dict
    reason: str = ""
    device: str = ""                   # "cpu" or "cuda": where the stage ran
    process: dict = field(default_factory=dict)   # evidence.process: CPU%, states, threads
    kernels: dict = field(default_factory=dict)   # evidence.kernels: the static kernel check of the node

    @property
    def cpu_percent(self) -> float | None:
        """CPU% of the stage's process tree over the evidence window (None: not measured)."""
        value = self.process.get("cpu_percent_total")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def last_mark(self) -> str | None:
        return self.marks[-1]["name"] if self.marks else None

    def mark_data(self, suffix: str) -> dict | None:
        """Data of the latest mark whose name ends with ``suffix``."""
        for m in reversed(self.marks):
            if m["name"].endswith(suffix):
                return m.get("data") or {}
        return None

    def stack_has(self, *patterns: str) -> bool:
        return any(re.search(p, self.stacks) for p in patterns)


@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    explanation: str
    remedy: str
    predicate: Callable[[Case], bool]
    stages: tuple[str, ...] = ()        # empty: any stage
    statuses: tuple[str, ...] = ("hang", "slow", "hang-unkillable")
    references: tuple[str, ...] = field(default_factory=tuple)
    # the case's own numbers in one line ("32 busy threads for 1 CPU"), shown with the match
    detail: Callable[[Case], str | None] | None = None

    def explain(self, case: Case) -> str | None:
        if self.detail is None:
            return None
        try:
            return self.detail(case)
        except Exception as exc:  # a broken detail must not cost the match
            log.warning("signature %s detail failed: %s", self.id, exc)
            return None

    def applies(self, case: Case) -> bool:
        if self.stages and case.stage not in self.stages:
            return False
        if self.statuses and case.status not in self.statuses:
            return False
        try:
            return bool(self.predicate(case))
        except Exception as exc:  # a broken rule must not break a run
            log.warning("signature %s failed on %s: %s", self.id, case.stage, exc)
            return False

    def describe(self) -> dict:
        return {"id": self.id, "title": self.title, "explanation": self.explanation, "remedy": self.remedy,
                "stages": list(self.stages), "statuses": list(self.statuses), "references": list(self.references)}


def case_from(result: Any, fingerprint: Any) -> Case:
    """A Case from a StageResult (or its dict form) and a Fingerprint (or dict)."""
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    fp = fingerprint.to_dict() if hasattr(fingerprint, "to_dict") else dict(fingerprint or {})
    ev = d.get("evidence") or {}
    parts = [((ev.get("stacks") or {}).get("text") or ""), ev.get("log_tail") or "",
             ((d.get("error") or {}).get("traceback") or "")]
    marks = [m if isinstance(m, dict) else {"name": m.name, "t": m.t, "data": m.data} for m in d.get("marks") or []]
    return Case(stage=d.get("stage", ""), status=d.get("status", ""), marks=marks, data=d.get("data") or {},
                stacks="\n".join(parts), fingerprint=fp, reason=d.get("reason") or "",
                device=d.get("device") or "", process=ev.get("process") or {}, kernels=ev.get("kernels") or {})


def rules() -> list[Signature]:
    from gpuprobe.signatures.catalog import RULES

    return list(RULES)


def match(result: Any, fingerprint: Any) -> list[dict]:
    case = case_from(result, fingerprint)
    out = []
    for s in rules():
        if s.applies(case):
            found = {k: v for k, v in s.describe().items() if k in ("id", "title", "explanation", "remedy")}
            detail = s.explain(case)
            if detail:
                found["detail"] = detail
            out.append(found)
    return out
