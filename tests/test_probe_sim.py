"""The sim stage through the real CLI on the real dflex: the cached import, a real stale lock from a
killed cold build, a live build's lock, and dflex's other real failure modes.

Cases that need a cold or broken dflex use a copy of the installed package (with or without its
kernel cache) put first on PYTHONPATH, so that the installed package and its built kernels stay
as they are for the other tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpuprobe_pwm.envs import DFLEX_ENVS
from tests.stalling_buffers import mark_names, run_gpuprobe, stage

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ["--set", "sim.bundled_steps=5", "--set", "sim.bundled_num_envs=4", "--set", "sim.envs=[\"cartpole_swingup\",\"pendulum\"]"]
ARGS = ["--device", "cpu", "--only", "--stage", "sim", *BUNDLED]
ONE_ENV = ["--set", "sim.dflex_envs=[\"dflex_hopper\"]", "--set", "sim.num_envs=2", "--set", "sim.steps=3"]
CACHE_FILES = ("kernels.so", "adjoint.gen", "build.ninja")


def copy_dflex(dest: Path, installed: Path, with_cache: bool) -> tuple[Path, dict]:
    """A copy of the installed dflex under ``dest/site``; with its kernel cache or without kernels/."""
    pkg = dest / "site" / "dflex"
    shutil.copytree(installed, pkg, ignore=shutil.ignore_patterns("kernels", "__pycache__"))
    if with_cache:
        add_cache(pkg, installed)
    env = {"PYTHONPATH": os.pathsep.join([str(dest / "site"), str(ROOT)]),
           "TORCH_EXTENSIONS_DIR": str(dest / "torch_extensions")}
    return pkg, env


def add_cache(pkg: Path, installed: Path) -> None:
    (pkg / "kernels").mkdir(exist_ok=True)
    for name in CACHE_FILES:
        shutil.copy2(installed / "kernels" / name, pkg / "kernels" / name)


def signature_ids(res: dict) -> list[str]:
    return [m["id"] for m in res["signatures"]]


@pytest.mark.skipif(importlib.util.find_spec("dflex") is not None, reason="dflex is installed here")
def test_without_dflex_the_dflex_part_skips_and_the_bundled_envs_pass(tmp_path):
    code, doc = run_gpuprobe(ARGS, str(tmp_path))
    res = stage(doc, "sim")
    assert code == 0 and res["status"] == "pass"
    assert res["data"]["dflex"]["status"] == "skip" and "not installed" in res["data"]["dflex"]["reason"]
    assert "pip install" in res["data"]["dflex"]["reason"]  # the install hint travels with it
    assert res["reason"].startswith("dflex: skipped (not installed: ") and res["reason"].endswith(
        "bundled envs: pass (cartpole_swingup, pendulum)")
    for env in ("cartpole_swingup", "pendulum"):
        assert res["data"]["bundled"][env]["steps_per_s"] > 0
        assert {f"sim.{env}.construct", f"sim.{env}.reset", f"sim.{env}.step"} <= set(mark_names(res))


def test_real_dflex_passes_with_version_import_time_cache_facts_and_steps_per_env(tmp_path, dflex_package):
    code, doc = run_gpuprobe(ARGS + ["--set", "sim.num_envs=2", "--set", "sim.steps=3"], str(tmp_path), timeout=300)
    res = stage(doc, "sim")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    dflex = res["data"]["dflex"]
    assert dflex["status"] == "pass" and dflex["version"] == importlib.metadata.version("dflex")
    assert dflex["cache_valid"] is True and dflex["import_s"] > 0 and dflex["kernel_build_s"] is None
    cache = dflex["kernel_cache"]
    assert cache["kernels_dir"] == str(dflex_package / "kernels") and cache["writable"] is True
    assert cache["filesystem"]["network"] is False and cache["filesystem"]["fs_type"]
    assert cache["kernels_so"]["built"] and cache["adjoint_gen"]["with_cuda"] is False and cache["lock"] is None
    assert cache["build"]["torch_include"].endswith("torch/include") and cache["build"]["with_cuda"] is False
    assert dflex["match"]["matches"] is True and dflex["match"]["cuda_available"] is False
    assert set(dflex["envs"]) == set(DFLEX_ENVS)  # every dflex env the trainer has a config for
    for name, env in dflex["envs"].items():
        assert env["status"] == "pass" and env["num_envs"] == 2 and env["steps_per_s"] > 0, name
    names = mark_names(res)
    assert names.index("sim.lock_check") < names.index("sim.check_source") < names.index("sim.dflex_ant.construct")
    assert "sim.kernel_build" not in names  # nothing was built
    assert res["signatures"] == []
    assert res["reason"].startswith(f"dflex {dflex['version']}: pass (cached kernels; dflex_")


# -- the stale lock, from a real cold build killed half-way ------------------------------------
def _names(processes: list) -> set[str]:
    """The names of ``processes`` that are still there (a compiler step may exit between the listing and the look)."""
    import psutil

    names = set()
    for p in processes:
        try:
            names.add(p.name())
        except psutil.NoSuchProcess:
            pass
    return names


def kill_cold_build_half_way(pkg: Path, env: dict) -> dict:
    """Start ``import dflex`` on a copy without kernels; once the compiler runs under the lock,
    SIGKILL the whole build (as a job time limit would). Returns what was left behind."""
    lock = pkg / "kernels" / "lock"
    proc = subprocess.Popen([sys.executable, "-c", "import dflex"], env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import psutil

    deadline = time.monotonic() + 240
    compiling = False
    while time.monotonic() < deadline and proc.poll() is None and not compiling:
        time.sleep(0.2)
        compiling = lock.exists() and "cc1plus" in _names(psutil.Process(proc.pid).children(True))
    assert compiling, "the cold build never reached the compiler under the lock"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return {"lock": lock.exists(), "kernels_so": (pkg / "kernels" / "kernels.so").exists(),
            "adjoint_gen": (pkg / "kernels" / "adjoint.gen").exists()}


@pytest.fixture(scope="module")
def killed_build(tmp_path_factory, dflex_package):
    """A dflex copy whose cold build was killed half-way: the lock stays, no cache was written."""
    base = tmp_path_factory.mktemp("killed")
    pkg, env = copy_dflex(base, dflex_package, with_cache=False)
    left = kill_cold_build_half_way(pkg, env)
    assert left == {"lock": True, "kernels_so": False, "adjoint_gen": False}
    return base


def from_killed(killed_build: Path, dest: Path) -> tuple[Path, dict]:
    shutil.copytree(killed_build / "site", dest / "site")
    return dest / "site" / "dflex", {"PYTHONPATH": os.pathsep.join([str(dest / "site"), str(ROOT)]),
                                     "TORCH_EXTENSIONS_DIR": str(dest / "torch_extensions")}


def test_stale_lock_without_a_cache_fails_at_once_naming_the_lock(tmp_path, killed_build):
    pkg, env = from_killed(killed_build, tmp_path)
    lock = pkg / "kernels" / "lock"
    # A stage that waited on the lock would end as a hang at this timeout, not as a fail.
    code, doc = run_gpuprobe(ARGS + ONE_ENV + ["--timeout", "30"], str(tmp_path / "r"), extra_env=env, timeout=120)
    res = stage(doc, "sim")
    assert code == 1 and res["status"] == "fail"
    dflex = res["data"]["dflex"]
    assert dflex["failure"] == "stale-lock" and dflex["cache_valid"] is False
    assert dflex["lock"]["path"] == str(lock) and dflex["lock"]["holders"] == [] and dflex["lock"]["age_s"] >= 0
    reason = dflex["reason"]
    assert str(lock) in reason and "age" in reason and "no live process" in reason and f"rm {lock}" in reason
    assert "FileBaton.wait" in reason and "no kernel cache" in reason
    assert "sim.kernel_build" not in mark_names(res)  # never entered the import that would wait
    assert "bundled envs: pass" in res["reason"]
    assert signature_ids(res) == ["stale-kernel-build-lock"]
    assert lock.exists()  # the probe reports; removing it is the user's call


def test_stale_lock_beside_a_valid_cache_is_a_warning_and_the_stage_passes(tmp_path, killed_build, dflex_package):
    pkg, env = from_killed(killed_build, tmp_path)
    add_cache(pkg, dflex_package)
    code, doc = run_gpuprobe(ARGS + ONE_ENV + ["--timeout", "60"], str(tmp_path / "r"), extra_env=env, timeout=180)
    res = stage(doc, "sim")
    assert code == 0 and res["status"] == "pass", res.get("reason")
    dflex = res["data"]["dflex"]
    assert dflex["cache_valid"] is True and dflex["envs"]["dflex_hopper"]["status"] == "pass"
    lock = str(pkg / "kernels" / "lock")
    assert [w for w in dflex["warnings"] if lock in w and "next rebuild" in w]
    assert lock in res["reason"] and "warning" in res["reason"]
    assert res["signatures"] == []


def test_importing_despite_a_stale_lock_hangs_in_filebaton_wait(tmp_path, killed_build):
    _pkg, env = from_killed(killed_build, tmp_path)
    # the timeout leaves room for torch's import and dflex's source check on a busy machine
    code, doc = run_gpuprobe(ARGS + ONE_ENV + ["--set", "sim.import_despite_lock=true", "--timeout", "45",
                                               "--stall-window", "5"], str(tmp_path / "r"), extra_env=env, timeout=180)
    res = stage(doc, "sim")
    assert code == 3 and res["status"] == "hang" and res["last_mark"] == "sim.kernel_build"
    assert "FileBaton.wait" in res["evidence"]["stacks"]["text"] or "file_baton" in res["evidence"]["stacks"]["text"]
    assert signature_ids(res)[0] == "stale-kernel-build-lock"


# -- a live build's lock --------------------------------------------------------------------
HOLDER = textwrap.dedent('''
    import os, sys, time
    from torch.utils.file_baton import FileBaton
    baton = FileBaton(sys.argv[1])
    assert baton.try_acquire()   # as cpp_extension's builder does: the lock file stays open while it builds
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    os._exit(9)                  # killed mid-build: the lock is left behind
''')


def test_a_live_builds_lock_is_waited_for_and_its_death_is_named(tmp_path, dflex_package):
    pkg, env = copy_dflex(tmp_path, dflex_package, with_cache=False)
    (pkg / "kernels").mkdir()
    lock = pkg / "kernels" / "lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "20"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        code, doc = run_gpuprobe(ARGS + ONE_ENV + ["--timeout", "90"], str(tmp_path / "r"), extra_env=env, timeout=180)
    finally:
        holder.kill()
        holder.wait()
    res = stage(doc, "sim")
    assert code == 1 and res["status"] == "fail"
    dflex = res["data"]["dflex"]
    assert dflex["failure"] == "stale-lock" and "died while this import waited" in dflex["reason"]
    waits = [m for m in res["marks"] if m["name"] == "sim.wait_for_build"]
    assert waits and waits[0]["data"]["holders"][0]["pid"] == holder.pid
    assert waits[0]["data"]["holders"][0]["holds_lock_open"] is True
    assert "stale-kernel-build-lock" in signature_ids(res) and "dflex-concurrent-kernel-build" in signature_ids(res)


# -- dflex's other failure modes, each for real -------------------------------------------------
@pytest.fixture(scope="module")
def numpy2_overlay(tmp_path_factory):
    """NumPy 2 installed into a folder of its own, to put before site-packages on PYTHONPATH."""
    target = tmp_path_factory.mktemp("numpy2")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           "numpy>=2,<2.3"], capture_output=True, text=True, timeout=600)
    if proc.returncode:
        pytest.skip(f"numpy 2 could not be installed from the package index: {proc.stderr.strip()[-300:]}")
    return target


def test_numpy_2_fails_with_its_cause_and_remedy(tmp_path, dflex_package, numpy2_overlay):
    env = {"PYTHONPATH": os.pathsep.join([str(numpy2_overlay), str(ROOT)])}
    code, doc = run_gpuprobe(ARGS + ONE_ENV, str(tmp_path), extra_env=env, timeout=180)
    res = stage(doc, "sim")
    assert code == 1 and res["status"] == "fail"
    dflex = res["data"]["dflex"]
    assert dflex["failure"] == "numpy2" and dflex["error"]["type"] == "AttributeError"
    assert "np.Inf" in dflex["error"]["message"] and "numpy here is 2." in dflex["reason"]
    assert "pip install 'numpy<2'" in dflex["reason"]
    assert signature_ids(res) == ["dflex-numpy-2"]


def test_gym_missing_fails_with_its_cause_and_remedy(tmp_path, dflex_package):
    # gym is installed in this environment (dflex needs it); this interpreter is made unable to
    # import it, the import system's own way: a None entry in sys.modules.
    hide = tmp_path / "hide_gym"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['gym'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)])}
    code, doc = run_gpuprobe(ARGS + ONE_ENV, str(tmp_path / "r"), extra_env=env, timeout=180)
    res = stage(doc, "sim")
    assert code == 1 and res["status"] == "fail"
    dflex = res["data"]["dflex"]
    assert dflex["failure"] == "gym-missing" and dflex["error"]["type"] == "ModuleNotFoundError"
    assert "pip install gym==0.26.2" in dflex["reason"]
    assert signature_ids(res) == ["dflex-gym-missing"]


@contextlib.contextmanager
def unwritable(folder: Path):
    """``folder`` made unwritable for this process, as a shared read-only install is for a cluster user.
    root writes through permission bits, so for root the folder is made immutable (chattr +i)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True) if shutil.which("chattr") else None
    if made is None or made.returncode:
        pytest.skip("running as root and cannot make a folder immutable here (chattr +i): "
                    f"{made.stderr.strip() if made else 'no chattr'}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_kernels_folder_without_a_cache_fails_naming_it(tmp_path, dflex_package):
    pkg, env = copy_dflex(tmp_path, dflex_package, with_cache=False)
    with unwritable(pkg):
        code, doc = run_gpuprobe(ARGS + ONE_ENV, str(tmp_path / "r"), extra_env=env, timeout=180)
    res = stage(doc, "sim")
    assert code == 1 and res["status"] == "fail"
    dflex = res["data"]["dflex"]
    assert dflex["failure"] == "not-writable" and dflex["kernel_cache"]["writable"] is False
    assert str(pkg / "kernels") in dflex["reason"] and "cannot write" in dflex["reason"]
    assert not (pkg / "kernels").exists()
    assert signature_ids(res) == ["dflex-kernels-not-writable"]


def minimal_path(tmp_path: Path) -> str:
    """A PATH with python, ninja and py-spy, and no C++ compiler."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ninja", "py-spy"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3").symlink_to(sys.executable)
    return str(bin_dir)


def test_no_compiler_on_path_fails_with_its_remedy_and_a_real_build_would_fail(tmp_path, dflex_package):
    pkg, env = copy_dflex(tmp_path, dflex_package, with_cache=False)
    env = {**env, "PATH": minimal_path(tmp_path)}
    env.pop("CXX", None)
    # what the probe saves the user from: the real build, which fails without a compiler
    real = subprocess.run([sys.executable, "-c", "import dflex"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "CXX"}, **env})
    assert real.returncode != 0 and "Error building extension 'kernels'" in real.stdout + real.stderr
    assert not (pkg / "kernels" / "lock").exists()  # torch releases the lock on a failed build
    shutil.rmtree(pkg / "kernels")
    code, doc = run_gpuprobe(ARGS + ONE_ENV, str(tmp_path / "r"), extra_env=env, timeout=180)
    res = stage(doc, "sim")
    assert code == 1 and res["status"] == "fail"
    dflex = res["data"]["dflex"]
    assert dflex["failure"] == "no-compiler" and dflex["compiler"] is None
    assert "no C++ compiler (c++) is on PATH" in dflex["reason"] and "module load gcc" in dflex["reason"]
    assert signature_ids(res) == ["dflex-no-compiler"]
