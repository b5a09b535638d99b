"""Smooth shaping terms shared by the bundled envs (dm_control-style "tolerance" rewards).

Each term is in [0, 1], so a product of terms is a per-step reward in [0, 1]: an episode's
return is directly "how many steps were good", which keeps returns comparable across envs.
"""

from __future__ import annotations

import math

import torch

# exp(-0.5 * (margin * _GAUSS_SCALE / margin)**2) == 0.1: the term is 0.1 at the margin.
_GAUSS_SCALE = math.sqrt(-2.0 * math.log(0.1))


def gaussian_closeness(value: torch.Tensor, margin: float) -> torch.Tensor:
    """1 at zero, 0.1 at |value| == margin, smoothly decaying beyond."""
    return torch.exp(-0.5 * (value * (_GAUSS_SCALE / margin)) ** 2)


def quadratic_closeness(value: torch.Tensor, margin: float) -> torch.Tensor:
    """1 at zero, 0 at and beyond |value| == margin."""
    return (1.0 - (value / margin) ** 2).clamp(min=0.0)


def upright(cos_angle: torch.Tensor) -> torch.Tensor:
    """1 when the angle is 0 (pole up), 0 when it is pi (pole hanging down)."""
    return (1.0 + cos_angle) / 2.0


def soft(term: torch.Tensor, floor: float) -> torch.Tensor:
    """Blend a term towards 1 so that it only scales the reward by at most ``floor``."""
    return floor + (1.0 - floor) * term
