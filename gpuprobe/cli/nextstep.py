"""What to do after a ``hang`` or ``slow`` verdict, and how a ``slow`` stage was doing.

Shared by every view of a run (the live run, ``show``), so a person reading any of them
is told the same next step: the matched known issue's remedy when there is one, else the
command that tells the two cases apart or sends the evidence on.
"""

from __future__ import annotations

NEEDS_NEXT_STEP = ("hang", "slow", "hang-unkillable")


def progress(stage: dict) -> str | None:
    """``slow``: the rate and the estimated time to finish, from the marks."""
    d = stage.get("data") or {}
    if stage.get("status") != "slow":
        return None
    mark = d.get("progress_mark") or "marks"
    if d.get("rate_per_s"):
        text = f"rate {d['rate_per_s']:g}/s at {mark}"
        if d.get("done") is not None and d.get("total") is not None:
            text += f", {d['done']:g} of {d['total']:g} done"
        if d.get("eta_s") is not None:
            text += f"; ETA {d['eta_s']:g} s more, about {d.get('estimated_total_s', 0):g} s in all"
        return text
    if d.get("marks_per_s"):
        return f"{d['marks_per_s']:g} marks/s at {mark} (no done/total in the marks: no ETA)"
    return None


def next_step(stage: dict, run_id: str | None = None) -> str | None:
    status = stage.get("status")
    if status not in NEEDS_NEXT_STEP:
        return None
    for sig in stage.get("signatures") or []:
        if sig.get("remedy"):
            return f"[{sig.get('id')}] {sig['remedy']}"
    name = stage["stage"]
    timeout = (stage.get("data") or {}).get("timeout_s")
    report = f"gpuprobe report {run_id or 'latest'} --format html -o {name}-{status}.html"
    if status == "hang-unkillable":
        return f"drain this node and ask an admin (a process is stuck in the kernel); keep the evidence: {report}"
    if status == "slow":
        total = (stage.get("data") or {}).get("estimated_total_s")
        longer = f"{max(total * 1.5, (timeout or 0) * 2):.0f}" if total else f"{(timeout or 60) * 2:g}"
        return (f"it was still progressing: give it time with gpuprobe run --only --stage {name} --timeout {longer}; "
                f"or send the evidence: {report}")
    longer = f"{(timeout or 60) * 2:g}"
    return (f"no known cause matched: read the stacks above, re-run with gpuprobe run --only --stage {name} "
            f"--timeout {longer} to rule out a slow stage, and send the evidence: {report}")
