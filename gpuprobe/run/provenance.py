"""How a run's evidence was obtained, stamped at run time: ``probed``, ``drill`` or ``simulated``.

A fire drill (any failpoint active) and a simulation (an NVML fake, ``--free-memory-gb``,
``--emulate-gpu``) must never pass for real evidence: preflight and the trainer's gate
condemn nodes only on real evidence. A drill outranks a simulation: a failpoint in a
simulated run still makes its verdicts the drill's doing.

A verdict a failpoint caused says so in its reason and carries a ``failpoint-drill``
signature first, so every view's next step says "this was a drill".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuprobe.child.failpoints import ENV as FAILPOINTS_ENV
from gpuprobe.child.failpoints import Failpoint
from gpuprobe.run.optschema import SIMULATING
from gpuprobe.store.provenance import DRILL, PROBED, SIMULATED
from gpuprobe.store.results import CRASH, FAIL, HANG, SLOW, UNKILLABLE, StageResult

# actions that only start something and go on: they never explain a bad verdict by themselves
_BENIGN = ("spawn", "daemon")
_BAD = (FAIL, CRASH, HANG, SLOW, UNKILLABLE)


@dataclass(frozen=True)
class Provenance:
    failpoints: list[Failpoint] = field(default_factory=list)
    failpoint_spec: str = ""
    fake_nvml: str | None = None            # the NVML fake scenario that answered, if any
    options: dict = field(default_factory=dict)   # resolved {stage: {key: value}}

    def _simulating(self, stage: str) -> list[str]:
        return [key for key in SIMULATING if self.options.get(stage, {}).get(key) is not None]

    def stage(self, res: StageResult) -> str:
        """The kind of one stage's result."""
        if self.failpoints:
            return DRILL
        emulated = isinstance(res.data, dict) and bool(res.data.get("emulation"))
        if self.fake_nvml or self._simulating(res.stage) or emulated:
            return SIMULATED
        return PROBED

    def run(self, stages: list[StageResult], planned: list[str]) -> tuple[str, str | None]:
        """The run's kind and a note saying why it is not ``probed``."""
        if self.failpoints:
            return DRILL, f"a fire drill: failpoints were active ({FAILPOINTS_ENV}={self.failpoint_spec})"
        notes = []
        if self.fake_nvml:
            notes.append(f"NVML answered from the fake scenario {self.fake_nvml!r}: not a real GPU")
        for stage in planned:
            keys = self._simulating(stage)
            if keys:
                notes.append(f"{stage} saw a simulated GPU ({', '.join(f'{stage}.{k}' for k in keys)})")
        notes += [f"{s.stage} saw an emulated GPU" for s in stages
                  if s.provenance == SIMULATED and not self._simulating(s.stage) and not self.fake_nvml]
        return (SIMULATED, "; ".join(dict.fromkeys(notes))) if notes else (PROBED, None)

    def caused_by(self, res: StageResult) -> tuple[Failpoint, str] | None:
        """The failpoint behind a bad verdict: one that matches the stage's last mark (a
        failpoint fires right after its mark, and the stage never got further)."""
        if res.status not in _BAD or not res.marks:
            return None
        last = res.marks[-1].name
        for point in self.failpoints:
            if point.action not in _BENIGN and point.matches(last):
                return point, last
        return None

    def explain(self, res: StageResult) -> None:
        """Say in ``res`` that a failpoint caused its verdict, when one did."""
        found = self.caused_by(res)
        if found is None:
            return
        point, mark = found
        action = point.action + (f":{point.arg}" if point.arg else "")
        what = f"the failpoint {point.pattern}={action} at {mark}"
        res.reason = f"{res.reason or res.status}; caused by {what}: a fire drill, not a finding"
        res.signatures.insert(0, {
            "id": "failpoint-drill",
            "title": "A failpoint caused this verdict (fire drill)",
            "explanation": f"{FAILPOINTS_ENV} made the stage misbehave on purpose: {what}.",
            "remedy": (f"nothing is known to be wrong with this node: this was a drill ({FAILPOINTS_ENV} is set); "
                       f"unset {FAILPOINTS_ENV} and run again to probe it for real"),
            "detail": {"failpoint": f"{point.pattern}={action}", "mark": mark},
        })
