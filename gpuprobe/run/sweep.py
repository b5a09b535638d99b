"""Probe sweeps over SLURM: one ``gpuprobe run`` per node, all writing into one shared
results folder.

Shape: ONE batch job that allocates the nodes (``--nodes N`` or ``--nodelist L``,
``--ntasks-per-node=1``) and starts the probe with ``srun``, one task per node. Why not
a job array: array tasks are scheduled independently, so two of them may land on the
same node and a node may get none, and ``--nodelist`` applies to every task whole (each
task would need all listed nodes). One allocation with one task per node is the only
shape that guarantees "exactly one probe on each of these nodes", and it gives a single
job id to wait on. The price: the job starts when all N nodes are free at once.

Each probe tags its result through the environment (``GPUPROBE_SWEEP_ID``, recorded by
the runner together with ``SLURM_*``), so the sweep finds its own results in a folder
that other runs write into too. The python that submits is the python that probes
(absolute path), and the checkout travels as ``PYTHONPATH``: a job's PATH and cwd are
not the submitting shell's.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpuprobe import exitcodes
from gpuprobe.store.results import ResultFileError, iter_result_files, read_result

log = logging.getLogger(__name__)

SWEEP_ENV = "GPUPROBE_SWEEP_ID"
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                           "RESIZING", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED"})
SLURM_CMD_TIMEOUT_S = 30.0


class SweepError(Exception):
    """A sweep that cannot start: no sbatch, unknown partition, bad node list."""


@dataclass
class SweepSpec:
    """What to probe, where. Paths are absolute by the time a script is written."""

    results_dir: Path
    log_dir: Path
    partition: str | None = None
    nodes: int | None = None              # --nodes N (any N nodes)
    nodelist: str | None = None           # --nodelist L (these nodes; N is their count)
    stage: str | None = None
    only: bool = False
    device: str = "auto"
    timeout: float | None = None          # per stage, passed to gpuprobe run
    options: tuple[str, ...] = ()         # --set pairs, passed through
    time_limit: str = "00:30:00"          # sbatch --time for the whole sweep job
    gpus_per_node: int | None = None
    sbatch_args: tuple[str, ...] = ()
    python: str = field(default_factory=lambda: sys.executable)
    checkout: Path | None = None
    sweep_id: str = field(default_factory=lambda: new_sweep_id())

    @property
    def expected_nodes(self) -> list[str] | None:
        return expand_hostlist(self.nodelist) if self.nodelist else None

    @property
    def node_count(self) -> int:
        hosts = self.expected_nodes
        return len(hosts) if hosts is not None else (self.nodes or 1)


def new_sweep_id() -> str:
    return f"sweep-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


# -- host lists -------------------------------------------------------------------
_GROUP = re.compile(r"\[([^\[\]]+)\]")


def expand_hostlist(spec: str) -> list[str]:
    """``node[01-03,07],gpu1`` -> node01 node02 node03 node07 gpu1 (SLURM's host list syntax).

    Done here rather than with ``scontrol show hostnames`` so that the expected nodes are
    known (and testable) without SLURM; zero padding follows the lower bound's width.
    """
    hosts: list[str] = []
    for part in _split_top_level(spec.strip()):
        if not part:
            raise SweepError(f"empty host name in node list {spec!r}")
        hosts.extend(_expand_one(part, spec))
    seen: set[str] = set()
    return [h for h in hosts if not (h in seen or seen.add(h))]


def _split_top_level(spec: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in spec:
        depth += ch == "["
        depth -= ch == "]"
        if depth < 0 or depth > 1:
            raise SweepError(f"unbalanced brackets in node list {spec!r}")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise SweepError(f"unbalanced brackets in node list {spec!r}")
    parts.append(cur)
    return parts


def _expand_one(part: str, spec: str) -> list[str]:
    match = _GROUP.search(part)
    if not match:
        return [part]
    head, tail = part[: match.start()], part[match.end():]
    out = []
    for item in match.group(1).split(","):
        lo, dash, hi = item.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise SweepError(f"bad range {item!r} in node list {spec!r}")
        width = len(lo)
        for n in range(int(lo), int(hi if dash else lo) + 1):
            out.extend(_expand_one(f"{head}{n:0{width}d}{tail}", spec))
    return out


# -- the batch script ---------------------------------------------------------------
def probe_command(spec: SweepSpec) -> list[str]:
    """The ``gpuprobe run`` each node task executes (absolute python, no PATH lookup)."""
    cmd = [spec.python, "-m", "gpuprobe", "run", "--results", str(spec.results_dir), "--device", spec.device]
    if spec.stage:
        cmd += ["--stage", spec.stage]
    if spec.only:
        cmd.append("--only")
    if spec.timeout is not None:
        cmd += ["--timeout", f"{spec.timeout:g}"]
    for pair in spec.options:
        cmd += ["--set", pair]
    return cmd


def sbatch_script(spec: SweepSpec) -> str:
    """The batch script: directives, the tagging environment, one srun task per node."""
    q = shlex.quote
    directives = [
        f"--job-name=gpuprobe-{spec.sweep_id}",
        f"--nodes={spec.node_count}",
        "--ntasks-per-node=1",
        f"--time={spec.time_limit}",
        # absolute, and not the submitting shell's cwd: the job may start anywhere
        f"--chdir={spec.log_dir}",
        f"--output={spec.log_dir}/{spec.sweep_id}-%j.out",
    ]
    if spec.partition:
        directives.append(f"--partition={spec.partition}")
    if spec.nodelist:
        directives.append(f"--nodelist={spec.nodelist}")
    if spec.gpus_per_node:
        directives.append(f"--gpus-per-node={spec.gpus_per_node}")
    directives += list(spec.sbatch_args)
    lines = ["#!/bin/bash"] + [f"#SBATCH {d}" for d in directives] + [
        f"# gpuprobe sweep {spec.sweep_id}: one probe per node, results into {spec.results_dir}",
        "set -uo pipefail",
        f"export {SWEEP_ENV}={q(spec.sweep_id)}",
        f"export GPUPROBE_RESULTS={q(str(spec.results_dir))}",
    ]
    if spec.checkout:
        lines.append(f"export PYTHONPATH={q(str(spec.checkout))}${{PYTHONPATH:+:$PYTHONPATH}}")
    srun = ["srun", f"--nodes={spec.node_count}", "--ntasks-per-node=1", "--kill-on-bad-exit=0",
            f"--output={spec.log_dir}/{spec.sweep_id}-%j-%N.out"]
    lines += [
        'echo "gpuprobe sweep: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST"',
        " ".join(q(a) for a in srun + probe_command(spec)),
        "rc=$?",
        # a node whose probe failed is data, not a job failure; srun's own errors are reported
        'echo "gpuprobe sweep: srun exit $rc"',
        "exit 0",
        "",
    ]
    return "\n".join(lines)


# -- SLURM commands -----------------------------------------------------------------
def _slurm(cmd: list[str], timeout: float = SLURM_CMD_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SweepError(f"{cmd[0]} not found on PATH: gpuprobe sweep needs the SLURM client commands "
                         "(run it where sbatch works, e.g. a login node)") from None
    except subprocess.TimeoutExpired:
        raise SweepError(f"{' '.join(cmd[:3])} did not answer within {timeout:.0f} s (is slurmctld up?)") from None


def check_slurm(spec: SweepSpec) -> None:
    """Fail early, in one line, when sbatch is missing or the partition is unknown."""
    for tool in ("sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise SweepError(f"{tool} not found on PATH: gpuprobe sweep needs the SLURM client commands "
                             "(run it where sbatch works, e.g. a login node)")
    if spec.partition:
        res = _slurm(["scontrol", "show", "partition", spec.partition])
        if res.returncode != 0 and "not found" not in (res.stdout + res.stderr).lower():
            # no controller, no config: say what scontrol said, not "unknown partition"
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise SweepError(f"cannot ask SLURM about partition {spec.partition!r}: "
                             f"{msg[-1] if msg else 'scontrol exit ' + str(res.returncode)}")
        if res.returncode != 0:
            known = _slurm(["sinfo", "-h", "-o", "%R"]).stdout.split()
            raise SweepError(f"unknown partition {spec.partition!r}"
                             + (f" (known: {', '.join(sorted(set(known)))})" if known else ""))


def submit(spec: SweepSpec) -> tuple[str, Path]:
    """Write the script next to the logs and sbatch it; the job id and the script's path."""
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    script = spec.log_dir / f"{spec.sweep_id}.sbatch"
    script.write_text(sbatch_script(spec))
    res = _slurm(["sbatch", "--parsable", str(script)])
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise SweepError(f"sbatch refused the sweep: {msg[-1] if msg else 'exit ' + str(res.returncode)}")
    job_id = res.stdout.strip().split(";")[0]
    log.info("sweep %s submitted as job %s (%s)", spec.sweep_id, job_id, script)
    return job_id, script


def job_state(job_id: str) -> tuple[str, str]:
    """(state, reason or node list); state "GONE" once squeue has forgotten the job."""
    res = _slurm(["squeue", "-h", "-j", job_id, "--states=all", "-o", "%T|%R"])
    line = res.stdout.strip().splitlines()[:1]
    if res.returncode == 0 and line:
        state, _, where = line[0].partition("|")
        return state.strip(), where.strip()
    if shutil.which("sacct"):   # purged from the controller's memory: ask accounting, when there is one
        acct = _slurm(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
        states = acct.stdout.split()
        if acct.returncode == 0 and states:
            return states[0].split()[0], ""
    return "GONE", ""


def wait(job_id: str, spec: SweepSpec, timeout: float, poll_s: float = 2.0,
         on_progress: Callable[[str, str, int, int], None] | None = None) -> str:
    """Poll until the job leaves the active states or ``timeout`` passes; the last state.

    ``on_progress(state, where, results_found, nodes_expected)`` runs on every poll.
    """
    deadline = time.monotonic() + timeout
    while True:
        state, where = job_state(job_id)
        found = len(collect(spec.results_dir, spec.sweep_id))
        if on_progress:
            on_progress(state, where, found, spec.node_count)
        if state not in ACTIVE_STATES:
            return state
        if time.monotonic() >= deadline:
            return f"TIMEOUT({state})"
        time.sleep(min(poll_s, max(0.05, deadline - time.monotonic())))


# -- results ------------------------------------------------------------------------
@dataclass
class NodeOutcome:
    node: str
    run_id: str | None
    status: str                    # the run's summary status, or "no result"
    exit_code: int | None
    stages: dict[str, str]         # stage -> status
    gpus: list[str]
    path: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def collect(results_dir: Path, sweep_id: str) -> list[dict]:
    """The result documents this sweep wrote (unreadable files are skipped, with a warning)."""
    docs = []
    for path in iter_result_files(results_dir):
        try:
            doc = read_result(path)
        except ResultFileError as exc:
            log.warning("skipping %s", exc)
            continue
        env = (doc.get("config") or {}).get("environment") or {}
        if env.get(SWEEP_ENV) == sweep_id:
            doc["_path"] = str(path)
            docs.append(doc)
    return docs


def outcomes(docs: list[dict], expected: list[str] | None) -> list[NodeOutcome]:
    """One row per node: its latest result, plus "no result" rows for expected nodes that wrote none."""
    by_node: dict[str, dict] = {}
    for doc in sorted(docs, key=lambda d: d.get("started_at") or ""):
        by_node[(doc.get("fingerprint") or {}).get("hostname", "?").split(".")[0]] = doc
    rows = []
    for node, doc in sorted(by_node.items()):
        summary = doc.get("summary") or {}
        rows.append(NodeOutcome(
            node=node, run_id=doc.get("run_id"), status=summary.get("status", "?"),
            exit_code=summary.get("exit_code"),
            stages={s["stage"] + ("" if s.get("gpu") is None else f"[{s['gpu']}]"): s["status"]
                    for s in doc.get("stages") or []},
            gpus=[g.get("name", "?") for g in (doc.get("fingerprint") or {}).get("gpus") or []],
            path=doc.get("_path")))
    for node in expected or []:
        if node.split(".")[0] not in by_node:
            rows.append(NodeOutcome(node, None, "no result", None, {}, [], None))
    return rows


def sweep_exit_code(rows: list[NodeOutcome], final_state: str) -> int:
    """3 if any node hung; 1 if any failed, crashed or wrote nothing; 75 if the wait timed out; else 0."""
    codes = [r.exit_code for r in rows if r.exit_code is not None]
    if exitcodes.HANG in codes:
        return exitcodes.HANG
    if final_state.startswith("TIMEOUT"):
        return exitcodes.TEMPFAIL
    if any(c != exitcodes.OK for c in codes) or any(r.exit_code is None for r in rows) or not rows:
        return exitcodes.FAILED
    return exitcodes.OK


def default_log_dir(results_dir: Path) -> Path:
    """Logs beside the results: the results folder is shared by construction (every node
    writes there), so the submitting host can read the nodes' logs too."""
    return Path(results_dir) / ".sweep-logs"


def absolute(path: os.PathLike | str) -> Path:
    return Path(path).expanduser().resolve()
