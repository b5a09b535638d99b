"""A real, private, single-node SLURM for the tests: munged, slurmctld and slurmd from
Debian's ``slurm-wlm`` (22.05) and ``munge``, started from a temporary folder and torn
down afterwards.

Nothing here touches /etc/slurm or /etc/munge: the daemons read a slurm.conf written
into the temporary folder (``SLURM_CONF`` points the client commands at it), munged
listens on a socket of its own (``AuthInfo=socket=...``), and the ports are picked
free at start, so a second run right after the first (or a stray daemon from a crashed
run) cannot collide with this one. Every wait is bounded; when the daemons do not come
up, the error carries the tail of their logs.

Use the session-scoped pytest fixture ``slurm_cluster``; the tests skip (with the
reason) only when the packages are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
UP_TIMEOUT_S = 60.0          # the daemons came up in ~20 s on a 2-core VM
POLL_S = 0.25
STOP_GRACE_S = 10.0
PARTITION = "probe"
SPARE_NODE = "spare01"
INSTALL_HINT = "apt-get install -y --no-install-recommends slurm-wlm munge"


class SlurmHarnessError(RuntimeError):
    """The private SLURM did not come up; the message holds the daemons' log tails."""


def find_daemon(name: str) -> str | None:
    """Daemons live in sbin, which is not on every PATH (sudo-less shells, CI images)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_packages_reason() -> str | None:
    """Why the SLURM tests cannot run here, or None. Only missing packages are a skip."""
    if find_daemon("slurmctld") is None:
        return f"slurmctld not found: install Debian's slurm-wlm and munge ({INSTALL_HINT})"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


@dataclass
class SlurmCluster:
    """A running private cluster: ``env`` is what client commands (sbatch, squeue) need."""

    root: Path
    conf: Path
    node: str
    partition: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def run(self, *cmd: str, timeout: float = 30.0, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a client command against this cluster (bounded)."""
        return subprocess.run(list(cmd), env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def logs(self, chars: int = 3000) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name} (last {chars} chars) ---\n{text[-chars:]}")
        return "\n".join(parts) or "(no daemon logs written)"

    def wait_job(self, job_id: str, timeout: float = 60.0) -> str:
        """Poll until the job leaves the queue's active states; its final state (bounded)."""
        deadline = time.monotonic() + timeout
        state = "UNKNOWN"
        while time.monotonic() < deadline:
            out = self.run("squeue", "-h", "-j", job_id, "--states=all", "-o", "%T", timeout=10).stdout.split()
            state = out[0] if out else "GONE"
            if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return state
            time.sleep(POLL_S)
        raise SlurmHarnessError(f"job {job_id} still {state} after {timeout:.0f} s\n{self.logs()}")


def _write_conf(root: Path, node: str, munge_socket: Path, extra: tuple[str, ...] = ()) -> Path:
    cpus = os.cpu_count() or 1
    # leave the OS some headroom: slurmd refuses to register a node that claims more than it has
    mem = max(256, int(_mem_mib() * 0.8))
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "# written by tests/slurm_harness.py; private to this test session",
        "ClusterName=gpuprobetest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        # CPUs only: with memory consumable, a job that asks for no memory takes the whole node
        "SelectTypeParameters=CR_CPU",
        "SlurmUser=root",
        "SlurmdUser=root",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "ReturnToService=2",
        "MinJobAge=300",
        "KillWait=5",
        "InactiveLimit=0",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        f"PlugStackConfig={root / 'plugstack.conf'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
        # a second node that never comes up (nothing listens on its port): a job that excludes
        # the real node can still be submitted, and then waits, as on a real cluster
        (f"NodeName={SPARE_NODE} NodeAddr=127.0.0.1 Port={_free_port()} CPUs=1 RealMemory=256 State=DOWN"
         ' Reason="harness spare: never starts"'),
        f"PartitionName={PARTITION} Nodes={node},{SPARE_NODE} Default=YES MaxTime=INFINITE State=UP",
        *extra,
        "",
    ]))
    (root / "plugstack.conf").write_text("")   # an empty stack, not the system's
    return conf


def _start_munge(root: Path, cluster: SlurmCluster) -> Path:
    """munged refuses keys and sockets in folders others can write, and wants its socket's
    folder searchable by all (clients connect to it): a 0755 folder owned by munge."""
    mungekey, munged = find_daemon("mungekey"), find_daemon("munged")
    if not munged or not mungekey:
        raise SlurmHarnessError(f"slurmctld is installed but munged/mungekey is not ({INSTALL_HINT})")
    mdir = root / "munge"
    mdir.mkdir()
    mdir.chmod(0o755)
    key = mdir / "munge.key"
    subprocess.run([mungekey, "--create", "--keyfile", str(key)], check=True, capture_output=True, timeout=30)
    user = "munge" if os.geteuid() == 0 and _user_exists("munge") else None
    if user:
        shutil.chown(mdir, user, user)
        shutil.chown(key, user, user)
    key.chmod(0o600)
    sock = mdir / "munge.socket"
    cmd = [munged, "--foreground", f"--socket={sock}", f"--key-file={key}", f"--pid-file={mdir / 'munged.pid'}",
           f"--seed-file={mdir / 'munged.seed'}", f"--log-file={root / 'log' / 'munged.log'}"]
    cluster.procs["munged"] = subprocess.Popen(cmd, user=user, start_new_session=True,
                                               stdout=subprocess.DEVNULL, stderr=_open_log(root, "munged.stderr"))
    _wait_for(lambda: sock.exists(), "munged socket", cluster)
    return sock


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _open_log(root: Path, name: str):
    return open(root / "log" / f"{name}.log", "ab")


def _wait_for(ready, what: str, cluster: SlurmCluster, timeout: float = UP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        dead = [name for name, p in cluster.procs.items() if p.poll() is not None]
        if dead:
            raise SlurmHarnessError(f"{', '.join(dead)} exited while waiting for {what}\n{cluster.logs()}")
        time.sleep(POLL_S)
    raise SlurmHarnessError(f"{what} not ready after {timeout:.0f} s\n{cluster.logs()}")


def _node_idle(cluster: SlurmCluster) -> bool:
    try:
        out = cluster.run("sinfo", "-h", "-N", "-o", "%N %T", timeout=10).stdout
    except subprocess.TimeoutExpired:
        return False
    return f"{cluster.node} idle" in out.splitlines()


def start_cluster(root: Path | None = None, extra_conf: tuple[str, ...] = ()) -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once ``sinfo`` shows the node idle.

    ``extra_conf``: more slurm.conf lines (a Prolog, a HealthCheckProgram) for experiments.
    """
    if os.geteuid() != 0:
        raise SlurmHarnessError("the private SLURM needs root (SlurmUser=root, munged as the munge user)")
    root = Path(root or tempfile.mkdtemp(prefix="gpuprobe-slurm-"))
    root.chmod(0o755)   # munged (user munge) must reach its own folder below this one
    for sub in ("log", "state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    node = socket.gethostname().split(".")[0]
    env = {**os.environ, "SLURM_CONF": ""}
    cluster = SlurmCluster(root=root, conf=root / "slurm.conf", node=node, partition=PARTITION, env=env)
    try:
        sock = _start_munge(root, cluster)
        conf = _write_conf(root, node, sock, tuple(extra_conf))
        env["SLURM_CONF"] = str(conf)
        # a test run inside a real job must not leak that job's settings into ours, nor a
        # developer's GPUPROBE_* (fake NVML, failpoints, results folder) into the jobs
        for var in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "GPUPROBE_"))
                    and k != "SLURM_CONF"]:
            env.pop(var)
        daemon_env = dict(env)
        cluster.procs["slurmctld"] = subprocess.Popen(
            [find_daemon("slurmctld") or "slurmctld", "-D", "-i", "-f", str(conf)], env=daemon_env,
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=_open_log(root, "slurmctld.stderr"))
        _wait_for(lambda: cluster.run("scontrol", "ping", timeout=10).stdout.count("UP") > 0,
                  "slurmctld (scontrol ping)", cluster)
        slurmd = find_daemon("slurmd")
        if slurmd is None:
            raise SlurmHarnessError(f"slurmctld is installed but slurmd is not ({INSTALL_HINT})")
        cluster.procs["slurmd"] = subprocess.Popen(
            [slurmd, "-D", "-f", str(conf), "-N", node], env=daemon_env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=_open_log(root, "slurmd.stderr"))
        _wait_for(lambda: _node_idle(cluster), f"node {node} idle in sinfo", cluster)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _our_pids(conf: Path) -> list[int]:
    """Processes that inherited our SLURM_CONF: job steps and slurmstepd left behind.

    Matching on our private config path (not a process name) finds only what this
    harness started, never another engineer's daemons or jobs.
    """
    marker = f"SLURM_CONF={conf}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def stop_cluster(cluster: SlurmCluster, keep_files: bool = False) -> None:
    """Cancel our jobs, stop the daemons (TERM, bounded grace, KILL), remove the folder."""
    if "slurmctld" in cluster.procs and cluster.procs["slurmctld"].poll() is None and cluster.env.get("SLURM_CONF"):
        try:
            cluster.run("scancel", "--user", str(os.getuid()), timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            pass
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE_S)
    if cluster.env.get("SLURM_CONF"):
        for pid in _our_pids(cluster.conf):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if not keep_files:
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A private single-node SLURM for the whole session (GPUPROBE_KEEP_SLURM=1 keeps its folder)."""
    reason = missing_packages_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster, keep_files=os.environ.get("GPUPROBE_KEEP_SLURM") == "1")
