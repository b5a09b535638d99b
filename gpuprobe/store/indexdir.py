"""Where a results folder's index lives: on local disk, per user and node, never beside the results.

A results folder on a cluster is usually a network filesystem shared by every node, and
SQLite's locking is not safe there (NFS locks are advisory or absent, and WAL's shared
memory does not work across machines). The index is only a cache of the result files, so
each user keeps their own on each node, in the first of these that is on a local filesystem:

1. ``$GPUPROBE_INDEX_DIR`` (tests, or a site that wants it elsewhere);
2. the user cache folder (platformdirs, ``~/.cache/gpuprobe/index`` on Linux);
3. ``/var/tmp/gpuprobe-<uid>/index``, then ``$TMPDIR/gpuprobe-<uid>/index``.

Each adds the node's name (a home folder shared by every node must not share one file)
and names the file after the hash of the results folder's resolved path. When none is
usable the index is a throw-away file (every result file is read each time).
Clearing it is safe at any time: ``rm -rf ~/.cache/gpuprobe/index`` (or ``gpuprobe matrix
--no-cache`` to ignore it once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

ENV = "GPUPROBE_INDEX_DIR"
# Filesystem types (from /proc/self/mounts) that are shared between machines: no SQLite there.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
    "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.cephfs", "9p", "panfs",
    "wekafs", "davfs", "pvfs2", "orangefs", "ocfs2", "gfs2",
})


def index_file_name(folder: Path, schema: int) -> str:
    """``<hash of the resolved folder>.v<schema>.sqlite``: another gpuprobe version keeps its own file."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:24]
    return f"{digest}.v{schema}.sqlite"


def node_name() -> str:
    return os.uname().nodename or "node"


def candidate_dirs() -> Iterator[tuple[Path, Path]]:
    """The folders that may hold index files, in order (not yet checked), each with the
    topmost folder of it that must belong to this user. A generator: the first usable one is
    taken, so preflight never imports platformdirs when the override is set."""
    host = node_name()
    override = os.environ.get(ENV)
    if override:
        root = Path(override).expanduser()
        yield root / host, root
        return  # an explicit place is the only place (tests rely on it)
    try:
        import platformdirs

        root = platformdirs.user_cache_path("gpuprobe")
        yield root / "index" / host, root
    except Exception as exc:  # noqa: BLE001 - a broken HOME must not stop a reader
        log.info("no user cache folder: %s", exc)
    import tempfile  # only here: preflight's start-up pays for what it uses

    uid = os.getuid()
    for base in dict.fromkeys(("/var/tmp", tempfile.gettempdir())):
        root = Path(base) / f"gpuprobe-{uid}"
        yield root / "index" / host, root


def fs_type(path: Path) -> str | None:
    """The filesystem type of the mount holding ``path`` (Linux), or None when unknown."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split()[1:3] for line in fh if len(line.split()) >= 3]
    except OSError:
        return None
    target = str(path)
    best, kind = "", None
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def _private_dir(path: Path, root: Path) -> bool:
    """Create ``path`` (mode 0700) and check that it and every folder above it up to ``root``
    (``gpuprobe-<uid>/index/<node>``) are real folders of this user, not links someone else
    planted in a shared /tmp."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for p in (path, *path.parents):
            if p != root and root not in p.parents:
                break
            st = os.lstat(p)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                log.info("index folder %s: %s is not a folder owned by this user", path, p)
                return False
    except OSError as exc:
        log.info("index folder %s not usable: %s", path, exc.strerror or exc)
        return False
    return True


def index_dirs() -> Iterator[Path]:
    """Usable local index folders, best first."""
    for d, root in candidate_dirs():
        existing = d
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # the mount that will hold it once created
        kind = fs_type(existing.resolve())
        if kind in NETWORK_FS:
            log.info("index folder %s is on %s (a network filesystem): not used", d, kind)
            continue
        if _private_dir(d, root):
            yield d


def index_paths(folder: Path, schema: int) -> Iterator[Path]:
    """Where the index of ``folder`` may live, best first."""
    name = index_file_name(folder, schema)
    for d in index_dirs():
        yield d / name
