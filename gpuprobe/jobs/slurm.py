"""The processes of a SLURM job (or one of its steps) on this node.

``scontrol listpids JOB[.STEP]`` asks the node's slurmstepd, which knows every process of
the step whatever the proctrack plugin; where that fails (no scontrol in the job's
environment, a slurmd too old to answer) the job's cgroup lists them: cgroup v2
``.../job_<id>/step_<step>/.../cgroup.procs``, v1 ``<controller>/slurm/uid_*/job_<id>/...``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCONTROL_TIMEOUT_S = 10.0
CGROUP_ROOT = Path("/sys/fs/cgroup")


class JobNotFound(LookupError):
    """No process of that job on this node; the message says what was tried."""


def via_scontrol(job: str, step: str | None) -> tuple[list[tuple[int, str]], str]:
    """[(pid, step)] from scontrol listpids, and what happened."""
    exe = shutil.which("scontrol")
    if exe is None:
        return [], "scontrol not on PATH"
    ref = f"{job}.{step}" if step is not None else job
    try:
        proc = subprocess.run([exe, "listpids", ref], capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"scontrol listpids {ref}: {exc}"
    out = []
    for line in proc.stdout.splitlines()[1:]:  # header: PID JOBID STEPID LOCALID GLOBALID
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit():
            out.append((int(fields[0]), fields[2]))
    if not out:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}, no processes"])[0]
        return [], f"scontrol listpids {ref}: {why}"
    return out, f"scontrol listpids {ref}"


def via_cgroup(job: str, step: str | None, root: Path = CGROUP_ROOT) -> tuple[list[tuple[int, str]], str]:
    """[(pid, step)] from the job's cgroup folders."""
    found: dict[int, str] = {}
    for jobdir in list(root.glob(f"**/job_{job}"))[:8]:
        for procs in jobdir.rglob("cgroup.procs"):
            parts = [p for p in procs.relative_to(jobdir).parts if p.startswith("step_")]
            st = parts[0][len("step_"):] if parts else "-"
            if step is not None and st != step:
                continue
            try:
                pids = [int(x) for x in procs.read_text().split()]
            except (OSError, ValueError):
                continue
            for pid in pids:
                found.setdefault(pid, st)
    return sorted(found.items()), f"cgroup job_{job} under {root}"


def job_pids(job: str, step: str | None = None) -> tuple[list[int], dict]:
    """The job's PIDs on this node and how they were found; JobNotFound when there are none."""
    tried = []
    for finder in (via_scontrol, via_cgroup):
        pairs, how = finder(job, step)
        tried.append(how)
        # slurmstepd itself is listed by some versions: it is not the user's process
        pids = [pid for pid, _ in pairs if not _is_stepd(pid)]
        if pids:
            return pids, {"job": job, "step": step, "found_by": how, "steps": sorted({s for _, s in pairs})}
    raise JobNotFound(f"no processes of job {job}{'' if step is None else '.' + step} on this node "
                      f"({'; '.join(tried)})")


def _is_stepd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("slurmstepd")
    except OSError:
        return False
