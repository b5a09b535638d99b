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


def copy_bandwidth(ctx: StageContext, torch, device: str, size: int, reps: int = 20) -> dict:
    """Memory bandwidth of one large copy, counted as bytes read plus bytes written.

    The figure to hold against a card's datasheet (an H200's 4.8 TB/s): a device-to-device
    copy streams through device memory, unlike the staged allocations above, which time the
    allocator. The median of ``reps`` timed copies after two warm-ups; CUDA events on a GPU,
    so the launch is not what is timed.
    """
    ctx.mark("bandwidth", bytes=size)
    src = torch.empty(size, dtype=torch.uint8, device=device).random_(0, 255)  # never time zeros
    dst = torch.empty_like(src)
    times = []
    for i in range(reps + 2):
        if device == "cpu":
            t = time.perf_counter()
            dst.copy_(src)
            elapsed = time.perf_counter() - t
        else:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        if i >= 2:
            times.append(elapsed)
    if not torch.equal(dst[:4096], src[:4096]):
        raise RuntimeError("the timed copy did not copy")
    median = sorted(times)[len(times) // 2]
    del src, dst
    return {"bytes": size, "reps": reps, "median_s": round(median, 6), "gb_s": round(2 * size / median / 1e9, 1),
            "counted": "bytes read + bytes written"}


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
        size = min(int(ctx.options.get("bandwidth_mib", 2048)) * MIB, limit // 2)
        bandwidth = copy_bandwidth(ctx, torch, device, size)
        return {"device": device, "free_bytes": free, "total_bytes": total, "allocations": rows,
                "bandwidth": bandwidth, **extra}
    import psutil

    available = psutil.virtual_memory().available
    limit = min(int(available * fraction), int(ctx.options.get("cpu_max_mib", 128)) * MIB)
    ctx.mark("host_memory", available_bytes=available, limit_bytes=limit)
    rows = allocate_staged(ctx, torch, "cpu", limit)
    bandwidth = copy_bandwidth(ctx, torch, "cpu", min(int(ctx.options.get("bandwidth_mib", 64)) * MIB, limit // 2),
                               reps=5)
    why = "torch is a CPU-only build" if torch.version.cuda is None else "--device cpu"
    return {"device": "cpu", "available_bytes": available, "allocations": rows, "bandwidth": bandwidth,
            "pinned": {"probed": False, "reason": f"pinned host memory needs CUDA ({why})"}}
