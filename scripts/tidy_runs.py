#!/usr/bin/env python
"""Move upstream PWM's periodic PWM_iter*.pt checkpoints into old_checkpoints/ (see gpuprobe_pwm/tidy.py)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gpuprobe_pwm.tidy import main

if __name__ == "__main__":
    sys.exit(main())
