"""A run: plan the stages, start each in its own process, watch it, record it.

The run's result file is rewritten after every stage, so a run that is killed keeps
what it finished (in a fallback folder when its own cannot take it: gpuprobe.run.fallback).
Evidence is gathered before anything is killed. Every process of the run carries the run's
mark (gpuprobe.run.marks): what a stage leaves behind is killed by it after the stage, and a
guardian kills it if the run itself is SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from gpuprobe import __version__, paths

from gpuprobe.run import evidence

from gpuprobe.run import guardian, marks, reaper
from gpuprobe.node import fingerprint as fpr
from gpuprobe import signatures
from gpuprobe.child import failpoints
from gpuprobe.run.fallback import ResultWriter
from gpuprobe.run.provenance import Provenance
from gpuprobe.run.launcher import DirectProcess, ForkServerClient, LaunchError, StageProcess
from gpuprobe.redact import recorded_environment, redact_argv, redact_mapping, redact_text
from gpuprobe.store.results import (CRASH, FAIL, HANG, PASS, SKIP, SLOW, UNKILLABLE, Mark, StageResult, new_run_id,
                              summarise, utc_now, SCHEMA_VERSION, SUFFIX)
from gpuprobe.run.stages import StageSpec, required_by, stall_window_for
from gpuprobe.run.watchdog import EventTail, Supervision, classify_timeout, supervise

log = logging.getLogger(__name__)
BAD = (FAIL, CRASH, HANG, SLOW, UNKILLABLE)
LOG_TAIL_CHARS = 4000
MAX_LOGS = 50


@dataclass
class RunConfig:
    stages: list[StageSpec]               # from stages.plan(): each with its timeout and stall window
    results_dir: Path
    device: str = "auto"                  # auto | cpu | cuda
    gpus: list[int] | None = None         # GPU indices for the GPU stages (default: [0])
    fork_server: bool = True
    # the fork server's imports (torch, the trainer) are not a stage's own work: they get
    # this long (or the stage's timeout, if longer) before they count as that stage's hang
    preload_timeout_s: float = 120.0
    options: dict = field(default_factory=dict)   # {"buffer": {"bisect": True}}: gpuprobe.run.options.resolve()
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    keep_scratch: bool = False


class Runner:
    """Runs a :class:`RunConfig`; ``on_event(stage, gpu, event)`` feeds live progress."""

    def __init__(self, cfg: RunConfig, on_event: Callable[[str, int | None, dict], None] | None = None,
                 on_stage_done: Callable[[StageResult], None] | None = None, fingerprint: fpr.Fingerprint | None = None):
        # a stage table entry not from stages.plan() gets its stall window here
        cfg.stages = [s if s.stall_window_s is not None else replace(s, stall_window_s=stall_window_for(s.timeout_s))
                      for s in cfg.stages]
        self.cfg = cfg
        self.on_event = on_event or (lambda *_: None)
        self.on_stage_done = on_stage_done or (lambda _: None)
        self.fingerprint = fingerprint or fpr.take()   # the CLI passes the one its checks used
        self.device, self.device_reason = self._resolve_device()
        self.run_id = new_run_id(self.fingerprint.hostname)
        self.writer = ResultWriter(Path(cfg.results_dir) / f"{self.run_id}{SUFFIX}")
        spec = os.environ.get(failpoints.ENV, "")
        self.provenance = Provenance(failpoints.parse(spec), spec.strip(), self.fingerprint.simulated, cfg.options)
        self.stages: list[StageResult] = []
        self.started_at = utc_now()
        self.preload: dict = {}
        self._server: ForkServerClient | None = None
        self._server_failed: str | None = None
        self._current: StageProcess | None = None   # the stage process in flight
        self._current_name: str | None = None
        self.interrupted: str | None = None
        self._blocked: set[tuple[str, int | None]] = set()   # skipped because a required stage went bad
        self._guardian = None

    @property
    def path(self) -> Path:
        """Where the result file is (a fallback folder's, once the results folder failed)."""
        return self.writer.path

    # -- planning -------------------------------------------------------------------
    def _resolve_device(self) -> tuple[str, str]:
        if self.cfg.device != "auto":
            return self.cfg.device, f"--device {self.cfg.device}"
        if self.fingerprint.gpus:
            return "cuda", f"NVML sees {len(self.fingerprint.gpus)} GPU(s)"
        why = self.fingerprint.nvml.get("reason") or "NVML reports no GPU"
        return "cpu", f"no GPU visible ({why}): running every stage that can run on the CPU"

    def _gpu_indices(self) -> list[int | None]:
        if self.device != "cuda":
            return [None]
        return list(self.cfg.gpus) if self.cfg.gpus else [0]

    def document(self, complete: bool) -> dict:
        env = recorded_environment(os.environ)
        fp = self.fingerprint.to_dict()
        kind, note = self.provenance.run(self.stages, [s.name for s in self.cfg.stages])
        return {
            "schema": SCHEMA_VERSION,
            "run_id": self.run_id,
            "tool": {"name": "gpuprobe", "version": __version__},
            "started_at": self.started_at,
            "finished_at": utc_now() if complete else None,
            "complete": complete,
            **({"interrupted": self.interrupted} if self.interrupted else {}),
            "provenance": {"kind": kind, "command": redact_argv(self.cfg.command), "note": note},
            "fingerprint": fp,
            "config": {
                "device": self.device, "device_reason": self.device_reason,
                "gpus": [g for g in self._gpu_indices() if g is not None],
                "stages": [s.name for s in self.cfg.stages],
                "timeouts_s": {s.name: s.timeout_s for s in self.cfg.stages},
                "stall_windows_s": {s.name: s.stall_window_s for s in self.cfg.stages},
                "options": redact_mapping(self.cfg.options), "fork_server": self.cfg.fork_server,
                "preload": self.preload, "environment": env,
            },
            "stages": [s.to_dict() for s in self.stages],
            "summary": summarise(self.stages),
        }

    def save(self, complete: bool) -> None:
        self.writer.write(self.document(complete))   # never raises: a fallback folder, else logged

    # -- running --------------------------------------------------------------------
    def run(self) -> dict:
        scratch = Path(tempfile.mkdtemp(prefix=f"gpuprobe-{self.run_id}-"))
        self._guardian = guardian.start(self.run_id)   # before the first child: covers a SIGKILL of this process
        try:
            self.save(complete=False)
            preload = sorted({m for s in self.cfg.stages if not self._missing_torch(s) for m in s.preload})
            if self.cfg.fork_server and preload:
                self._server = ForkServerClient(preload, scratch, self._child_env())
            for spec in self.cfg.stages:
                for gpu in (self._gpu_indices() if self.device == "cuda" else [None]):
                    result = self._run_one(spec, gpu, scratch)
                    result.provenance = self.provenance.stage(result)   # skipped ones too: a drill is a drill
                    self._kill_strays(result)
                    self.stages.append(result)
                    self.save(complete=False)
                    self.on_stage_done(result)
            self.save(complete=True)
            return self.document(complete=True)
        except BaseException as exc:  # Ctrl-C or SIGTERM: take the stage down with us, keep the rest
            self._abandon_current(exc)
            raise
        finally:
            if self._server is not None:
                self._server.close()
            reaper.kill_marked(self.run_id)   # whatever of the run is left, daemons included
            guardian.stop(self._guardian)
            if self.cfg.keep_scratch:
                log.info("scratch kept in %s", scratch)
            else:
                shutil.rmtree(scratch, ignore_errors=True)

    def _abandon_current(self, exc: BaseException) -> None:
        """Kill the stage in flight (it lives in its own session, out of the terminal's reach)."""
        proc, self._current = self._current, None
        if proc is not None:
            reaper.kill_tree(proc.pid, proc.pid, poll=proc.poll)
        # the name stays set after a stage ends: between two stages, say which one had finished
        where = (f"during stage {self._current_name}" if proc is not None else
                 f"after stage {self._current_name}" if self._current_name else "before the first stage")
        self.interrupted = f"interrupted ({type(exc).__name__}) {where}"
        try:
            self.save(complete=False)
        except OSError as err:
            log.error("could not save the interrupted run: %s", err)

    def _kill_strays(self, result: StageResult) -> None:
        """Kill what the stage left that its process group and tree did not hold (a daemon
        that double-forked away): every marked process but the fork server."""
        keep = {self._server.pid} if self._server is not None and self._server.alive() else set()
        report = reaper.kill_marked(self.run_id, exclude=keep)
        if report["found"]:
            result.evidence = {**(result.evidence or {}), "strays_killed": report}

    def _child_env(self) -> dict:
        env = dict(os.environ)
        env[marks.ENV] = self.run_id   # every process of the run, and all they start, carry it
        env.setdefault("PYTHONUNBUFFERED", "1")
        # the children must import this very gpuprobe, even when run from elsewhere
        root = str(paths.package_root())
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def _blocker(self, spec: StageSpec, gpu: int | None) -> StageResult | None:
        """The first result on this GPU of a stage ``spec`` requires that went bad (or was
        itself skipped for one), if any."""
        needed = required_by(spec.name)
        for earlier in self.stages:
            if earlier.gpu == gpu and earlier.stage in needed and (earlier.status in BAD or (earlier.stage, gpu) in self._blocked):
                return earlier
        return None

    def _run_one(self, spec: StageSpec, gpu: int | None, scratch: Path) -> StageResult:
        device = "cuda" if (self.device == "cuda") else "cpu"
        base = StageResult(stage=spec.name, status=SKIP, gpu=gpu, device=device, started_at=utc_now())
        blocker = self._blocker(spec, gpu)
        if blocker is not None:
            why = blocker.status if blocker.status in BAD else "skip (a stage it requires went bad)"
            base.reason = f"not run: it requires stage '{blocker.stage}', which ended in {why}"
            self._blocked.add((spec.name, gpu))
            return base
        if self._missing_torch(spec):
            base.reason = "torch is not installed here (a light install): pip install 'gpuprobe[probes]'"
            return base
        if spec.gpu_only and device == "cpu" and spec.name == "cuda":
            why = "--device cpu" if self.cfg.device == "cpu" else f"no GPU visible ({self.fingerprint.nvml.get('reason')})"
            base.reason = f"CUDA not probed: {why}"
            return base
        if spec.preload and self._server is not None:
            waited = self._await_server(spec, gpu)
            if waited is not None:
                return waited
        tag = f"{spec.name}{'' if gpu is None else f'.gpu{gpu}'}"
        events, stacks, logf = (scratch / f"{tag}.events.jsonl", scratch / f"{tag}.stacks.txt", scratch / f"{tag}.log")
        # what the child reads (the deadline is the parent's business, never sent)
        config = {"device": device, "gpu": gpu, "options": {spec.name: self.cfg.options.get(spec.name, {})},
                  "failpoints": self.provenance.failpoint_spec, "preload": self.preload}
        started = time.monotonic()
        proc = self._launch(spec, config, events, stacks, logf)
        self._current, self._current_name = proc, spec.name
        sup = supervise(proc, EventTail(events), spec.timeout_s, lambda ev: self.on_event(spec.name, gpu, ev), started)
        result = self._verdict(base, spec, proc, sup, stacks, logf)
        self._current = None
        return result

    @staticmethod
    def _missing_torch(spec: StageSpec) -> bool:
        """The stage needs torch and this install has none (never imported here: only found)."""
        import importlib.util

        return "torch" in spec.preload and importlib.util.find_spec("torch") is None

    def _launch(self, spec: StageSpec, config: dict, events: Path, stacks: Path, logf: Path) -> StageProcess:
        if spec.preload and self._server is not None and self._server_failed is None:
            try:
                return self._server.spawn(spec.name, config, events, stacks, logf)
            except LaunchError as exc:
                self._server_failed = str(exc)
                log.warning("fork server unusable (%s); starting stages directly", exc)
        return DirectProcess(spec.name, config, events, stacks, logf, self._child_env())

    def _await_server(self, spec: StageSpec, gpu: int | None) -> StageResult | None:
        """Wait for the fork server's imports; a stuck import is this stage's hang."""
        server = self._server
        if server.ready is not None or self._server_failed:
            return None
        bound = max(spec.timeout_s, self.cfg.preload_timeout_s)
        sup = supervise(_ServerReady(server), EventTail(server.events), bound,
                        lambda ev: self.on_event(spec.name, gpu, ev))
        if server.ready is not None:
            self.preload = {"imports_s": server.ready.get("imports"), "errors": server.ready.get("errors")}
            return None
        base = StageResult(stage=spec.name, status=SKIP, gpu=gpu, started_at=utc_now(),
                           device="cuda" if self.device == "cuda" else "cpu")
        if sup.outcome == "exited":  # the server died while importing: stages start directly
            self._server_failed = f"fork server exited with {sup.returncode} while importing"
            return None
        result = self._verdict(base, replace(spec, timeout_s=bound), server, sup, server.stacks, server.log)
        result.reason = f"importing {', '.join(spec.preload)} did not finish: {result.reason}"
        self._server_failed = "fork server hung while importing"
        self._server = None
        return result

    # -- the verdict, step by step ----------------------------------------------------
    def _verdict(self, res: StageResult, spec: StageSpec, proc: StageProcess, sup: Supervision,
                 stacks: Path, logf: Path) -> StageResult:
        """What happened to one stage process: its marks and logs, then how it ended."""
        self._record_progress(res, sup)
        if sup.outcome == "timeout":
            self._judge_timeout(res, spec, proc, sup, stacks, logf)
        elif sup.result is None:
            self._judge_crash(res, proc, sup, logf)
        else:
            self._take_reported(res, proc, sup, logf)
        res.signatures = signatures.match(res, self.fingerprint)
        self.provenance.explain(res)   # a failpoint's doing says so, first
        return res

    @staticmethod
    def _record_progress(res: StageResult, sup: Supervision) -> None:
        """Duration, marks and log lines, in seconds since the stage started."""
        res.duration_s = round(sup.ended - sup.started, 3)
        res.marks = [Mark(m["name"], round(m["t"] - sup.started, 4), m.get("data") or {}) for m in sup.marks]
        res.logs = [{"t": round(e["t"] - sup.started, 4), "level": e.get("level"), "msg": e.get("msg"),
                     "data": e.get("data") or {}} for e in sup.events if e.get("ev") == "log"][-MAX_LOGS:]

    def _judge_timeout(self, res: StageResult, spec: StageSpec, proc: StageProcess, sup: Supervision,
                       stacks: Path, logf: Path) -> None:
        """Time is up: hang or slow from the marks, evidence before the kill, then the kill."""
        timeout = spec.timeout_s
        status, detail = classify_timeout(sup, spec.stall_window_s)
        ev = self._gather_evidence(res, proc, stacks, logf)
        survivors = ev["kill"]["survivors"]
        res.status = UNKILLABLE if survivors else status
        res.evidence = ev
        res.data = {"timeout_s": timeout, "timed_out_at_unix": round(time.time() - (time.monotonic() - sup.ended), 4),
                    **detail}
        last = res.last_mark or "(no mark)"
        if res.status == SLOW:
            res.reason = f"timed out after {timeout:g} s while still making progress (last mark {last})"
        else:
            res.reason = f"no progress for {detail['quiet_for_s']:.1f} s; timed out after {timeout:g} s at {last}"
        if survivors:
            res.reason += f"; {len(survivors)} process(es) survived SIGKILL (D state): the node needs an admin"

    def _gather_evidence(self, res: StageResult, proc: StageProcess, stacks: Path, logf: Path) -> dict:
        """Stacks, process and GPU snapshots while the stage still hangs; then kill its tree."""
        t0 = time.monotonic()
        ev = evidence.collect(proc.pid, stacks, [res.gpu] if res.gpu is not None else None)
        ev["kill"] = reaper.kill_tree(proc.pid, proc.pid, poll=proc.poll)
        ev["verdict_latency_s"] = round(time.monotonic() - t0, 3)
        ev["log_tail"] = _tail(logf)
        kernels = _static_kernels(self.fingerprint)
        if kernels:
            ev["kernels"] = kernels   # the static verdict, for signatures that join it with the stacks
        return ev

    @staticmethod
    def _judge_crash(res: StageResult, proc: StageProcess, sup: Supervision, logf: Path) -> None:
        """Exited without a result: a signal or an exit code."""
        res.status = CRASH
        code = sup.returncode
        res.reason = (f"killed by signal {_signame(-code)}" if code is not None and code < 0
                      else f"exited with code {code} without a result")
        res.evidence = {"log_tail": _tail(logf), "returncode": code}
        reaper.kill_tree(proc.pid, proc.pid, poll=proc.poll)  # a crashed stage may leave grandchildren

    @staticmethod
    def _take_reported(res: StageResult, proc: StageProcess, sup: Supervision, logf: Path) -> None:
        """The stage reported its own result (pass, skip or fail)."""
        result = sup.result or {}
        res.status = result.get("status", FAIL)
        res.reason = result.get("reason")
        res.data = result.get("data") or {}
        res.error = result.get("error")
        if res.status != PASS:
            res.evidence = {"log_tail": _tail(logf)} if res.status == FAIL else None
        reaper.kill_tree(proc.pid, proc.pid, poll=proc.poll)  # stray grandchildren


def _static_kernels(fingerprint) -> dict | None:
    """The kernel check for this node (gpuprobe.kernels.gate), from the scan cache; None when nothing to check."""
    from gpuprobe.kernels import gate

    try:
        return gate.evidence(fingerprint.to_dict())
    except Exception as exc:  # evidence must never cost the verdict
        log.warning("static kernel check failed: %s", exc)
        return None


class _ServerReady:
    """Adapts the fork server to StageProcess: 'done' once it reports ready."""

    def __init__(self, server: ForkServerClient):
        self.server = server
        self.pid = server.pid

    def poll(self) -> int | None:
        code = self.server.poll()
        if self.server.ready is not None:
            return 0
        return code


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_CHARS))
            return redact_text(fh.read().decode(errors="replace"))   # a stage may print its arguments
    except OSError:
        return ""


def _signame(num: int) -> str:
    import signal

    try:
        return signal.Signals(num).name
    except ValueError:
        return str(num)
