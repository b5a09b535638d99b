"""Where a job's stdout and stderr go, how they are buffered, and how far behind its log may be.

"No output" in a SLURM log is often not a hang: Python block-buffers stdout that goes to a
file or a pipe, with a buffer of the file's ``st_blksize`` (4 KiB on ext4, up to MiBs on
Lustre or NFS), so the log shows what was flushed, not what ran. Since Python 3.9 stderr
is line-buffered everywhere; ``PYTHONUNBUFFERED`` (any non-empty value) or ``python -u``
turn stdout's buffer off. C stdio behaves the same way (block-buffered unless a terminal).
All of it is read from /proc: the fd targets, the job's environment and command line.
"""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path

from gpuprobe.jobs.allotment import environ_of

TAIL_BYTES = 4000


def fd_target(pid: int, fd: int) -> dict:
    """What fd ``fd`` of ``pid`` is: file (with path, size, position), pipe, socket, terminal, null."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError as exc:
        return {"kind": "unknown", "error": exc.strerror or str(exc)}
    out: dict = {"target": target}
    if target.startswith("pipe:"):
        out["kind"] = "pipe"
    elif target.startswith("socket:"):
        out["kind"] = "socket"
    elif target == "/dev/null":
        out["kind"] = "null"
    elif target.startswith(("/dev/pts/", "/dev/tty", "/dev/console")):
        out["kind"] = "terminal"
    else:
        out["kind"] = "file"
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            out.update(size=st.st_size, blksize=st.st_blksize, last_write_age_s=round(time.time() - st.st_mtime, 1),
                       regular=stat.S_ISREG(st.st_mode))
        except OSError:
            pass
        out["deleted"] = target.endswith(" (deleted)")
    pos = _fdinfo_pos(pid, fd)
    if pos is not None:
        out["pos"] = pos
    return out


def _fdinfo_pos(pid: int, fd: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
            if line.startswith("pos:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def is_python(pid: int, cmdline: list[str] | None = None) -> bool:
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        exe = ""
    argv0 = os.path.basename((cmdline or _cmdline(pid) or [""])[0])
    return exe.startswith("python") or argv0.startswith("python")


def python_unbuffered(cmdline: list[str], env: dict[str, str]) -> str | None:
    """Why this Python's stdout is unbuffered (PYTHONUNBUFFERED, -u), or None."""
    if env.get("PYTHONUNBUFFERED"):
        return f"PYTHONUNBUFFERED={env['PYTHONUNBUFFERED']}"
    for arg in cmdline[1:]:
        if arg == "-" or not arg.startswith("-") or arg in ("-c", "-m"):
            break
        if arg.startswith("-") and not arg.startswith("--") and "u" in arg[1:]:
            return f"python {arg}"
    return None


def stream(pid: int, fd: int, python: bool, unbuffered: str | None) -> dict:
    t = fd_target(pid, fd)
    kind = t["kind"]
    if kind in ("terminal", "null", "unknown"):
        t["buffering"] = {"terminal": "line", "null": "irrelevant", "unknown": "unknown"}[kind]
        t["behind_bytes_max"] = 0 if kind != "unknown" else None
        return t
    if fd == 2 and python:
        t["buffering"], t["behind_bytes_max"] = "line (Python 3.9+ stderr)", 0
    elif python and unbuffered:
        t["buffering"], t["behind_bytes_max"] = f"unbuffered ({unbuffered})", 0
    else:
        size = t.get("blksize") if kind == "file" and (t.get("blksize") or 0) > 1 else io.DEFAULT_BUFFER_SIZE
        t["buffering"] = "block" + ("" if python else " (C stdio, unless the program flushes)")
        t["behind_bytes_max"] = int(size)
    return t


def analyse(pid: int) -> dict:
    """stdout/stderr of ``pid``: kind, buffering, how many bytes the log may lag, and a summary line."""
    cmdline = _cmdline(pid)
    env = environ_of(pid)
    python = is_python(pid, cmdline)
    unbuffered = python_unbuffered(cmdline, env) if python else None
    out = {"pid": pid, "python": python, "unbuffered": unbuffered,
           "stdout": stream(pid, 1, python, unbuffered), "stderr": stream(pid, 2, python, unbuffered)}
    so = out["stdout"]
    out["block_buffered"] = so.get("buffering", "").startswith("block")
    out["output_file"] = next((s["target"] for s in (so, out["stderr"]) if s.get("kind") == "file"), None)
    if out["block_buffered"]:
        where = so["target"] if so["kind"] == "file" else f"a {so['kind']}"
        out["summary"] = (f"stdout goes to {where}, block-buffered: the log may lag the process by up to "
                          f"{so['behind_bytes_max']} bytes" +
                          (f" (last written {so['last_write_age_s']:g} s ago)" if "last_write_age_s" in so else ""))
    else:
        out["summary"] = f"stdout: {so.get('kind')}, {so.get('buffering')}: the log is current"
    return out


def tail(path: str | None, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the job's output file, when it is a readable regular file."""
    if not path:
        return ""
    try:
        with open(path.removesuffix(" (deleted)"), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
