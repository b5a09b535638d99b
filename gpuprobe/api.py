"""gpuprobe's preflight API: what job code (the bundled trainer among it) may import.

``check(stages)`` answers "should a job start on this node?" from the evidence in the
results folder, as ``gpuprobe preflight`` does; the rest of gpuprobe is free to change.
The layering contract in setup.cfg holds the trainer to this module.
"""

from __future__ import annotations

from pathlib import Path

from gpuprobe import exitcodes, paths
from gpuprobe.store.preflight import INCOMPATIBLE, NO_EVIDENCE, OK, TRANSIENT, PreflightError, Verdict

__all__ = ["check", "results_folder", "evidence_folders", "redact_command", "redact_config", "Verdict", "PreflightError", "OK", "INCOMPATIBLE", "NO_EVIDENCE",
           "TRANSIENT", "EXIT_USAGE", "EXIT_INCOMPATIBLE", "EXIT_TEMPFAIL"]

EXIT_USAGE = exitcodes.USAGE
EXIT_INCOMPATIBLE = exitcodes.INCOMPATIBLE
EXIT_TEMPFAIL = exitcodes.TEMPFAIL


def redact_command(argv: list[str]) -> list[str]:
    """``argv`` with credential values replaced (``--api-key=X``, ``--token X``, ``user:pass@``):
    gpuprobe's own rules (docs/WATCHDOG.md, "Credentials"), for what a job records."""
    from gpuprobe.redact import redact_argv

    return redact_argv(argv)


def redact_config(config: dict) -> dict:
    """A copy of ``config`` with the values of credential-like keys (``wandb.api_key``) replaced."""
    from gpuprobe.redact import redact_mapping

    return redact_mapping(config)


def results_folder() -> Path:
    """Where the evidence is first looked for: $GPUPROBE_RESULTS, else the user data folder."""
    return paths.resolve_results_dir(None).path


def evidence_folders() -> list[Path]:
    """Every folder the evidence is read from: $GPUPROBE_RESULTS (which must exist), else the
    user data folder and the checkout's shipped field reports. Raises :class:`PreflightError`
    naming a missing folder."""
    try:
        return [r.path for r in paths.evidence_dirs()]
    except paths.ResultsDirMissing as exc:
        raise PreflightError(str(exc)) from None


def check(stages: list[str] | None = None, folders: list[Path] | None = None) -> tuple[Verdict, str]:
    """This node's preflight verdict, and where its fingerprint came from (NVML or a file).

    Only real evidence (probed, observed, reported, static) can refuse a real node: fire
    drills and simulations never do. Raises :class:`PreflightError` for bad input (an
    unknown stage, an unreadable $GPUPROBE_PREFLIGHT_FINGERPRINT, a missing results folder).
    """
    from gpuprobe.store import preflight as pf

    fp, source = pf.node_fingerprint()
    return pf.evaluate(folders or evidence_folders(), fp, stages), source
