"""Stage ``nvml``: the driver and the devices through NVML, without torch.

If this stage hangs, the driver itself is stuck (NVML calls go straight to it).
"""

from __future__ import annotations

from gpuprobe.child.stage import StageContext
from gpuprobe.node.nvml import Nvml, available


def run(ctx: StageContext) -> dict:
    nv = Nvml()
    ctx.mark("init")
    why = nv.init()
    if why is not None:
        raise ctx.skip(f"NVML unavailable: {why.reason} (no NVIDIA driver on this node?)")
    try:
        driver, cuda = nv.driver_version(), nv.cuda_driver_version()
        ctx.mark("device_count")
        count = nv.device_count()
        if not available(count):
            raise ctx.skip(f"NVML cannot count devices: {count.reason}")
        devices = []
        for index in range(count):
            info = nv.device_info(index)
            snap = nv.snapshot(index)
            ctx.mark(f"device@{index}", gpu_name=info.get("name"), error=info.get("error"))
            devices.append({**info, "state": snap})
        # a GPU whose handle works but whose name NVML cannot read has fallen off the bus
        broken = {d["index"]: d.get("error") or d["name"]["not_available"]
                  for d in devices if "error" in d or isinstance(d.get("name"), dict)}
        if broken:
            index, why = next(iter(broken.items()))
            raise RuntimeError(f"GPU(s) {sorted(broken)} not usable: GPU {index}: {why}")
        return {"driver_version": driver if available(driver) else None,
                "cuda_driver_version": cuda if available(cuda) else None,
                "device_count": count, "devices": devices, "simulated": nv.simulated}
    finally:
        nv.shutdown()
