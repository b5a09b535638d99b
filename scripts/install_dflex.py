"""Install the vendored dflex wheel and what it needs at import time, when the wheel is there.

dflex (DiffRL's simulator) is not on any package registry. CI and the project's machines keep a
wheel in ``../shared/vendor/dflex/`` beside the checkout; its metadata forgets two imports, so they
are installed with it: ``gym==0.26.2`` (``from gym import spaces``) and ``numpy<2`` (``np.Inf``).
Without the wheel this prints why and exits 0: the dflex tests then skip and say so.

    python3 scripts/install_dflex.py            # the README's test set-up runs this
    python3 scripts/install_dflex.py --wheel-dir /path/to/folder/with/the/wheel
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``../shared`` beside the checkout; for a git worktree, beside the main checkout it belongs to."""
    beside = ROOT.parent / "shared"
    if beside.is_dir():
        return beside
    try:
        common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return beside
    return Path(common).parent.parent / "shared" if common else beside


VENDOR = shared_dir() / "vendor" / "dflex"
NEEDS = ["gym==0.26.2", "numpy<2"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, default=VENDOR, help=f"folder with dflex-*.whl (default {VENDOR})")
    args = parser.parse_args()
    wheels = sorted(args.wheel_dir.glob("dflex-*.whl")) if args.wheel_dir.is_dir() else []
    if not wheels:
        print(f"install_dflex: no dflex wheel in {args.wheel_dir}; the dflex tests will skip")
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "-q", str(wheels[-1]), *NEEDS]
    print(f"install_dflex: {' '.join(cmd[3:])}")
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
