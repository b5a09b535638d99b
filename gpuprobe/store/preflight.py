"""Preflight: should a job start on this node? Answered from evidence, in well under a second.

The node is fingerprinted through NVML and package metadata only (no torch import, no
CUDA context). Evidence is looked up in the result index of each results folder, per
requested stage: the runs on this exact stack first (GPU model, arch, driver, CUDA, torch,
dflex), else the runs on the same GPU model. Skipped stages are not evidence, and only real
evidence (``probed``, ``observed``, ``reported``, ``static``: gpuprobe.store.provenance.EVIDENCE)
judges a real node: fire drills (``drill``) and simulations (``simulated``) count only for a
node that is itself simulated (an NVML fake), so a drill never condemns a real node.

The rule (latest evidence wins, per stage; runs without a date, as in hand-written field
reports, count as older than every dated run):
  * transient (exit 75): NVML reports a lost or unreadable GPU on this node: retry elsewhere;
  * known-incompatible (exit 4): for some requested stage, the latest run in scope was
    hang, slow, fail, crash or hang-unkillable (no pass since);
  * ok (exit 0): every requested stage's latest run in scope passed;
  * no-evidence (exit 0; 75 with ``strict``): some requested stage has no runs in scope,
    and none is known bad.
``live`` stages are probed now, with tight timeouts; their result is the newest evidence.

Static evidence comes first: when the node has a GPU and the stack has CUDA binaries (a CUDA
build of torch, dflex's kernels, torch extensions), the kernel check (``gpuprobe kernels``,
from the scan cache) judges them for this GPU and driver. A stack whose binaries cannot run
here is known-incompatible without any probe; a JIT-only one passes with a warning and its cost.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpuprobe import exitcodes
from gpuprobe.node.fingerprint import Fingerprint
from gpuprobe.store import provenance as prov
from gpuprobe.store.index import DIRECT_LIMIT, PREFLIGHT_WAIT_S, IndexBusy, stack_id
from gpuprobe.run.stages import STAGE_NAMES

log = logging.getLogger(__name__)

FINGERPRINT_ENV = "GPUPROBE_PREFLIGHT_FINGERPRINT"
BAD = ("fail", "crash", "hang", "slow", "hang-unkillable")
OK, INCOMPATIBLE, NO_EVIDENCE, TRANSIENT = "ok", "known-incompatible", "no-evidence", "transient"
LATEST = 5   # runs kept per stage as evidence in the answer
# Evidence from the user's own jobs (gpuprobe attach / watch): judged by default when there is
# some, but never "missing" unless asked for (no node has to have run a job to be trusted)
OBSERVED_STAGES = ("job",)
PROVENANCES = prov.EVIDENCE
LIVE_TIMEOUT_S = 30.0


class PreflightError(exitcodes.UsageProblem, ValueError):
    """Bad preflight input (unknown stage, unreadable fingerprint file): a usage error."""


@dataclass
class StageEvidence:
    stage: str
    scope: str | None = None          # "stack" | "model" | "live" | None (no evidence)
    status: str | None = None         # the latest run's status
    runs: int = 0
    counts: dict = field(default_factory=dict)
    latest: list[dict] = field(default_factory=list)   # newest first: run_id, host, at, status, reason, ...
    signatures: list[dict] = field(default_factory=list)
    remedies: list[str] = field(default_factory=list)   # static evidence: what the kernel check advises

    @property
    def bad(self) -> bool:
        return self.status in BAD

    def describe(self) -> str:
        if self.scope is None:
            return "no evidence"
        if self.scope == "static":
            return (self.latest[0].get("reason") or self.status or "") if self.latest else (self.status or "")
        where = {"stack": "on this stack", "model": "on this GPU model (other stacks)", "live": "probed now"}[self.scope]
        counts = ", ".join(f"{s} {n}/{self.runs}" for s, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        head = self.latest[0] if self.latest else {}
        text = f"{counts} {where}; latest {self.status}"
        if head:
            when = f" {head['at'][:16]}" if head.get("at") else ""  # field reports may carry no date
            exercise = f", {head['provenance']}" if head.get("provenance") in prov.EXERCISES else ""
            text += f"{when} on {head.get('host')} (run {head.get('run_id')}{exercise})"
            if self.bad and head.get("reason"):
                text += f": {head['reason']}"
            if self.bad and head.get("cpu_pct") is not None and "% CPU" not in (head.get("reason") or ""):
                text += f", {head['cpu_pct']:.0f}% CPU"
        return text


@dataclass
class Verdict:
    verdict: str
    exit_code: int
    reason: str
    node: dict
    stages: list[StageEvidence]
    advice: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped_message: str | None = None
    live_run: str | None = None
    skipped: list[dict] = field(default_factory=list)   # [{"file", "reason"}]: result files left out

    @property
    def bad_stages(self) -> list[StageEvidence]:
        return [s for s in self.stages if s.bad]

    def to_dict(self) -> dict:
        d = asdict(self)
        for s, ev in zip(d["stages"], self.stages):
            s["summary"] = ev.describe()
        return d


# -- the node ------------------------------------------------------------------------
def node_fingerprint(path: str | os.PathLike | None = None) -> tuple[Fingerprint, str]:
    """This node's fingerprint (NVML, no torch), or one from a file; and where it came from."""
    from gpuprobe.node import fingerprint

    source = str(path) if path else os.environ.get(FINGERPRINT_ENV) or None
    if source:
        try:
            return fingerprint.load(Path(source)), source
        except (OSError, ValueError) as exc:
            origin = "" if path else f" (from {FINGERPRINT_ENV})"
            raise PreflightError(f"cannot use fingerprint {source}{origin}: {getattr(exc, 'strerror', None) or exc}") from None
    return fingerprint.take(), "NVML"


def transient_reason(fp: Fingerprint) -> str | None:
    """Why this node cannot be judged right now (a GPU NVML lists but cannot read), or None."""
    for gpu in fp.gpus:
        if isinstance(gpu, dict) and gpu.get("error"):
            return f"GPU {gpu.get('index')}: {gpu['error']}"
        name = gpu.get("name") if isinstance(gpu, dict) else None
        if isinstance(name, dict) and name.get("not_available"):
            return f"GPU {gpu.get('index')}: {name['not_available']}"
    return None


# -- evidence --------------------------------------------------------------------------
def _lookup(conn, column: str, value: str, stages: list[str], provenances: tuple[str, ...]) -> dict[str, StageEvidence]:
    marks = ",".join("?" * len(stages))
    pmarks = ",".join("?" * len(provenances))
    where = f"{column}=? AND stage IN ({marks}) AND status != 'skip' AND provenance IN ({pmarks})"
    args = [value, *stages, *provenances]
    found: dict[str, StageEvidence] = {}
    for stage, status, n in conn.execute(f"SELECT stage, status, COUNT(*) FROM runs WHERE {where} GROUP BY 1, 2", args):
        ev = found.setdefault(stage, StageEvidence(stage))
        ev.counts[status] = n
        ev.runs += n
    rows = conn.execute(
        "SELECT stage, status, at, run_id, hostname, reason, last_mark, cpu_pct, signatures, provenance FROM"
        " (SELECT *, ROW_NUMBER() OVER (PARTITION BY stage ORDER BY at DESC, run_id DESC) AS rn"
        f" FROM runs WHERE {where}) WHERE rn <= {LATEST} ORDER BY stage, rn", args)
    for stage, status, at, run_id, host, reason, last_mark, cpu, sigs, kind in rows:
        ev = found[stage]
        if ev.status is None:
            ev.status = status
        ev.latest.append({"run_id": run_id, "host": host, "at": at, "status": status, "reason": reason,
                          "last_mark": last_mark, "cpu_pct": cpu, "provenance": kind})
        for sig in json.loads(sigs) if sigs and status in BAD else []:
            if sig.get("id") not in {s.get("id") for s in ev.signatures}:
                ev.signatures.append(sig)
    return found


def lookup(folders: list[Path], fp: Fingerprint, stages: list[str],
           cache: bool = True) -> tuple[dict[str, StageEvidence], list[str], str | None, list[dict]]:
    """Per stage: exact stack evidence, else same-model evidence. Also the folders, the skip
    note and the skipped files ({"file", "reason"})."""
    from gpuprobe.store.matrix import open_evidence

    key = fp.stack_key()
    provenances = PROVENANCES + prov.EXERCISES if fp.simulated else PROVENANCES
    # a locked index must not hold a job start: past its budget, read the files or answer 75
    ev = open_evidence(folders, cache=cache, quick=True, wait_s=PREFLIGHT_WAIT_S, direct_limit=DIRECT_LIMIT)
    try:
        exact = _lookup(ev.conn, "stack_id", stack_id(key), stages, provenances)
        missing = [s for s in stages if s not in exact]
        model = _lookup(ev.conn, "gpu_model", key["gpu_model"], missing, provenances) if missing else {}
    finally:
        ev.close()
    out = {}
    for s in stages:
        if s in exact:
            exact[s].scope = "stack"
            out[s] = exact[s]
        elif s in model:
            model[s].scope = "model"
            out[s] = model[s]
        else:
            out[s] = StageEvidence(s)
    skipped = [{"file": str(s.folder / p), "reason": e} for s in ev.stats for p, e in s.unreadable]
    return out, [str(f) for f in ev.folders], ev.unreadable_message, skipped


def live_probe(stages: list[str], folder: Path, timeout: float = LIVE_TIMEOUT_S) -> tuple[dict[str, StageEvidence], str]:
    """Run ``stages`` now (each alone, tight timeout); their results as evidence, and the result file."""
    import tempfile

    from gpuprobe import paths
    from gpuprobe.run import stages as stage_table
    from gpuprobe.run.runner import RunConfig, Runner

    try:
        target = paths.ensure_writable(paths.ResultsDir(folder, "--results"))
    except paths.ResultsDirError:
        target = Path(tempfile.mkdtemp(prefix="gpuprobe-preflight-"))
    cfg = RunConfig(stages=stage_table.plan(names=stages, timeout=timeout, stall_window=min(5.0, timeout / 2)),
                    results_dir=target, options={})
    runner = Runner(cfg)
    doc = runner.run()
    out: dict[str, StageEvidence] = {}
    for st in doc["stages"]:
        if st["status"] == "skip":
            continue
        ev = out.setdefault(st["stage"], StageEvidence(st["stage"], scope="live"))
        ev.counts[st["status"]] = ev.counts.get(st["status"], 0) + 1
        ev.runs += 1
        if ev.status is None or st["status"] in BAD:
            ev.status = st["status"]
        ev.latest.insert(0, {"run_id": doc["run_id"], "host": doc["fingerprint"]["hostname"], "at": st.get("started_at"),
                             "status": st["status"], "reason": st.get("reason"), "last_mark": st.get("last_mark"),
                             "cpu_pct": ((st.get("evidence") or {}).get("process") or {}).get("cpu_percent_total")})
        ev.signatures += [s for s in st.get("signatures") or [] if isinstance(s, dict)]
    return out, str(runner.path)


# -- the answer ------------------------------------------------------------------------
def check_stages(stages: list[str] | None, observed: bool = True) -> list[str]:
    known = list(STAGE_NAMES) + (list(OBSERVED_STAGES) if observed else [])
    stages = list(stages or known)
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise PreflightError(f"unknown stage {', '.join(unknown)} (known: {', '.join(known)})")
    return [s for s in known if s in stages]


def evaluate(folders: list[Path], fp: Fingerprint, stages: list[str] | None = None, strict: bool = False,
             live: list[str] | None = None, live_timeout: float = LIVE_TIMEOUT_S, cache: bool = True) -> Verdict:
    asked = set(stages or [])
    stages = check_stages(stages)
    live = check_stages(live, observed=False) if live else []
    key = fp.stack_key()
    node = {"hostname": fp.hostname, "stack": key, "stack_id": stack_id(key), "simulated": fp.simulated}
    transient = transient_reason(fp)
    if transient:
        return Verdict(TRANSIENT, exitcodes.TEMPFAIL, f"{transient}: this node cannot be judged now; retry elsewhere",
                       node, [StageEvidence(s) for s in stages],
                       advice=[f"resubmit excluding this node: sbatch --exclude={fp.hostname} ... "
                               "(scripts/submit_job.sh --resubmit-elsewhere does it; a plain scontrol requeue "
                               "may land here again)",
                               "ask an admin to check the GPU (nvidia-smi -q; Xid errors in dmesg)"])
    static = static_evidence(fp)
    try:
        evidence, sources, skipped, skipped_files = lookup(folders, fp, stages, cache=cache)
    except IndexBusy as exc:  # a locked index and too many files to read in the budget: say so, exit 75
        return Verdict(TRANSIENT, exitcodes.TEMPFAIL, str(exc), node, [StageEvidence(s) for s in stages],
                       advice=["retry in a moment, or pass --no-cache to read every result file (slower)"])
    live_run = None
    if live and not (static and static.bad):  # the binaries cannot run here: nothing to probe
        probed, live_run = live_probe(live, folders[0], live_timeout)
        evidence.update({s: ev for s, ev in probed.items() if s in evidence or s in live})
        stages = [s for s in check_stages(None) if s in evidence]
    ordered = [evidence[s] for s in stages
               if evidence[s].scope is not None or s not in OBSERVED_STAGES or s in asked] + ([static] if static else [])
    bad = [e for e in ordered if e.bad]
    missing = [e.stage for e in ordered if e.scope is None]
    warnings = [f"warning: {static.describe()}"] + static.remedies if static and not static.bad and static.remedies else []
    if bad:
        verdict, code = INCOMPATIBLE, exitcodes.INCOMPATIBLE
        reason = "; ".join(f"{e.stage}: {e.describe()}" for e in bad)
    elif missing:
        verdict, code = NO_EVIDENCE, (exitcodes.TEMPFAIL if strict else exitcodes.OK)
        reason = f"no evidence for {', '.join(missing)} on {key['gpu_model']}"
        passed = [e.stage for e in ordered if e.scope]
        reason += f"; passed: {', '.join(passed)}" if passed else ""
    else:
        verdict, code = OK, exitcodes.OK
        reason = "latest evidence passed for " + ", ".join(f"{e.stage} ({e.scope})" for e in ordered)
    return Verdict(verdict, code, reason, node, ordered, advice=advice(bad, fp) + warnings, sources=sources,
                   skipped_message=skipped, live_run=live_run, skipped=skipped_files)


def static_evidence(fp: Fingerprint) -> StageEvidence | None:
    """The kernel check for this node as evidence (stage ``kernels``, scope ``static``), or None.

    The scanner is imported only when there is something to check (gpuprobe.kernels.gate).
    """
    from gpuprobe.kernels import gate

    fpd = fp.to_dict()
    if not gate.worth_checking(fpd):
        return None
    report = gate.static_report(fpd)
    if report is None or not any(b.candidate.in_stack for b in report.binaries):
        return None   # no CUDA binary in the stack (e.g. a CPU-only torch extension): nothing to say
    status = "fail" if report.cannot_run else "pass"
    if report.cannot_run:
        b = report.cannot_run[0]
        more = f" (and {len(report.cannot_run) - 1} more)" if len(report.cannot_run) > 1 else ""
        reason = f"static check: {report.verdict}: {b.path}{more}: {b.reason}"
    elif report.jit:
        from gpuprobe.kernels.jitcache import human_size

        total = sum(b.jit_bytes for b in report.jit)
        reason = (f"static check: jit: {len(report.jit)} binar{'ies' if len(report.jit) != 1 else 'y'} carry only PTX "
                  f"for this GPU; the driver JIT-compiles {human_size(total)} of PTX on first load (minutes of full "
                  f"CPU for a big library, once per node while the cache keeps it): {report.jit[0].path}")
    else:
        reason = f"static check: {report.summary_line()}"
    return StageEvidence("kernels", scope="static", status=status, runs=1, counts={status: 1},
                         latest=[{"run_id": None, "host": fp.hostname, "at": None, "status": status, "reason": reason,
                                  "last_mark": None, "cpu_pct": None}],
                         remedies=list(report.remedies) if (report.cannot_run or report.jit) else [])


def advice(bad: list[StageEvidence], fp: Fingerprint) -> list[str]:
    """What a person (or a job script) can do about a known-incompatible node."""
    if not bad:
        return []
    static = [e for e in bad if e.scope == "static"]
    probed = [e for e in bad if e.scope != "static"]
    out: list[str] = []
    for e in static:   # the stack's binaries cannot run here: fixing the stack comes first
        out += e.remedies
    if static:
        out.append("every binary's verdict: gpuprobe kernels (--json for scripts)")
    hosts = sorted({r["host"] for e in probed for r in e.latest if r["status"] in BAD and r.get("host")})
    out += [f"exclude this node or GPU model from the job: sbatch --exclude={fp.hostname} "
            f"(or a --constraint without {fp.stack_key()['gpu_model']})"
            + (f"; bad runs seen on {', '.join(hosts) or '-'}" if probed else ""),
            "resubmit elsewhere: scripts/submit_job.sh --resubmit-elsewhere (a plain scontrol requeue may land "
            "on this node again)"]
    if probed:
        out.append(f"re-probe this node: gpuprobe run --stage {probed[0].stage}")
    for e in probed:
        out += [f"[{s.get('id')}] {s.get('title')}: {s.get('remedy')}" for s in e.signatures if s.get("remedy")]
    return out
