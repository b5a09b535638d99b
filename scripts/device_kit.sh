#!/usr/bin/env bash
# Prepare, on this machine, the offline kit that scripts/gpu_evidence.sh needs on a bare GPU
# machine: cp312 wheels of what its image lacks and the vendored dflex wheel, in .device-kit/
# (ignored by git), checked to be complete and to fit the 64 MiB a device run may carry.
#   scripts/device_kit.sh            build (or complete) the kit, then check it
#   scripts/device_kit.sh --check    check an existing kit only
# See docs/DEVICE.md.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/device_kit.py" "$@"
