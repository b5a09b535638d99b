"""The run record: one typed model of a result file, its validating loader and its writer.

Every reader of result files goes through :func:`load_record` and every writer through
:func:`dump_record` (``results.write_atomic`` calls it), so what one writes the other reads.

A results folder is shared by every node of a cluster and anyone can drop a file into it,
so the loader assumes nothing about a file: it never blocks on opening one (FIFOs, devices
and directories are refused from ``stat`` before any ``open``, and the open is non-blocking
in case the name was swapped in between), caps its size, and refuses what would break a
reader later: bytes that are not UTF-8, truncated JSON, lone surrogates (SQLite and every
encoder reject them), nesting deeper than :data:`MAX_DEPTH`, NaN and Infinity (not JSON),
integers SQLite cannot hold, and fields of the wrong type. Each refusal is a
:class:`RecordError` whose message is one line: the file and the reason.

Cheap on purpose (the index runs it over 100,000 files): one walk over the parsed values
checks depth and numbers, strings are checked only in files whose text has ``\\u`` escapes,
field types are checked by exact type against tables, and the typed stages are built only
when a reader asks for them (benchmarks/record_load.py: about 2.3x a bare json.loads).

The API readers rely on (the index among them): ``load_record(path) -> RunRecord`` (``.doc``,
the whole checked document with provenance resolved in it; ``.provenance``, ``.stages``,
``.fingerprint``, ``.run_id``, ``.started_at``, ``.complete``, ``.exercise``) or
``RecordError`` (``.path``, ``.reason``, ``.newer``); ``Skipped(file, reason)`` for listing.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuprobe.store import provenance as prov
from gpuprobe.store.results import SCHEMA_VERSION, STATUSES, Mark, ResultFileError, StageResult

MAX_BYTES = 32 << 20       # a run's evidence is bounded (log tails, 50 log lines, stacks): room to spare
MAX_DEPTH = 64             # a result nests about 8 deep; a reader recursing 200,000 deep dies
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1   # SQLite's INTEGER
# Only a text with \uD800-\uDFFF escapes can hold a lone surrogate: other files skip the
# string checks.
_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class RecordError(ResultFileError):
    """A result file no reader should use, and why, in one line: ``<file>: <reason>``.

    ``newer`` is true when the file is from a newer gpuprobe (its schema is above ours):
    not corrupt, only not ours to read.
    """

    def __init__(self, path: object, reason: str, newer: bool = False):
        self.path = str(path) if path is not None else None
        self.reason = " ".join(str(reason).split())   # one line, whatever the cause held
        self.newer = newer
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)


@dataclass
class RunRecord:
    """A validated run: typed fields for what readers decide on, ``doc`` for the rest.

    ``provenance`` and each stage's ``provenance`` are resolved (:func:`provenance.resolve`),
    and ``doc`` carries the resolved words too, so a view of ``doc`` never shows a drill
    as ``probed``.
    """

    schema: int
    run_id: str
    started_at: str | None
    finished_at: str | None
    complete: bool
    provenance: str
    fingerprint: dict
    config: dict
    summary: dict
    doc: dict
    path: Path | None = None
    _stages: list[StageResult] | None = field(default=None, repr=False)

    @property
    def stages(self) -> list[StageResult]:
        """The stages, typed (checked on load, built on first use: readers of ``doc`` skip the cost)."""
        if self._stages is None:
            self._stages = [_stage_result(d) for d in self.doc["stages"]]
        return self._stages

    @property
    def hostname(self) -> str | None:
        return self.fingerprint.get("hostname")

    @property
    def exercise(self) -> bool:
        """A fire drill or a simulation: never evidence about a node."""
        return self.provenance in prov.EXERCISES

    def to_dict(self) -> dict:
        return self.doc


@dataclass
class Skipped:
    """A file a reader left out, and why (listed as ``"skipped"`` in ``--json`` output)."""

    file: str
    reason: str

    def to_dict(self) -> dict:
        return {"file": self.file, "reason": self.reason}

    def line(self) -> str:
        return f"warning: skipped {self.file}: {self.reason}"


# -- reading -------------------------------------------------------------------------------
def load_record(path: str | os.PathLike) -> RunRecord:
    """Read, check and type one result file, or raise :class:`RecordError` saying why not."""
    raw = _read_regular(os.fspath(path))
    record = parse_record(raw, path)
    record.path = Path(path)
    return record


def _read_regular(path: str) -> bytes:
    try:
        st = os.stat(path)   # follows symlinks: a loop is ELOOP here, before any open
    except OSError as exc:
        raise RecordError(path, _os_reason(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise RecordError(path, f"not a regular file ({_kind(st.st_mode)})")
    if st.st_size > MAX_BYTES:
        raise RecordError(path, f"too large ({st.st_size} bytes; the limit is {MAX_BYTES})")
    try:
        # O_NONBLOCK: had the name become a FIFO since the stat, the open still returns
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise RecordError(path, _os_reason(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RecordError(path, f"not a regular file ({_kind(mode)})")
        chunks, left = [], MAX_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise RecordError(path, _os_reason(exc)) from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_BYTES:   # it grew after the stat
        raise RecordError(path, f"too large (over {MAX_BYTES} bytes)")
    return raw


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return f"cannot read: {exc.strerror or exc}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def parse_record(raw: bytes | str, path: object = None) -> RunRecord:
    """A record from a file's bytes (or text); :class:`RecordError` names ``path`` and why."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(path, f"not UTF-8 (bad byte at offset {exc.start})") from None
    else:
        text = raw
    doc = _parse_json(text, path)
    if not isinstance(doc, dict):
        raise RecordError(path, f"not a gpuprobe result file (a JSON {type(doc).__name__}, not an object)")
    _check_tree(doc, path, strings="\\u" in text and _SURROGATE.search(text) is not None)
    return build_record(doc, path)


def _reject_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows")


class _Refused(ValueError):
    """Raised from inside json's hook; turned into a RecordError with the file's name."""


def _parse_json(text: str, path: object) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _Refused as exc:
        raise RecordError(path, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise RecordError(path, f"not valid JSON (line {exc.lineno}: {exc.msg}); corrupt or partial file") from None
    except RecursionError:
        raise RecordError(path, f"nested too deeply (the limit is {MAX_DEPTH})") from None
    except ValueError as exc:   # int() of a 4,300+ digit literal, and the like
        raise RecordError(path, f"not usable JSON: {str(exc).split(':')[0]}") from None


def _check_tree(doc: dict, path: object, strings: bool) -> None:
    """Nesting depth, numbers (finite, integers within int64) and, when the text had
    ``\\uD8xx`` escapes, strings that are not Unicode. One pass over every value, a level
    of the tree at a time (no per-value bookkeeping: this is the loader's hot loop)."""
    level: list = [doc]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            raise RecordError(path, f"nested too deeply (the limit is {MAX_DEPTH})")
        below: list = []
        for node in level:
            if type(node) is dict:
                if strings:
                    for key in node:
                        _check_string(key, path)
                values = node.values()
            else:
                values = node
            for value in values:
                kind = type(value)
                if kind is dict or kind is list:
                    below.append(value)
                elif kind is int:
                    if not INT_MIN <= value <= INT_MAX:
                        digits = str(value)
                        raise RecordError(path, f"integer {digits[:24]}{'...' if len(digits) > 24 else ''} "
                                                "is outside SQLite's 64-bit range")
                elif kind is float:
                    if value - value != 0.0:   # inf - inf is NaN; a literal like 1e400 parses to inf
                        raise RecordError(path, "a number overflows to infinity")
                elif strings and kind is str:
                    _check_string(value, path)
        level = below
        depth += 1


def _check_string(value: str, path: object) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(path, "holds a lone surrogate (\\ud800-\\udfff), not text") from None


# -- the typed model -------------------------------------------------------------------------
# The fields readers rely on and the JSON types each may hold (None always allowed). Exact
# types, as json.loads makes them: a bool is never a number here, nor a number a bool.
_TEXT, _INT, _NUM, _OBJ, _LIST, _FLAG = (str,), (int,), (int, float), (dict,), (list,), (bool,)
RUN_FIELDS = {"run_id": _TEXT, "started_at": _TEXT, "finished_at": _TEXT, "complete": _FLAG, "provenance": _OBJ,
              "fingerprint": _OBJ, "config": _OBJ, "summary": _OBJ}
FINGERPRINT_FIELDS = {"hostname": _TEXT, "driver_version": _TEXT, "cuda_driver_version": _TEXT, "simulated": _TEXT,
                      "os": _TEXT, "kernel": _TEXT, "python": _TEXT, "cpu_model": _TEXT, "gpus": _LIST,
                      "torch": _OBJ, "dflex": _OBJ, "nvml": _OBJ}
STAGE_FIELDS = {"gpu": _INT, "device": _TEXT, "reason": _TEXT, "started_at": _TEXT, "duration_s": _NUM,
                "marks": _LIST, "data": _OBJ, "error": _OBJ, "evidence": _OBJ, "signatures": _LIST, "logs": _LIST,
                "provenance": _TEXT, "last_mark": _TEXT}
_WORDS = {_TEXT: "text", _INT: "an integer", _NUM: "a number", _OBJ: "an object", _LIST: "a list",
          _FLAG: "true or false"}


def _fields(d: dict, table: dict, where: str, path: object) -> None:
    for key, types in table.items():
        value = d.get(key)
        if value is not None and type(value) not in types:
            raise RecordError(path, f"{where}{key}: expected {_WORDS[types]}, got {_name(value)}")


def build_record(doc: dict, path: object = None) -> RunRecord:
    """Check the fields readers rely on, resolve provenance, and type the run."""
    schema = doc.get("schema")
    if type(schema) is not int:
        raise RecordError(path, "not a gpuprobe result file (no integer schema)")
    if schema > SCHEMA_VERSION:
        raise RecordError(path, f"schema {schema} is newer than this gpuprobe understands ({SCHEMA_VERSION}); "
                                "upgrade gpuprobe to read it", newer=True)
    if schema < 1:
        raise RecordError(path, f"schema {schema} is not a gpuprobe schema")
    _fields(doc, RUN_FIELDS, "", path)
    stages = doc.get("stages")
    if type(stages) is not list:
        raise RecordError(path, f"stages: expected a list, got {_name(stages)}")
    claimed = doc.get("provenance") or {}
    _fields(claimed, {"kind": _TEXT, "command": _LIST}, "provenance.", path)
    fp = doc.get("fingerprint") or {}
    _check_fingerprint(fp, path)
    config = doc.get("config") or {}
    env = config.get("environment") or {}
    if type(env) is not dict:
        raise RecordError(path, f"config.environment: expected an object, got {_name(env)}")
    failpoints = bool(env.get(prov.FAILPOINTS_ENV)) or bool(claimed.get("failpoints"))
    simulated = bool(fp.get("simulated"))
    kind = prov.resolve(claimed.get("kind"), failpoints=failpoints, simulated=simulated)
    for i, stage in enumerate(stages):
        _check_stage(stage, i, path)
        resolved = prov.resolve(claimed.get("kind"), stage.get("provenance"), failpoints=failpoints,
                                simulated=simulated)
        if stage.get("provenance") is not None or resolved != prov.PROBED:   # a document is only added to
            stage["provenance"] = resolved                                 # where it said otherwise
    if doc.get("provenance") is not None or kind != prov.PROBED:
        doc["provenance"] = {**claimed, "kind": kind}
    return RunRecord(schema, doc.get("run_id") or "", doc.get("started_at"), doc.get("finished_at"),
                     bool(doc.get("complete")), kind, fp, config, doc.get("summary") or {}, doc)


def _check_fingerprint(fp: dict, path: object) -> None:
    _fields(fp, FINGERPRINT_FIELDS, "fingerprint.", path)
    for i, gpu in enumerate(fp.get("gpus") or ()):
        where = f"fingerprint.gpus[{i}]"
        if type(gpu) is not dict:
            raise RecordError(path, f"{where}: expected an object, got {_name(gpu)}")
        for key in ("name", "compute_capability"):
            # NVML's answer, or why there is none: a lost GPU's is {"not_available": "NVML: GPU is lost"}
            value = gpu.get(key)
            if value is not None and type(value) is not str and not (
                    type(value) is dict and type(value.get("not_available")) is str):
                raise RecordError(path, f"{where}.{key}: expected text or {{not_available: text}}, got {_name(value)}")
    for key in ("torch", "dflex", "nvml"):
        version = (fp.get(key) or {}).get("version")
        if version is not None and type(version) is not str:
            raise RecordError(path, f"fingerprint.{key}.version: expected text, got {_name(version)}")


def _check_stage(d: object, i: int, path: object) -> None:
    if type(d) is not dict:
        raise RecordError(path, f"stages[{i}]: expected an object, got {_name(d)}")
    _fields(d, STAGE_FIELDS, f"stages[{i}].", path)
    name, status = d.get("stage"), d.get("status")
    if type(name) is not str or not name:
        raise RecordError(path, f"stages[{i}].stage: expected a stage name, got {_name(name)}")
    if status not in STATUSES:
        shown = repr(status[:40]) if type(status) is str else _name(status)
        raise RecordError(path, f"stages[{i}].status: unknown status {shown} (known: {', '.join(STATUSES)})")
    for j, m in enumerate(d.get("marks") or ()):
        if type(m) is not dict or type(m.get("name")) is not str or type(m.get("t")) not in _NUM \
                or type(m.get("data") or {}) is not dict:
            raise RecordError(path, f"stages[{i}].marks[{j}]: expected {{name: text, t: number, data: object}}")
    process = (d.get("evidence") or {}).get("process")
    if process is not None and (type(process) is not dict or type(process.get("cpu_percent_total") or 0) not in _NUM):
        raise RecordError(path, f"stages[{i}].evidence.process: expected an object with a number cpu_percent_total")
    for j, sig in enumerate(d.get("signatures") or ()):
        if type(sig) is not dict or any(type(sig.get(k) or "") is not str for k in ("id", "title", "explanation", "remedy")):
            raise RecordError(path, f"stages[{i}].signatures[{j}]: expected an object of texts (id, title, ...)")


def _stage_result(d: dict) -> StageResult:
    """A checked stage dict as the typed model the runner writes."""
    return StageResult(stage=d["stage"], status=d["status"], gpu=d.get("gpu"), device=d.get("device"),
                       reason=d.get("reason"), started_at=d.get("started_at"), duration_s=d.get("duration_s"),
                       marks=[Mark(m["name"], m["t"], m.get("data") or {}) for m in d.get("marks") or ()],
                       data=d.get("data") or {}, error=d.get("error"), evidence=d.get("evidence"),
                       signatures=d.get("signatures") or [], logs=d.get("logs") or [],
                       provenance=d.get("provenance") or prov.PROBED)


def _name(value: object) -> str:
    return {str: "text", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
            list: "a list", type(None): "null"}.get(type(value), type(value).__name__)


# -- writing -------------------------------------------------------------------------------
def dump_record(doc: dict) -> str:
    """The JSON text of a run document, checked as the loader will check it.

    The provenance written is the resolved one (:func:`provenance.resolve`): a run with a
    failpoint is stored as ``drill`` whatever its writer claimed.

    Free-form payloads (a probe's data, evidence, a log line) may hold what JSON cannot:
    NaN and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` and
    integers SQLite cannot hold their decimal text, so the evidence is kept. A typed field
    holding one (a duration, a GPU index) is a :class:`RecordError`: the run cannot be
    recorded as it is, and nothing is written.
    """
    plain = _jsonable(doc, 0)   # a copy: the caller's objects are left as they are
    build_record(plain, None)   # checks, and writes the resolved provenance into the copy
    text = json.dumps(plain, indent=1, allow_nan=False)
    if len(text) > MAX_BYTES:
        raise RecordError(None, f"the run's result would be {len(text)} bytes; readers refuse files over {MAX_BYTES}")
    return text


def _jsonable(obj: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise RecordError(None, f"the run's result nests deeper than {MAX_DEPTH}")
    kind = type(obj)
    if kind is str or kind is bool or obj is None:
        return obj
    if kind is float or isinstance(obj, float):
        if obj != obj:
            return "NaN"
        if obj in (float("inf"), float("-inf")):
            return "Infinity" if obj > 0 else "-Infinity"
        return float(obj)
    if isinstance(obj, int):
        return int(obj) if INT_MIN <= obj <= INT_MAX else str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in obj]
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict(), depth)
    if hasattr(obj, "to_json"):
        return _jsonable(obj.to_json(), depth)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


__all__ = ["RunRecord", "RecordError", "Skipped", "load_record", "parse_record", "build_record", "dump_record",
           "MAX_BYTES", "MAX_DEPTH"]
