"""Stage ``cuda``: torch import, CUDA init, context creation, a first kernel, mem_get_info.

Each step has its own mark, so a stall names the step: a first CUDA call that creates
the context (slow, or stuck in the driver), or a first kernel the driver must JIT.
"""

from __future__ import annotations

import time

from gpuprobe.child.stage import StageContext


def run(ctx: StageContext) -> dict:
    preloaded = (ctx.config.get("preload") or {}).get("imports_s") or {}
    ctx.mark("import_torch", preloaded_s=preloaded.get("torch"))
    start = time.monotonic()
    try:
        import torch
    except ImportError as exc:
        raise ctx.skip(f"torch is not installed ({exc}); pip install torch") from None
    data: dict = {"torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
                  "import_s": preloaded.get("torch", round(time.monotonic() - start, 3))}
    if ctx.device != "cuda":
        raise ctx.skip("running with --device cpu: CUDA not probed")
    ctx.mark("is_available")
    if not torch.cuda.is_available():
        why = ("torch is a CPU-only build" if torch.version.cuda is None
               else "torch.cuda.is_available() is False (no driver, or no visible GPU)")
        raise ctx.skip(f"no CUDA: {why} ({torch.__version__})")
    index = ctx.gpu or 0
    ctx.mark("init")
    t = time.monotonic()
    torch.cuda.init()
    data["init_s"] = round(time.monotonic() - t, 3)
    ctx.mark("context", gpu=index)
    t = time.monotonic()
    torch.cuda.set_device(index)
    x = torch.ones(1, device=f"cuda:{index}")  # the first allocation creates the context
    torch.cuda.synchronize(index)
    data["context_s"] = round(time.monotonic() - t, 3)
    ctx.mark("kernel")
    t = time.monotonic()
    a = torch.randn(1024, 1024, device=x.device)
    (a @ a).sum().item()
    data["first_kernel_s"] = round(time.monotonic() - t, 3)
    ctx.mark("mem_get_info")
    free, total = torch.cuda.mem_get_info(index)
    props = torch.cuda.get_device_properties(index)
    data.update({"free_bytes": free, "total_bytes": total, "name": props.name,
                 "compute_capability": f"{props.major}.{props.minor}",
                 "arch_list": torch.cuda.get_arch_list()})
    return data
