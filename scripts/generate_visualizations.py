#!/usr/bin/env python
"""PNG plots of a PWM run: --log-dir RUN_DIR, or --log-dir LOGDIR --run NAME (see gpuprobe_pwm/plots.py)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gpuprobe_pwm.plots import main

if __name__ == "__main__":
    sys.exit(main())
