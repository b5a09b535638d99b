"""Result files: one JSON document per run, written atomically.

Layout (schema 1)::

    {
      "schema": 1, "run_id": "...", "tool": {"name": "gpuprobe", "version": "0.1.0"},
      "started_at": ISO-8601 UTC, "finished_at": ISO-8601 UTC | null, "complete": bool,
      "provenance": {"kind": "probed" | "drill" | "simulated" | "reported" | ..., "command": [...],
                     "source": ..., "note": ...},
      "fingerprint": {... see gpuprobe.node.fingerprint.Fingerprint ...},
      "config": {"device": ..., "stages": [...], "timeouts": {...}, "environment": {...}},
      "stages": [StageResult, ...],
      "summary": {"status": worst status, "exit_code": int}
    }

The file is rewritten after every stage, so a run that is killed keeps the stages it
finished (``complete`` stays false). Files are named ``<run_id>.result.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from gpuprobe import atomic, exitcodes

SCHEMA_VERSION = 1
SUFFIX = ".result.json"

PASS, FAIL, CRASH, HANG, SLOW, UNKILLABLE, SKIP = "pass", "fail", "crash", "hang", "slow", "hang-unkillable", "skip"
STATUSES = (PASS, FAIL, CRASH, HANG, SLOW, UNKILLABLE, SKIP)
# how a run's stages were obtained (``provenance``): real, a fire drill (a failpoint was
# active), or a machine that is not there (an NVML fake, --free-memory-gb, --emulate-gpu)
PROBED, DRILL, SIMULATED = "probed", "drill", "simulated"
# worst first: what a run's summary status is
SEVERITY = (UNKILLABLE, HANG, SLOW, CRASH, FAIL, PASS, SKIP)


class ResultFileError(exitcodes.UsageProblem, ValueError):
    """A result file that cannot be read (corrupt, partial, or not ours)."""


@dataclass
class Mark:
    name: str
    t: float                 # seconds since the stage started
    data: dict = field(default_factory=dict)


@dataclass
class StageResult:
    stage: str
    status: str
    gpu: int | None = None
    device: str | None = None
    reason: str | None = None          # why: skip reason, exception, signal, "no mark for 12 s"
    started_at: str | None = None
    duration_s: float | None = None
    marks: list[Mark] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    error: dict | None = None          # {"type", "message", "traceback"}
    evidence: dict | None = None       # stacks, process and GPU snapshots (hang, slow, crash)
    signatures: list[dict] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)  # the stage's own log events (bounded)
    provenance: str = PROBED

    @property
    def last_mark(self) -> str | None:
        return self.marks[-1].name if self.marks else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["last_mark"] = self.last_mark
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StageResult":
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["marks"] = [Mark(**m) for m in d.get("marks") or []]
        return cls(**fields)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id(hostname: str | None = None) -> str:
    """Sortable by time, unique across nodes writing into one folder."""
    import secrets   # here, not at the top: preflight reads results and never names a run

    host = (hostname or os.uname().nodename).split(".")[0]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{host}-{secrets.token_hex(3)}"


def worst_status(statuses: list[str]) -> str:
    present = set(statuses)
    for status in SEVERITY:
        if status in present:
            return status
    return SKIP


def exit_code_for(statuses: list[str]) -> int:
    """3 for any hang/slow/unkillable, else 1 for any fail/crash, else 0."""
    present = set(statuses)
    if present & {HANG, SLOW, UNKILLABLE}:
        return exitcodes.HANG
    if present & {FAIL, CRASH}:
        return exitcodes.FAILED
    return exitcodes.OK


def summarise(stages: list[StageResult]) -> dict:
    statuses = [s.status for s in stages]
    return {"status": worst_status(statuses), "exit_code": exit_code_for(statuses),
            "counts": {s: statuses.count(s) for s in STATUSES if s in statuses}}


# -- files ------------------------------------------------------------------------
def write_atomic(path: Path, data: dict | str) -> Path:
    """Write a result (a dict, as JSON) or text so readers see the old file or the new one."""
    text = data if isinstance(data, str) else json.dumps(data, indent=1, sort_keys=False, default=_json_default)
    return atomic.write_atomic(path, text)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return repr(obj)


def read_result(path: Path) -> dict:
    """Load and minimally validate a result file; ResultFileError says what is wrong."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); corrupt or partial file") from None
    if not isinstance(data, dict) or "schema" not in data or not isinstance(data.get("stages"), list):
        raise ResultFileError(f"{path}: not a gpuprobe result file (no schema or stages)")
    if data["schema"] > SCHEMA_VERSION:
        raise ResultFileError(f"{path}: schema {data['schema']} is newer than this gpuprobe understands ({SCHEMA_VERSION})")
    return data


def iter_result_files(folder: Path) -> Iterator[Path]:
    """Every result file under ``folder`` (recursively), in name order."""
    yield from sorted(Path(folder).rglob(f"*{SUFFIX}"))


def find_run(folder: Path, ref: str) -> Path:
    """A run by path, run id (or unique prefix of one), or ``latest``."""
    candidate = Path(ref).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    files = list(iter_result_files(folder))
    if ref == "latest":
        if not files:
            raise FileNotFoundError(f"no result files in {folder}")
        return max(files, key=lambda p: p.stat().st_mtime)
    matches = [p for p in files if p.name[: -len(SUFFIX)].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FileNotFoundError(f"no run {ref!r} in {folder} (give a path, a run id or 'latest')")
    raise FileNotFoundError(f"run id {ref!r} is ambiguous in {folder}: {', '.join(p.name for p in matches[:5])}")
