"""CPU allotment: how many CPUs a process may use, and how many threads want them.

A job that runs more busy threads than the CPUs it may use crawls (the field report's
"118% CPU" on an 8-CPU allotment with a 32-thread OpenMP pool and 12 prefetch threads).
The numbers that say so come from four places, none needing the job's cooperation:
the affinity mask (``sched_getaffinity``, what ``taskset``/SLURM's cpuset allow), the
cgroup CPU quota (``cpu.max`` in v2, ``cpu.cfs_quota_us`` in v1), the environment
(``SLURM_CPUS_PER_TASK``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``torch`` reads these),
and the threads in /proc/PID/task with their states.
"""

from __future__ import annotations

import os
from pathlib import Path

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS",
              "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_JOB_CPUS_PER_NODE")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def environ_of(pid: int | None) -> dict[str, str]:
    """The environment a process started with (/proc/PID/environ); our own for ``None``."""
    if pid is None or pid == os.getpid():
        return dict(os.environ)
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            out[name.decode(errors="replace")] = value.decode(errors="replace")
    return out


def cgroup_quota(pid: int | str = "self") -> dict:
    """The CPU quota of the process's cgroup as CPUs (``cpu.max`` "200000 100000" -> 2.0), or unlimited."""
    lines = (_read(f"/proc/{pid}/cgroup") or "").splitlines()
    for line in lines:  # cgroup v2: "0::/path"
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            raw = _read(CGROUP_ROOT / path.lstrip("/") / "cpu.max")
            if raw is not None:
                quota, _, period = raw.partition(" ")
                cpus = None if quota == "max" else int(quota) / int(period or 100000)
                return {"version": 2, "cgroup": path, "cpu_max": raw, "cpus": cpus}
    for line in lines:  # cgroup v1: "N:cpu,cpuacct:/path"
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "cpu" in controllers.split(","):
            for base in (CGROUP_ROOT / "cpu,cpuacct", CGROUP_ROOT / "cpu"):
                quota = _read(base / path.lstrip("/") / "cpu.cfs_quota_us")
                period = _read(base / path.lstrip("/") / "cpu.cfs_period_us")
                if quota is not None and period is not None:
                    cpus = None if int(quota) < 0 else int(quota) / int(period)
                    return {"version": 1, "cgroup": path, "cpu_max": f"{quota} {period}", "cpus": cpus}
    return {"version": None, "cgroup": None, "cpu_max": None, "cpus": None}


def thread_states(pid: int) -> dict:
    """Threads of ``pid`` by state (R running, S sleeping, D uninterruptible ...)."""
    states: dict[str, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {"total": 0, "running": 0, "states": {}}
    for tid in tids:
        stat = _read(f"/proc/{pid}/task/{tid}/stat") or ""
        if ")" in stat:
            state = stat.rsplit(")", 1)[1].split()[0]
            states[state] = states.get(state, 0) + 1
    return {"total": sum(states.values()), "running": states.get("R", 0), "states": states}


def allowed_cpus(affinity: int, quota_cpus: float | None, slurm_cpus: str | None) -> float:
    """The CPUs a process may really use: the smallest of its mask, its quota and its SLURM share."""
    limits = [float(affinity)]
    if quota_cpus is not None:
        limits.append(quota_cpus)
    if slurm_cpus and slurm_cpus.isdigit():
        limits.append(float(slurm_cpus))
    return min(limits)


def of_process(pid: int | None = None) -> dict:
    """The allotment of ``pid`` (``None``: this process), read from outside it."""
    target = os.getpid() if pid is None else pid
    try:
        mask = sorted(os.sched_getaffinity(target))
    except OSError:
        mask = []
    env = environ_of(pid)
    quota = cgroup_quota(target)
    allowed = allowed_cpus(len(mask) or (os.cpu_count() or 1), quota["cpus"], env.get("SLURM_CPUS_PER_TASK"))
    return {
        "cpus_visible": os.cpu_count() or 0,
        "affinity": compress(mask), "affinity_count": len(mask),
        "cgroup_cpu_max": quota["cpu_max"], "cgroup_cpus": quota["cpus"], "cgroup_version": quota["version"],
        "slurm_cpus_per_task": env.get("SLURM_CPUS_PER_TASK"),
        "thread_env": {k: env[k] for k in THREAD_ENV if k in env},
        "allowed_cpus": allowed,
        "threads": thread_states(target),
    }


def torch_default_threads(allotment: dict) -> int:
    """The intra-op pool torch builds with no setting: OMP_NUM_THREADS, else one per CPU in the mask.

    (torch sizes its OpenMP pool from ``omp_get_max_threads()``, which honours the affinity
    mask but not the cgroup quota or SLURM's share: the usual way to oversubscribe.)
    """
    env = allotment.get("thread_env") or {}
    for name in ("OMP_NUM_THREADS", "TORCH_NUM_THREADS"):
        value = env.get(name, "").split(",")[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return int(allotment.get("affinity_count") or allotment.get("cpus_visible") or 1)


def compress(cpus: list[int]) -> str:
    """[0, 1, 2, 3, 8] -> "0-3,8" (the form taskset and cpusets use)."""
    out, start, prev = [], None, None
    for c in cpus:
        if start is None:
            start = prev = c
        elif c == prev + 1:
            prev = c
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = c
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(out)
