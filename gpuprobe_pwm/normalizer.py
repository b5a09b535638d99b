"""Running mean/std normalisers for observations, rewards and returns.

Kept as plain tensors (not nn.Module buffers) so they sit outside the optimisers and are saved
explicitly in every checkpoint, as upstream PWM does with its obs/rew/ret RMS objects.
"""
from __future__ import annotations

import torch


class RunningMeanStd:
    """Streaming mean and variance over the leading dimensions (parallel Welford merge).

    `shape` is the shape of one sample; `update(x)` takes any tensor whose trailing dims match.
    """

    def __init__(self, shape: tuple[int, ...] = (), device: str | torch.device = "cpu",
                 epsilon: float = 1e-4) -> None:
        self.device = torch.device(device)
        self.mean = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.var = torch.ones(shape, dtype=torch.float64, device=self.device)
        # A small pseudo-count keeps the first update from dividing by zero and stops one odd
        # early batch from fixing the scale.
        self.count = float(epsilon)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(self.device, torch.float64).reshape(-1, *self.mean.shape)
        if x.shape[0] == 0:
            return
        batch_mean = x.mean(dim=0)
        batch_var = x.var(dim=0, unbiased=False)
        batch_count = float(x.shape[0])
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.pow(2) * self.count * batch_count / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + 1e-8)

    def normalize(self, x: torch.Tensor, center: bool = True, clip: float | None = 10.0) -> torch.Tensor:
        """(x - mean) / std in x's dtype; `center=False` only scales (keeps a reward's sign)."""
        mean = self.mean.to(x.dtype)
        std = self.std.to(x.dtype)
        y = (x - mean) / std if center else x / std
        return y.clamp(-clip, clip) if clip is not None else y

    def state_dict(self) -> dict:
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = state["mean"].to(self.device, torch.float64)
        self.var = state["var"].to(self.device, torch.float64)
        self.count = float(state["count"])
