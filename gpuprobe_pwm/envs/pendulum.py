"""Pendulum swing-up and an under-actuated double pendulum (pendubot), in torch.

Both start hanging down, have one torque input and a [0, 1] per-step reward that is ~0
while hanging and ~1 balanced upright, so returns read like the cart-pole's.
Angles are measured from upright; semi-implicit Euler integration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gpuprobe_pwm.envs.base import TorchVecEnv
from gpuprobe_pwm.envs.rewards import gaussian_closeness, quadratic_closeness, soft, upright


@dataclass(frozen=True)
class PendulumParams:
    """Uniform rod on a motorised pivot (SI units). max_torque < m g l / 2, so it must pump."""

    gravity: float = 10.0
    mass: float = 1.0
    length: float = 1.0
    max_torque: float = 2.0
    max_speed: float = 8.0  # rad/s; keeps the learned dynamics in a bounded range
    dt: float = 0.05


class Pendulum(TorchVecEnv):
    """obs [cos(theta), sin(theta), theta_dot] (3), act [torque] (1)."""

    default_episode_length = 200
    env_name, obs_size, act_size = "pendulum", 3, 1
    params_class = PendulumParams
    params: PendulumParams

    def _initial_state(self, n: int) -> torch.Tensor:
        state = self._uniform(n, 2, -0.1, 0.1)  # theta, theta_dot
        if self.stochastic_init:
            # Whole circle, so upright states are in the training data (see CartPoleSwingUp).
            state[:, 0] = self._uniform(n, 1, -math.pi, math.pi)[:, 0]
            state[:, 1] = self._uniform(n, 1, -0.25, 0.25)[:, 0]
        else:
            state[:, 0] += math.pi
        return state

    def _integrate(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        p = self.params
        theta, theta_dot = state.unbind(dim=1)
        torque = action[:, 0] * p.max_torque
        theta_acc = 3.0 * p.gravity / (2.0 * p.length) * torch.sin(theta) + 3.0 / (
            p.mass * p.length**2
        ) * torque
        theta_dot = (theta_dot + p.dt * theta_acc).clamp(-p.max_speed, p.max_speed)
        theta = theta + p.dt * theta_dot
        theta = torch.atan2(torch.sin(theta), torch.cos(theta))
        return torch.stack((theta, theta_dot), dim=1)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        theta, theta_dot = state.unbind(dim=1)
        return torch.stack((torch.cos(theta), torch.sin(theta), theta_dot), dim=1)

    def _reward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        theta, theta_dot = state.unbind(dim=1)
        small_control = soft(quadratic_closeness(action[:, 0], margin=1.0), 0.8)
        small_velocity = soft(gaussian_closeness(theta_dot, margin=4.0), 0.5)
        return upright(torch.cos(theta)) * small_control * small_velocity

    def _primal(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return upright(torch.cos(state[:, 0]))


@dataclass(frozen=True)
class DoublePendulumParams:
    """Two point masses on massless links; torque only at the base joint (pendubot)."""

    gravity: float = 9.81
    mass1: float = 1.0
    mass2: float = 1.0
    length1: float = 1.0
    length2: float = 1.0
    damping: float = 0.05  # N m s / rad at both joints; keeps the chaotic motion bounded
    max_torque: float = 15.0
    max_speed: float = 20.0
    dt: float = 0.02
    substeps: int = 4


class DoublePendulum(TorchVecEnv):
    """obs [cos q1, sin q1, cos q2, sin q2, q1_dot, q2_dot] (6), act [base torque] (1): dflex's sizes.

    q1 is the base link's angle from upright, q2 the elbow angle relative to the base link.
    """

    default_episode_length = 240
    env_name, obs_size, act_size = "double_pendulum", 6, 1
    params_class = DoublePendulumParams
    params: DoublePendulumParams

    def _initial_state(self, n: int) -> torch.Tensor:
        state = self._uniform(n, 4, -0.05, 0.05)  # q1, q2, q1_dot, q2_dot
        if self.stochastic_init:
            # Base link over the whole circle; the elbow within DiffRL's +-pi/2 of straight,
            # velocities DiffRL's +-0.25: the upright configurations are in the training data.
            state[:, 0] = self._uniform(n, 1, -math.pi, math.pi)[:, 0]
            state[:, 1] = self._uniform(n, 1, -math.pi / 2, math.pi / 2)[:, 0]
            state[:, 2:] = self._uniform(n, 2, -0.25, 0.25)
        else:
            state[:, 0] += math.pi
        return state

    def _accelerations(
        self, q1: torch.Tensor, q2: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, tau: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        m1, m2, l1, l2, g = p.mass1, p.mass2, p.length1, p.length2, p.gravity
        c2 = torch.cos(q2)
        h = m2 * l1 * l2 * torch.sin(q2)
        # Lagrangian form M(q) q'' = tau + G(q) - C(q, q') - D q' for the 2x2 system.
        m11 = (m1 + m2) * l1**2 + m2 * l2**2 + 2.0 * m2 * l1 * l2 * c2
        m12 = m2 * l2**2 + m2 * l1 * l2 * c2
        m22 = torch.full_like(q1, m2 * l2**2)
        g1 = g * ((m1 + m2) * l1 * torch.sin(q1) + m2 * l2 * torch.sin(q1 + q2))
        g2 = g * m2 * l2 * torch.sin(q1 + q2)
        f1 = tau + g1 + h * (2.0 * w1 * w2 + w2**2) - p.damping * w1
        f2 = g2 - h * w1**2 - p.damping * w2
        det = m11 * m22 - m12 * m12
        return (m22 * f1 - m12 * f2) / det, (m11 * f2 - m12 * f1) / det

    def _integrate(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        p = self.params
        q1, q2, w1, w2 = state.unbind(dim=1)
        tau = action[:, 0] * p.max_torque
        h = p.dt / p.substeps
        for _ in range(p.substeps):
            a1, a2 = self._accelerations(q1, q2, w1, w2, tau)
            w1 = (w1 + h * a1).clamp(-p.max_speed, p.max_speed)
            w2 = (w2 + h * a2).clamp(-p.max_speed, p.max_speed)
            q1 = q1 + h * w1
            q2 = q2 + h * w2
        q1 = torch.atan2(torch.sin(q1), torch.cos(q1))
        q2 = torch.atan2(torch.sin(q2), torch.cos(q2))
        return torch.stack((q1, q2, w1, w2), dim=1)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        q1, q2, w1, w2 = state.unbind(dim=1)
        return torch.stack(
            (torch.cos(q1), torch.sin(q1), torch.cos(q2), torch.sin(q2), w1, w2), dim=1
        )

    def _reward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        p = self.params
        q1, q2, w1, w2 = state.unbind(dim=1)
        reach = p.length1 + p.length2
        tip_height = p.length1 * torch.cos(q1) + p.length2 * torch.cos(q1 + q2)
        height = (tip_height + reach) / (2.0 * reach)  # 0 hanging, 1 fully upright
        small_control = soft(quadratic_closeness(action[:, 0], margin=1.0), 0.8)
        small_velocity = soft(gaussian_closeness(torch.hypot(w1, w2), margin=10.0), 0.5)
        return height * small_control * small_velocity

    def _primal(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        p = self.params
        q1, q2 = state[:, 0], state[:, 1]
        reach = p.length1 + p.length2
        return (p.length1 * torch.cos(q1) + p.length2 * torch.cos(q1 + q2) + reach) / (2.0 * reach)
