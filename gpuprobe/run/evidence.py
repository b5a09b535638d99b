"""Evidence from a stage that ran out of time, gathered before anything is killed.

In this order (docs/WATCHDOG.md), each step bounded by its own timeout:
  1. stacks: ``py-spy dump --native``, else ``py-spy dump``, else SIGUSR1 -> faulthandler
     (py-spy missing, or ptrace denied in a container without SYS_PTRACE);
  2. a process snapshot: state, wchan, CPU% over a short window, threads, RSS, children;
  3. an NVML snapshot of the GPUs, where NVML is available.
Killing is :mod:`gpuprobe.run.reaper`'s job, after this.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import psutil

from gpuprobe.node.nvml import Nvml
from gpuprobe.redact import redact_command, redact_stacks

PYSPY_ENV = "GPUPROBE_PYSPY"   # path to py-spy, or "none" to go without (tests, locked-down nodes)
NATIVE_TIMEOUT_S = 5.0
PLAIN_TIMEOUT_S = 3.0
FAULTHANDLER_WAIT_S = 1.0
CPU_WINDOW_S = 0.25
MAX_THREADS_LISTED = 48


def find_pyspy() -> str | None:
    configured = os.environ.get(PYSPY_ENV)
    if configured is not None:
        return None if configured.lower() in ("", "none", "off") else configured
    found = shutil.which("py-spy")
    if found:
        return found
    # pip puts py-spy next to this interpreter, which may not be on PATH (venvs, jobs)
    beside = Path(sysconfig.get_path("scripts")) / "py-spy"
    return str(beside) if beside.exists() else None


def _continue(pids: list[int]) -> None:
    """py-spy stops its target while it reads it; never leave one stopped (py-spy #390)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass


def pyspy_dump(pid: int, native: bool, timeout: float, tree: list[int], nonblocking: bool = False) -> dict:
    """One ``py-spy dump``. ``nonblocking`` reads without stopping the target (a watched job's
    periodic look: never freeze a torch process with many threads), at the price of a torn stack."""
    exe = find_pyspy()
    method = ("py-spy --native" if native else "py-spy") + (" --nonblocking" if nonblocking else "")
    if exe is None:
        return {"method": method, "ok": False, "error": "py-spy not found (not on PATH; GPUPROBE_PYSPY unset)"}
    cmd = [exe, "dump", "--pid", str(pid), "--subprocesses"] + (["--native"] if native else []) + (
        ["--nonblocking"] if nonblocking else [])
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "ok": False, "error": f"timed out after {timeout:g} s"}
    except OSError as exc:
        return {"method": method, "ok": False, "error": f"cannot run {exe}: {exc.strerror or exc}"}
    finally:
        _continue(tree)
    # With --subprocesses py-spy exits 1 when some descendant is not Python (ninja, sleep)
    # after printing every Python one; stacks on stdout are what count.
    ok = "Thread " in proc.stdout
    err = (proc.stderr.strip().splitlines() or [""])[0]
    # its "Process N: <command line>" headers carry the job's arguments, credentials included
    return {"method": method, "ok": ok, "text": redact_stacks(proc.stdout), "seconds": round(time.monotonic() - start, 3),
            **({} if ok else {"error": err or f"py-spy exited {proc.returncode}"})}


def faulthandler_dump(pid: int, stacks_file: Path | None) -> dict:
    if stacks_file is None:
        return {"method": "faulthandler", "ok": False, "error": "no stacks file registered"}
    before = stacks_file.stat().st_size if stacks_file.exists() else 0
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        return {"method": "faulthandler", "ok": False, "error": f"SIGUSR1: {exc.strerror}"}
    deadline = time.monotonic() + FAULTHANDLER_WAIT_S
    last_size = -1
    while time.monotonic() < deadline:
        size = stacks_file.stat().st_size if stacks_file.exists() else 0
        if size > before and size == last_size:  # written and no longer growing
            break
        last_size = size
        time.sleep(0.02)
    text = stacks_file.read_text(errors="replace")[before:] if stacks_file.exists() else ""
    ok = bool(text.strip())
    return {"method": "faulthandler", "ok": ok, "text": text,
            **({} if ok else {"error": "no stacks written within 1 s (signal handler not reached)"})}


def collect_stacks(pid: int, stacks_file: Path | None, tree: list[int]) -> dict:
    attempts = []
    for native, timeout in ((True, NATIVE_TIMEOUT_S), (False, PLAIN_TIMEOUT_S)):
        attempt = pyspy_dump(pid, native, timeout, tree)
        attempts.append(attempt)
        if attempt["ok"] or "not found" in attempt.get("error", ""):
            break
    if not any(a["ok"] for a in attempts):
        attempts.append(faulthandler_dump(pid, stacks_file))
    best = next((a for a in attempts if a["ok"]), None)
    return {
        "method": best["method"] if best else None,
        "text": best["text"] if best else "",
        "attempts": [{k: v for k, v in a.items() if k != "text"} for a in attempts],
    }


# -- process snapshot ------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _stat_state(path: str) -> str:
    stat = _read(path)
    # comm may hold spaces and parentheses: the state follows the last ')'
    return stat.rsplit(")", 1)[1].split()[0] if ")" in stat else "?"


def _thread_ticks(pid: int) -> dict[int, float]:
    ticks = {}
    hz = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        stat = _read(f"/proc/{pid}/task/{tid}/stat")
        if ")" in stat:
            fields = stat.rsplit(")", 1)[1].split()
            ticks[int(tid)] = (int(fields[11]) + int(fields[12])) / hz  # utime + stime
    return ticks


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def process_snapshot(pid: int, window: float = CPU_WINDOW_S) -> dict:
    """State of the stage process and its descendants; CPU% measured over ``window``."""
    procs = process_tree(pid)
    if not procs:
        return {"error": f"process {pid} is gone"}
    before, threads_before = {}, _thread_ticks(pid)
    for p in procs:
        try:
            before[p.pid] = sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    time.sleep(window)
    threads_after = _thread_ticks(pid)
    out = []
    for p in procs:
        try:
            with p.oneshot():
                cpu = (sum(p.cpu_times()[:2]) - before.get(p.pid, 0.0)) / window * 100
                entry = {
                    "pid": p.pid, "ppid": p.ppid(), "cmdline": redact_command(p.cmdline())[:500],
                    "state": _stat_state(f"/proc/{p.pid}/stat"), "wchan": _read(f"/proc/{p.pid}/wchan") or "0",
                    "cpu_percent": round(cpu, 1), "num_threads": p.num_threads(), "rss_bytes": p.memory_info().rss,
                }
        except psutil.Error as exc:
            entry = {"pid": p.pid, "error": type(exc).__name__}
        out.append(entry)
    threads = []
    for tid, t1 in threads_after.items():
        base = f"/proc/{pid}/task/{tid}"
        threads.append({
            "tid": tid, "name": _read(f"{base}/comm"), "state": _stat_state(f"{base}/stat"),
            "wchan": _read(f"{base}/wchan") or "0",
            "cpu_percent": round((t1 - threads_before.get(tid, t1)) / window * 100, 1),
        })
    threads.sort(key=lambda t: -t["cpu_percent"])
    total = sum(e.get("cpu_percent", 0.0) for e in out)
    return {"window_s": window, "cpu_percent_total": round(total, 1), "processes": out,
            "threads": threads[:MAX_THREADS_LISTED], "threads_total": len(threads)}


def gpu_snapshot(indices: list[int] | None = None) -> dict:
    with Nvml() as nv:
        if not nv.ok:
            return {"available": False, "reason": nv.state.reason}
        count = nv.device_count()
        if not isinstance(count, int):
            return {"available": False, "reason": count.reason}
        wanted = indices if indices is not None else list(range(count))
        return {"available": True, "simulated": nv.simulated, "gpus": [nv.snapshot(i) for i in wanted if i < count]}


def collect(pid: int, stacks_file: Path | None, gpus: list[int] | None = None) -> dict:
    """Everything we can learn about a stuck stage, before it is killed."""
    start = time.monotonic()
    tree = [p.pid for p in process_tree(pid)]
    stacks = collect_stacks(pid, stacks_file, tree)
    t_stacks = time.monotonic()
    snapshot = process_snapshot(pid)
    t_proc = time.monotonic()
    try:
        gpu = gpu_snapshot(gpus)
    except Exception as exc:  # evidence is best effort; never lose the rest over NVML
        gpu = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    end = time.monotonic()
    return {
        "stacks": stacks, "process": snapshot, "gpu": gpu,
        "timings_s": {"stacks": round(t_stacks - start, 3), "process": round(t_proc - t_stacks, 3),
                      "gpu": round(end - t_proc, 3)},
        "collector_python": sys.version.split()[0],
    }
