"""Where the replay Buffer's storage lives: PWM's (TD-MPC2's) rule, as a pure function.

On the first ``add()`` PWM queries free device memory and keeps the storage on the device
only if 2.5 x its bytes fit; otherwise it falls back to host memory, where sampling is
CPU-bound. :func:`decide_storage` applies that rule to the numbers and says why, so the
trainer, the ``buffer`` probe and the known-issue signatures all read the same decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

_GIB = 1024**3

#: PWM's heuristic: device storage only when 2.5 x the storage's bytes are free.
STORAGE_FACTOR = 2.5


class StorageUnavailable(RuntimeError):
    """The requested storage cannot be used here (e.g. storage='cuda' without CUDA)."""


@dataclass
class StorageDecision:
    """Where the Buffer's storage lives and why, with the numbers the decision used."""

    policy: str  # "auto" | "cuda" | "cpu", as requested
    device: str  # where the storage lives: "cpu" or "cuda:N"
    bytes_needed: int  # bytes of the full-capacity storage
    free_bytes: int | None  # free device memory seen; None when not queried
    total_bytes: int | None
    factor: float
    reason: str
    pinned: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _gib(n: float) -> str:
    return f"{n / _GIB:.2f} GiB"


def decide_storage(
    policy: str,
    device: str | torch.device,
    bytes_needed: int,
    free_bytes: int | None = None,
    total_bytes: int | None = None,
    pin_memory: bool = False,
    cuda_available: bool | None = None,
) -> StorageDecision:
    """PWM's storage rule as a pure function of the numbers (the Buffer queries, this decides).

    ``device`` is the compute device. Raises StorageUnavailable for policy 'cuda' without CUDA.
    """
    if policy not in ("auto", "cuda", "cpu"):
        raise ValueError(f"storage must be 'auto', 'cuda' or 'cpu', got {policy!r}")
    device = torch.device(device)
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    cuda_dev = device if device.type == "cuda" else torch.device("cuda", 0)
    cuda_name = f"cuda:{cuda_dev.index if cuda_dev.index is not None else 0}"

    if policy == "cuda":
        if not cuda_available:
            raise StorageUnavailable(
                "storage='cuda' was requested but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"
            )
        where, reason = cuda_name, f"storage='cuda' requested: {_gib(bytes_needed)} on {cuda_name}"
    elif policy == "cpu":
        where, reason = "cpu", f"storage='cpu' requested: {_gib(bytes_needed)} in host memory"
    elif device.type != "cuda":
        where, reason = "cpu", f"compute device is {device.type}: host storage"
    elif free_bytes is None:
        raise ValueError("storage='auto' on a CUDA device needs free_bytes")
    else:
        want = STORAGE_FACTOR * bytes_needed
        fits = want < free_bytes
        where = cuda_name if fits else "cpu"
        reason = (
            f"{STORAGE_FACTOR} x {_gib(bytes_needed)} = {_gib(want)} "
            f"{'<' if fits else '>='} {_gib(free_bytes)} free on {cuda_name}: "
            f"{'device' if fits else 'host'} storage (PWM's rule)"
        )

    pinned = False
    if where == "cpu" and pin_memory:
        if cuda_available:
            pinned, reason = True, reason + "; pinned host memory"
        else:
            reason += "; not pinned: CUDA is not available"
    return StorageDecision(
        policy, where, int(bytes_needed), free_bytes, total_bytes, STORAGE_FACTOR, reason, pinned
    )
