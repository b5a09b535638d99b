"""Shared test helpers: run the real gpuprobe CLI as a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INDEX_ENV = "GPUPROBE_INDEX_DIR"


@pytest.fixture(autouse=True, scope="session")
def _private_index_dir(tmp_path_factory):
    """Result indexes of the suite go to a folder of its own, not the user's cache."""
    os.environ[INDEX_ENV] = str(tmp_path_factory.mktemp("index-cache"))
    yield
    del os.environ[INDEX_ENV]
    _forget_indexes_under(tmp_path_factory.getbasetemp().resolve())


def _forget_indexes_under(base: Path) -> None:
    """Tests that start gpuprobe with every GPUPROBE_* variable cleared index their temporary
    folders in the user's cache: remove the indexes of folders of this session, and only those."""
    import sqlite3
    from contextlib import closing

    from gpuprobe.store import indexdir

    for folder, _root in indexdir.candidate_dirs():
        for db in folder.glob("*.sqlite") if folder.is_dir() else ():
            try:
                with closing(sqlite3.connect(db)) as conn:
                    row = conn.execute("SELECT value FROM meta WHERE key='folder'").fetchone()
            except sqlite3.Error:
                continue
            if row and base in Path(row[0]).parents:
                for suffix in ("", "-wal", "-shm", ".ok", ".lock"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)

# The suite stays out of live state: no test reads or writes the user's results (the user
# data folder) or the checkout's reports/. Results default to a folder of this session,
# also in every subprocess: run_gpuprobe and the trainer tests drop GPUPROBE_* variables,
# but keep XDG_DATA_HOME, under which the default results folder now lives.
LIVE_STATE = tempfile.mkdtemp(prefix="gpuprobe-tests-")
SESSION_RESULTS = str(Path(LIVE_STATE) / "results")
os.environ["XDG_DATA_HOME"] = str(Path(LIVE_STATE) / "data")
os.environ["GPUPROBE_RESULTS"] = SESSION_RESULTS
Path(SESSION_RESULTS).mkdir()


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    results: Path

    def result_files(self) -> list[Path]:
        return sorted(self.results.glob("*.result.json"))

    def doc(self) -> dict:
        files = self.result_files()
        assert len(files) == 1, f"expected one result file, found {files}\nstderr:\n{self.stderr}"
        return json.loads(files[0].read_text())

    def stage(self, name: str) -> dict:
        return next(s for s in self.doc()["stages"] if s["stage"] == name)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (hidden ones and the index cache too), never following links."""
    out = {}
    for here, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(here, name))
            out[os.path.relpath(os.path.join(here, name), folder)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session", autouse=True)
def checkout_reports_untouched():
    """The suite never writes into the checkout's reports/ (nor builds an index over it)."""
    before = _snapshot(ROOT / "reports")
    yield
    after = _snapshot(ROOT / "reports")
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the test suite changed the checkout's reports/: {', '.join(changed[:10])}"


def run_gpuprobe(args: list[str], results: Path | None, env: dict | None = None, timeout: float = 120) -> CliRun:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPROBE_") or k == INDEX_ENV}
    full_env["GPUPROBE_RESULTS"] = SESSION_RESULTS
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "gpuprobe", *args]
    if results is not None:
        cmd += ["--results", str(results)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)
    return CliRun(proc.returncode, proc.stdout, proc.stderr, results or Path("/nonexistent"))


@pytest.fixture
def gpuprobe_cli(tmp_path):
    """Call as gpuprobe_cli([...args], env={...}); results land in a fresh folder.

    ``results=False`` passes no --results (for commands without one, like info).
    """
    counter = {"n": 0}

    def call(args: list[str], env: dict | None = None, results: Path | None | bool = None,
             timeout: float = 120) -> CliRun:
        counter["n"] += 1
        folder = None if results is False else (results or tmp_path / f"results{counter['n']}")
        return run_gpuprobe(args, folder, env, timeout)

    return call


# -- the real dflex ------------------------------------------------------------------------
def _shared_dir() -> Path:
    import importlib.util as _u

    spec = _u.spec_from_file_location("install_dflex", ROOT / "scripts" / "install_dflex.py")
    module = _u.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shared_dir()


VENDOR = _shared_dir() / "vendor"
UPSTREAM_PWM = VENDOR / "pwm-upstream" / "PWM-aa5a1d8.tar.gz"
DFLEX_MISSING = ("dflex is not installed here; the README's test command installs the vendored wheel "
                 "(python3 scripts/install_dflex.py, from ../shared/vendor/dflex/)")


from tests.dflex_session import CONCURRENT_IMPORTS, COLD_IMPORTS, concurrent_cold_imports  # noqa: E402


@pytest.fixture(scope="session")
def dflex_package() -> Path:
    """The installed dflex package folder with its kernels built, once per test session (a minute
    or two), in child processes so that a stuck build cannot take pytest with it. On a cold install
    (CI) the build is done by CONCURRENT_IMPORTS plain imports at once, and what they did is kept
    in COLD_IMPORTS for test_dflex_concurrency.py."""
    from gpuprobe_pwm.envs import dflex_kernels

    package = dflex_kernels.package_dir()
    if package is None:
        pytest.skip(DFLEX_MISSING)
    cache = dflex_kernels.inspect_cache(package)
    if cache["adjoint_gen"] is None and cache["lock"] is None:
        COLD_IMPORTS.update(concurrent_cold_imports(dflex_kernels.kernels_dir(package), CONCURRENT_IMPORTS))
    proc = subprocess.run([sys.executable, "-c", "from gpuprobe_pwm.envs.dflex_kernels import import_dflex; "
                           "r = import_dflex(); print('cached' if r.cached else f'built in {r.build_s:.0f} s')"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, f"building dflex's kernels failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return package


def pytest_collection_modifyitems(items):
    # Whichever dflex test runs first pays the session's kernel build (minutes on a busy 2-core
    # machine): give them more than setup.cfg's per-test timeout.
    for item in items:
        if "dflex_package" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(1200))
