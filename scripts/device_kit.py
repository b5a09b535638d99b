"""Build and check the offline kit for a bare GPU machine (see docs/DEVICE.md).

The GPU machine has an image with Python 3.12, torch and the CUDA tools, but no package
registry. What gpuprobe's GPU evidence run needs beyond that image travels as wheels in
``.device-kit/wheels`` (ignored by git), inside the device's 64 MiB limit on what a run may
carry. This script:

1. downloads the wheels named in ``scripts/device_kit/requirements.txt`` for CPython 3.12 on
   x86-64 Linux (sdist-only pure-Python packages are built into wheels here);
2. follows each wheel's ``Requires-Dist`` (markers evaluated for that target), fetching what
   neither the image (``scripts/device_kit/image-packages.txt``) nor the kit already has, except
   what ``scripts/device_kit/omit.txt`` leaves out on purpose (each with its reason);
3. copies the vendored dflex wheel and its licence from ``../shared/vendor/dflex/``;
4. checks the kit: one version per package, every requirement met by the kit or the image,
   and the kit plus the tracked tree under the carry limit.

``--check`` runs step 4 alone on an existing kit. Exit 0: the kit is complete and fits;
1: it is not (each problem on a line); 2: bad usage.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "scripts" / "device_kit"
KIT = ROOT / ".device-kit"
WHEELS = KIT / "wheels"
CARRY_LIMIT = 64 * 2**20          # the device tool's limit on what one run may send
MARGIN = 2 * 2**20                # room for files a session adds before the run
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]

# The device's interpreter, for evaluating requirement markers.
TARGET_ENV = dict(default_environment(), python_version="3.12", python_full_version="3.12.3",
                  implementation_name="cpython", platform_python_implementation="CPython",
                  sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
                  os_name="posix", extra="")


def read_list(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def wheel_metadata(path: Path) -> tuple[str, str, list[Requirement]]:
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(zf.read(name).decode())
    reqs = []
    for text in msg.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(TARGET_ENV):
            reqs.append(req)
    return canonicalize_name(msg["Name"]), msg["Version"], reqs


def kit_wheels() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(WHEELS.glob("*.whl")):
        name = canonicalize_name(parse_wheel_filename(path.name)[0])
        found.setdefault(name, []).append(path)
    return found


def fetch(requirement: str) -> None:
    """One wheel, no dependencies: a cp312 binary if there is one, else a pure wheel built here."""
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.12", "--implementation", "cp", "-d", str(WHEELS)]
    for plat in PLATFORMS:
        base += ["--platform", plat]
    if subprocess.run([*base, requirement], capture_output=True, text=True).returncode == 0:
        return
    # sdist only (antlr4 4.9.3, gym 0.26.2): build it, and keep it only if it is pure Python
    tmp = KIT / "build"
    shutil.rmtree(tmp, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), requirement],
                          capture_output=True, text=True)
    built = list(tmp.glob("*.whl"))
    if done.returncode != 0 or not built:
        raise SystemExit(f"device_kit: cannot get a wheel for {requirement}: {done.stderr.strip()[-300:]}")
    for wheel in built:
        tags = parse_wheel_filename(wheel.name)[3]
        if not all(t.abi == "none" and t.platform == "any" for t in tags):
            raise SystemExit(f"device_kit: {requirement} has no cp312 wheel and builds only for this machine")
        shutil.move(str(wheel), WHEELS / wheel.name)
    shutil.rmtree(tmp, ignore_errors=True)


def build(image: set[str], wanted: list[str], omitted: set[str]) -> None:
    WHEELS.mkdir(parents=True, exist_ok=True)
    pinned = {canonicalize_name(Requirement(r).name) for r in wanted}
    for req in wanted:
        if canonicalize_name(Requirement(req).name) not in kit_wheels():
            print(f"device_kit: fetching {req}", flush=True)
            fetch(req)
    copy_dflex()
    # follow dependencies until nothing new is needed
    while True:
        have = kit_wheels()
        missing = []
        for paths in have.values():
            for req in wheel_metadata(paths[0])[2]:
                name = canonicalize_name(req.name)
                if name not in have and name not in image and name not in pinned and name not in omitted:
                    missing.append(str(req).split(";")[0])
        if not missing:
            return
        for req in sorted(set(missing)):
            print(f"device_kit: fetching dependency {req}", flush=True)
            fetch(req)


def shared_dir() -> Path:
    """``../shared`` beside the checkout (as CI lays it), or beside the main worktree of a git worktree."""
    if os.environ.get("GPUPROBE_SHARED"):
        return Path(os.environ["GPUPROBE_SHARED"])
    common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                            capture_output=True, text=True).stdout.strip()
    for base in (ROOT, Path(common).parent if common else ROOT):
        if (base.parent / "shared").is_dir():
            return base.parent / "shared"
    return ROOT.parent / "shared"


def copy_dflex() -> None:
    dflex_dir = shared_dir() / "vendor" / "dflex"
    wheels = sorted(dflex_dir.glob("dflex-*.whl"))
    if not wheels:
        raise SystemExit(f"device_kit: no dflex wheel in {dflex_dir} (the vendored dflex is needed on the device; "
                         "set GPUPROBE_SHARED to the folder holding vendor/dflex)")
    for wheel in wheels:
        if not (WHEELS / wheel.name).exists():
            shutil.copy2(wheel, WHEELS / wheel.name)
    licence = dflex_dir / "LICENSE.md"
    if licence.exists():
        shutil.copy2(licence, KIT / "dflex-LICENSE.md")   # the wheel's licence travels with it


def tracked_bytes() -> int:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, text=True, check=True).stdout
    return sum((ROOT / p).stat().st_size for p in out.split("\0") if p and (ROOT / p).is_file())


def check(image: set[str], wanted: list[str], omitted: set[str]) -> list[str]:
    problems = []
    have = kit_wheels()
    for name, paths in have.items():
        if len(paths) > 1:
            problems.append(f"two versions of {name}: {', '.join(p.name for p in paths)} (pip stops on that)")
    versions = {name: wheel_metadata(paths[0])[1] for name, paths in have.items()}
    for req in map(Requirement, wanted):
        name = canonicalize_name(req.name)
        if name not in have:
            problems.append(f"{req} is not in the kit")
        elif not req.specifier.contains(versions[name], prereleases=True):
            problems.append(f"the kit's {name} {versions[name]} does not satisfy {req}")
    for name, paths in have.items():
        for req in wheel_metadata(paths[0])[2]:
            dep = canonicalize_name(req.name)
            if dep in have:
                if not req.specifier.contains(versions[dep], prereleases=True):
                    problems.append(f"{name} needs {req}, the kit has {dep} {versions[dep]}")
            elif dep in omitted:
                continue
            elif dep not in image:
                problems.append(f"{name} needs {req}: neither the kit nor the image has it")
    if not any(name == "dflex" for name in have):
        problems.append("the dflex wheel is not in the kit")
    kit_size = sum(p.stat().st_size for p in KIT.rglob("*") if p.is_file())
    total = kit_size + tracked_bytes()
    if total > CARRY_LIMIT - MARGIN:
        problems.append(f"kit {kit_size / 2**20:.1f} MiB + tree = {total / 2**20:.1f} MiB, over "
                        f"{(CARRY_LIMIT - MARGIN) / 2**20:.0f} MiB (the 64 MiB carry limit less a margin)")
    print(f"device_kit: {len(have)} wheels, kit {kit_size / 2**20:.1f} MiB, with the tree "
          f"{total / 2**20:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/device_kit.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check an existing kit")
    parser.add_argument("--kit", type=Path, default=None, help="the kit folder (default: .device-kit of the checkout)")
    parser.add_argument("--spec", type=Path, default=None, help="folder of requirements.txt, image-packages.txt, omit.txt")
    args = parser.parse_args(argv)
    global KIT, WHEELS, SPEC
    if args.kit:
        KIT, WHEELS = args.kit.resolve(), args.kit.resolve() / "wheels"
    if args.spec:
        SPEC = args.spec.resolve()
    image = {canonicalize_name(n) for n in read_list(SPEC / "image-packages.txt")}
    wanted = read_list(SPEC / "requirements.txt")
    omitted = {canonicalize_name(n) for n in read_list(SPEC / "omit.txt")}
    if not args.check:
        build(image, wanted, omitted)
    problems = check(image, wanted, omitted)
    for line in problems:
        print(f"device_kit: {line}", file=sys.stderr)
    if not problems:
        print(f"device_kit: ready in {KIT}/ (a device run carries it as carry=['{KIT.name}'])")
    return 1 if problems else 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
