"""Stage ``alloc``: allocations at doubling sizes, pinned host memory, copies.

On a GPU: device allocations up to a fraction of free memory, then pinned host
buffers (``cudaHostAlloc``, which has been seen to stall) and host<->device copies.
With ``--device cpu``: the same staged allocations in host memory, capped so a probe
never eats a shared node's RAM; pinned memory needs CUDA and is reported as not probed.
"""

from __future__ import annotations

import time

from gpuprobe.child.stage import StageContext

MIB = 1024**2


def _sizes(limit_bytes: int, start_mib: int = 64) -> list[int]:
    sizes, size = [], start_mib * MIB
    while size <= limit_bytes:
        sizes.append(size)
        size *= 2
    return sizes


def allocate_staged(ctx: StageContext, torch, device: str, limit_bytes: int) -> list[dict]:
    rows = []
    for size in _sizes(limit_bytes):
        ctx.mark(f"alloc@{size // MIB}MiB", bytes=size)
        t = time.monotonic()
        block = torch.empty(size, dtype=torch.uint8, device=device)
        block.fill_(1)  # touch every page: an allocation is only real once it is used
        if device != "cpu":
            torch.cuda.synchronize(device)
        rows.append({"bytes": size, "seconds": round(time.monotonic() - t, 4)})
        del block
    return rows


def pinned_and_copies(ctx: StageContext, torch, device: str, limit_bytes: int) -> dict:
    out: dict = {"pinned": [], "copies": []}
    for size in _sizes(limit_bytes):
        ctx.mark(f"pinned@{size // MIB}MiB", bytes=size)
        t = time.monotonic()
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        out["pinned"].append({"bytes": size, "seconds": round(time.monotonic() - t, 4)})
        dev = torch.empty(size, dtype=torch.uint8, device=device)
        ctx.mark("h2d", bytes=size)
        t = time.monotonic()
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize(device)
        h2d = time.monotonic() - t
        ctx.mark("d2h", bytes=size)
        t = time.monotonic()
        host.copy_(dev, non_blocking=True)
        torch.cuda.synchronize(device)
        d2h = time.monotonic() - t
        out["copies"].append({"bytes": size, "h2d_gb_s": round(size / h2d / 1e9, 2), "d2h_gb_s": round(size / d2h / 1e9, 2)})
        del host, dev
    return out


def run(ctx: StageContext) -> dict:
    import torch

    fraction = float(ctx.options.get("fraction", 0.5))
    if ctx.device == "cuda":
        if not torch.cuda.is_available():
            raise ctx.skip("no CUDA (torch.cuda.is_available() is False); use --device cpu")
        device = ctx.torch_device
        ctx.mark("mem_get_info")
        free, total = torch.cuda.mem_get_info(device)
        limit = int(free * fraction)
        rows = allocate_staged(ctx, torch, device, limit)
        pinned_limit = int(ctx.options.get("pinned_max_mib", 1024)) * MIB
        extra = pinned_and_copies(ctx, torch, device, pinned_limit)
        return {"device": device, "free_bytes": free, "total_bytes": total, "allocations": rows, **extra}
    import psutil

    available = psutil.virtual_memory().available
    limit = min(int(available * fraction), int(ctx.options.get("cpu_max_mib", 128)) * MIB)
    ctx.mark("host_memory", available_bytes=available, limit_bytes=limit)
    rows = allocate_staged(ctx, torch, "cpu", limit)
    why = "torch is a CPU-only build" if torch.version.cuda is None else "--device cpu"
    return {"device": "cpu", "available_bytes": available, "allocations": rows,
            "pinned": {"probed": False, "reason": f"pinned host memory needs CUDA ({why})"}}
