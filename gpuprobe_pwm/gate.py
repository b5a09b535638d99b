"""The trainer's preflight gate: refuse a node known to be incompatible before building anything.

``general.preflight``:
  enforce (default)  known-incompatible: log why and what to do, exit 4;
                     transient (a lost GPU): exit 75, retry elsewhere
  warn               log the same, then train anyway
  off                no check

The evidence comes from gpuprobe's results folders ($GPUPROBE_RESULTS, else the user data
folder and the checkout's shipped field reports), through gpuprobe's validating loader; fire
drills and simulations there never refuse a real node. The node's fingerprint from NVML (no torch import), or from the file named by
$GPUPROBE_PREFLIGHT_FINGERPRINT ("what would this node say?").
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("gpuprobe_pwm.gate")
MODES = ("enforce", "warn", "off")


class GateError(ValueError):
    """A bad general.preflight value."""


def refusal_message(v: Any) -> str:
    """Which stage, how often it failed and where, and what to do."""
    lines = [f"preflight: this node is known to be incompatible ({v.node['stack']['gpu_model']}, "
             f"driver {v.node['stack']['driver']}, CUDA {v.node['stack']['cuda']}, host {v.node['hostname']})"]
    for e in v.bad_stages:
        bad = sum(n for s, n in e.counts.items() if s != "pass")
        hosts = sorted({r["host"] for r in e.latest if r["status"] != "pass"})
        runs = [r["run_id"] for r in e.latest if r["status"] != "pass"]
        lines.append(f"  stage {e.stage}: {e.status} in {bad} of {e.runs} runs "
                     f"({'this stack' if e.scope == 'stack' else 'same GPU model' if e.scope == 'model' else e.scope}); "
                     f"hosts {', '.join(hosts)}; runs {', '.join(runs)}")
        head = e.latest[0] if e.latest else {}
        if head.get("reason"):
            lines.append(f"    latest: {head['reason']}")
        for sig in e.signatures:
            lines.append(f"    known issue [{sig.get('id')}] {sig.get('title')}")
    lines.append("  what to do:")
    lines += [f"    - {a}" for a in v.advice]
    lines.append("    - or train anyway: general.preflight=warn (general.preflight=off skips the check)")
    return "\n".join(lines)


def preflight_gate(general: dict[str, Any], stages: list[str] | None = None) -> None:
    """Run the check for ``general.preflight``; exits 4 (or 75) when enforcing a refusal."""
    mode = str(general.get("preflight", "enforce")).lower()
    if mode not in MODES:
        raise GateError(f"general.preflight={mode!r} is not one of {', '.join(MODES)}")
    if mode == "off":
        log.info("preflight: off (general.preflight=off)")
        return
    from gpuprobe import api   # the only part of gpuprobe the trainer imports (setup.cfg's contract)

    try:
        folders = api.evidence_folders()
        verdict, source = api.check(stages, folders)
    except api.PreflightError as exc:
        log.error("preflight: %s", exc)
        if mode == "enforce":
            sys.exit(api.EXIT_USAGE)
        return
    if verdict.verdict == api.INCOMPATIBLE:
        message = refusal_message(verdict)
        if mode == "enforce":
            log.error("%s", message)
            log.error("refusing to train (exit %d); evidence from %s", api.EXIT_INCOMPATIBLE,
                      ", ".join(map(str, folders)))
            sys.exit(api.EXIT_INCOMPATIBLE)
        log.warning("%s\n  general.preflight=warn: training anyway", message)
    elif verdict.verdict == api.TRANSIENT:
        if mode == "enforce":
            log.error("preflight: %s (exit %d)", verdict.reason, api.EXIT_TEMPFAIL)
            sys.exit(api.EXIT_TEMPFAIL)
        log.warning("preflight: %s; general.preflight=warn: training anyway", verdict.reason)
    else:
        log.info("preflight: %s (%s; fingerprint from %s, evidence from %s)", verdict.verdict, verdict.reason,
                 source, ", ".join(map(str, folders)))
