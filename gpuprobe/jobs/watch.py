"""Run a job and watch it: output passed through unchanged, a stall recorded as evidence.

Progress is output (any byte on stdout or stderr) or a change in the job's stacks. While
the job writes, nothing else is done; once it is quiet, a non-blocking py-spy dump
(plain, ``--nonblocking``: the job is never stopped, so a torch process with many threads
cannot freeze) is taken every ``sample_every`` seconds and compared with the last one.
No output and no change for ``stall`` seconds is a stall: the evidence is gathered as
``gpuprobe attach`` gathers it (one blocking --native dump, then SIGCONT to the tree) and
written as a result file; with ``on_stall="kill"`` the job's tree is then killed.

The job runs in a session of its own with ``PYTHONUNBUFFERED=1`` (so its log is current),
its stdout and stderr through pipes copied byte for byte to ours as they arrive, and the
parent-death signal set, so it never outlives a watcher killed with SIGKILL. SIGTERM and
SIGINT (scancel, pre-emption, Ctrl-C) are forwarded to its process group.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gpuprobe.jobs import observe
from gpuprobe.jobs import samples as smp
from gpuprobe.run import reaper
from gpuprobe.store.results import PASS

EVIDENCE, KILL = "evidence", "kill"
STALL_EXIT = 3
FORWARDED = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1
MAX_LOOKS = 20     # samples kept of one quiet stretch (a long stall must not grow without end)


def default_sample_every(stall: float) -> float:
    """A third of the stall window, 1-60 s: three looks per window, a cost of ~10 ms CPU each."""
    return min(60.0, max(1.0, stall / 3))


def parse_duration(text: str) -> float:
    """ "90", "90s", "15m", "2h", "1h30m" -> seconds."""
    import re

    raw = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        seconds = float(raw)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise ValueError(f"{text!r} is not a duration like 90, 90s, 15m or 1h30m")
        seconds = sum(float(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in parts)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{text!r}: a duration must be more than 0 seconds")
    return seconds


@dataclass
class WatchConfig:
    cmd: list[str]
    results_dir: Path
    stall: float = 900.0
    on_stall: str = EVIDENCE
    sample_every: float | None = None
    env: dict | None = None


@dataclass
class WatchOutcome:
    exit_code: int
    job_returncode: int | None
    stalls: list[Path] = field(default_factory=list)    # result files written at stalls
    completed: Path | None = None                       # the pass record of a clean exit
    killed: bool = False


def _set_pdeathsig() -> None:
    """In the job, before exec: die with the watcher (Linux prctl), never orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Watcher:
    def __init__(self, cfg: WatchConfig, say: Callable[[str], None] | None = None,
                 on_stall: Callable[[dict, Path], None] | None = None):
        self.cfg = cfg
        self.say = say or (lambda line: os.write(2, (line + "\n").encode()))
        self.on_stall_cb = on_stall or (lambda doc, path: None)
        self.every = cfg.sample_every or default_sample_every(cfg.stall)
        self.proc: subprocess.Popen | None = None
        self.closed: set[int] = set()        # our fds that refused a write (reader gone)

    # -- the job --------------------------------------------------------------------------
    def start(self) -> subprocess.Popen:
        env = dict(os.environ if self.cfg.env is None else self.cfg.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(self.cfg.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True, preexec_fn=_set_pdeathsig, bufsize=0)
        return self.proc

    def _forward(self, signum: int, frame: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except OSError:
                pass

    def _copy(self, data: bytes, fd: int) -> None:
        if fd in self.closed:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except BrokenPipeError:
            self.closed.add(fd)  # nobody reads our output any more; the job's keeps being drained

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> WatchOutcome:
        proc = self.start()
        started = time.monotonic()
        previous = {s: signal.signal(s, self._forward) for s in FORWARDED}
        sel = selectors.DefaultSelector()
        targets = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
        for pipe in (proc.stdout, proc.stderr):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe.fileno(), selectors.EVENT_READ)
        outcome = WatchOutcome(exit_code=0, job_returncode=None)
        last_activity = time.monotonic()     # output, or a change in the stacks
        looks: list[smp.Sample] = []         # this quiet stretch's samples
        stalled = False
        try:
            while sel.get_map():
                now = time.monotonic()
                next_look = (looks[-1].t if looks else last_activity) + self.every
                deadline = last_activity + self.cfg.stall
                wait = max(0.0, min(next_look, deadline) - now) if not stalled else max(0.0, next_look - now)
                for key, _ in sel.select(timeout=wait):
                    try:
                        data = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(key.fd)
                        continue
                    self._copy(data, targets[key.fd])
                    last_activity, looks, stalled = time.monotonic(), [], False
                now = time.monotonic()
                if proc.poll() is not None and not sel.get_map():
                    break
                if now - last_activity >= self.every and (not looks or now - looks[-1].t >= self.every):
                    look = self._look(proc.pid)
                    if look is not None:
                        if looks and look.digest is not None and looks[-1].digest is not None \
                                and look.digest != looks[-1].digest:
                            last_activity, looks, stalled = look.t, [], False  # it moved
                        looks = (looks + [look])[-MAX_LOOKS:]
                if not stalled and now - last_activity >= self.cfg.stall and proc.poll() is None:
                    verdict_path = self._stall(proc, looks, now - last_activity)
                    if verdict_path is None:          # the evidence showed movement after all
                        last_activity, looks = time.monotonic(), []
                        continue
                    outcome.stalls.append(verdict_path)
                    stalled = True
                    if self.cfg.on_stall == KILL:
                        self.say(f"gpuprobe watch: --on-stall kill: ending the job's process tree (pid {proc.pid})")
                        reaper.kill_tree(proc.pid, proc.pid, poll=proc.poll)
                        outcome.killed = True
                        break
            code = proc.wait()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            sel.close()
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
            if proc.poll() is None:  # we are going down with an exception: never leave it behind
                reaper.kill_tree(proc.pid, proc.pid, poll=proc.poll)
        outcome.job_returncode = code
        if outcome.killed:
            outcome.exit_code = STALL_EXIT
        else:
            outcome.exit_code = code if code >= 0 else 128 - code
            if code == 0:
                outcome.completed = self._completed(time.monotonic() - started)
        return outcome

    def _look(self, pid: int) -> smp.Sample | None:
        try:
            return observe.take_sample([pid], nonblocking=True)
        except Exception:  # a look is best effort: never lose the job over it
            return None

    def _stall(self, proc: subprocess.Popen, looks: list[smp.Sample], quiet: float) -> Path | None:
        """Record the stall as attach would; None when the final look shows the job moved."""
        t0 = time.monotonic()
        try:
            res, fp = observe.observe([proc.pid], samples=1, prior=looks)
        except observe.NoSuchProcess:
            return None
        if res.data["verdict"]["kind"] == smp.PROGRESSING:
            return None
        res.reason = f"no output for {quiet:.1f} s (--stall {self.cfg.stall:g}); {res.reason}"
        res.data["watch"] = {"stall_s": self.cfg.stall, "sample_every_s": self.every, "quiet_s": round(quiet, 2),
                             "on_stall": self.cfg.on_stall,
                             # from the last output (or stack change) to the evidence in hand
                             "detection_s": round(quiet + time.monotonic() - t0, 2)}
        doc = observe.document(res, fp, note=f"gpuprobe watch: stall of {quiet:.1f} s")
        doc["provenance"]["job_command"] = res.data.get("command")
        path = observe.save(doc, self.cfg.results_dir)
        self.on_stall_cb(doc, path)
        return path

    def _completed(self, seconds: float) -> Path | None:
        """A job that finished with exit 0 under watch: pass evidence for the stage ``job``."""
        from gpuprobe.jobs import allotment
        from gpuprobe.node import fingerprint as fpr
        from gpuprobe.redact import redact_argv
        from gpuprobe.store.results import StageResult, utc_now

        res = StageResult(stage=observe.STAGE, status=PASS, started_at=utc_now(), duration_s=round(seconds, 3),
                          provenance=observe.PROVENANCE,
                          reason=f"completed under gpuprobe watch: exit 0 after {seconds:.1f} s")
        res.data = {"command": redact_argv(self.cfg.cmd), "allotment": allotment.of_process(None),
                    "watch": {"stall_s": self.cfg.stall, "on_stall": self.cfg.on_stall}}
        try:
            return observe.save(observe.document(res, fpr.take().to_dict()), self.cfg.results_dir)
        except OSError as exc:
            self.say(f"gpuprobe watch: could not record the completed job: {exc}")
            return None
