"""State of the session's real-dflex kernel build, shared by conftest.py and the tests that read it
(a module of its own: conftest.py may be imported twice, under two names)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: what the session's cold build did, when the installed dflex had no kernels at the start (CI)
COLD_IMPORTS: dict = {}
CONCURRENT_IMPORTS = 4
IMPORT = "import time; t = time.monotonic(); import dflex; print(f'IMPORT_S {time.monotonic() - t:.1f}')"


def concurrent_cold_imports(kernels: Path, n: int) -> dict:
    """``n`` plain ``import dflex`` at once on a cold package folder, as n jobs on one install do:
    exit codes, who printed "Rebuilding kernels", compilers running at once, the lock's lifetime."""
    import time

    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", IMPORT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, cwd=ROOT) for _ in range(n)]
    most_compilers, lock_seen = 0, False
    while any(p.poll() is None for p in procs):
        compilers = 0
        for p in procs:
            try:
                compilers += sum(c.name() == "cc1plus" for c in psutil.Process(p.pid).children(recursive=True))
            except psutil.Error:
                pass
        most_compilers = max(most_compilers, compilers)
        lock_seen = lock_seen or (kernels / "lock").exists()
        time.sleep(0.2)
    outputs = [p.stdout.read() for p in procs]
    return {"exit_codes": [p.returncode for p in procs],
            "rebuilt": sum("Rebuilding kernels" in out for out in outputs),
            "import_s": [float(out.rsplit("IMPORT_S", 1)[1].split()[0]) if "IMPORT_S" in out else None
                         for out in outputs],
            "most_compilers_at_once": most_compilers, "lock_seen": lock_seen,
            "lock_left": (kernels / "lock").exists(), "outputs": [out[-2000:] for out in outputs]}
