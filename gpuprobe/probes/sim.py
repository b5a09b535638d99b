"""Stage ``sim``: the simulator's env step, dflex when importable, and the bundled torch envs.

dflex part (when ``find_spec('dflex')`` finds it), each step with its own mark:
  ``lock_check``     stale kernel-build ``lock`` in ``<dflex>/kernels/`` (and torch's
                     extensions folder): path, age, live build processes; a stale lock
                     stops the dflex part *before* the import that would wait forever
  ``import_dflex``   ``import dflex``, timed
  ``kernel_build``   importing the env's module (DiffRL builds/loads its kernels there:
                     ``load_inline``, and the driver's PTX JIT on a new architecture), timed
  ``dflex.construct`` / ``dflex.reset`` / ``dflex.step`` (progress done/total): the env
                     built through ``gpuprobe_pwm.envs.make_env`` (the trainer's adapter), steps/s
The bundled torch envs always run on the same device (marks ``<env>.construct``,
``<env>.reset``, ``<env>.step``), so the stage says something useful without dflex.

Options (``-o sim.KEY=VALUE``): ``env`` (dflex env, default dflex_ant; "Ant" works too),
``num_envs`` (default: the env's, from DFLEX_ENVS), ``steps`` (dflex steps, default 100),
``envs`` (bundled envs, default all), ``bundled_num_envs`` (64), ``bundled_steps`` (200),
``dflex`` (false: skip the dflex part), ``import_despite_lock`` (true: import even with a
stale lock, to reproduce the stall under the watchdog).
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from gpuprobe.child.stage import StageContext

log = logging.getLogger(__name__)


class SimFailed(RuntimeError):
    """The dflex part failed while the bundled envs may have passed; the message says both."""


def _steps_per_s(steps: int, num_envs: int, seconds: float) -> dict:
    return {"steps": steps, "num_envs": num_envs, "seconds": round(seconds, 4),
            "steps_per_s": round(steps / seconds, 2) if seconds > 0 else None,
            "env_steps_per_s": round(steps * num_envs / seconds, 1) if seconds > 0 else None}


def step_env(ctx: StageContext, label: str, env: Any, steps: int, torch: Any) -> dict:
    """Reset, then ``steps`` random-action steps; marks ``<label>.reset`` and ``<label>.step``."""
    ctx.mark(f"{label}.reset")
    t = time.monotonic()
    env.reset()
    reset_s = time.monotonic() - t
    every = max(1, steps // 20)  # enough marks for a rate, few enough to stay cheap
    t = time.monotonic()
    for i in range(steps):
        actions = torch.rand(env.num_envs, env.num_acts, device=env.device) * 2 - 1
        env.step(actions)
        if (i + 1) % every == 0 or i + 1 == steps:
            ctx.progress(f"{label}.step", i + 1, steps)
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    return {"reset_s": round(reset_s, 4), **_steps_per_s(steps, env.num_envs, time.monotonic() - t)}


def bundled_envs(ctx: StageContext, torch: Any, device: str) -> dict:
    from gpuprobe_pwm.envs import TORCH_ENV_NAMES, make_env

    names = ctx.options.get("envs") or list(TORCH_ENV_NAMES)
    names = [names] if isinstance(names, str) else list(names)
    num_envs = int(ctx.options.get("bundled_num_envs", 64))
    steps = int(ctx.options.get("bundled_steps", 200))
    out = {}
    for name in names:
        ctx.mark(f"{name}.construct", num_envs=num_envs)
        t = time.monotonic()
        env = make_env(name, num_envs, device=device, seed=0)
        out[name] = {"status": "pass", "construct_s": round(time.monotonic() - t, 4),
                     **step_env(ctx, name, env, steps, torch)}
    return out


def _dflex_env_name(raw: str) -> str:
    from gpuprobe_pwm.envs import DFLEX_ENVS

    key = raw.lower()
    for candidate in (key, f"dflex_{key}", key.replace("env", "")):
        if candidate in DFLEX_ENVS:
            return candidate
        if f"dflex_{candidate}" in DFLEX_ENVS:
            return f"dflex_{candidate}"
    raise ValueError(f"unknown dflex env {raw!r}; known: {', '.join(DFLEX_ENVS)}")


def dflex_part(ctx: StageContext, torch: Any, device: str) -> dict:
    """The dflex half of the stage: a dict with ``status`` pass | skip | fail and its reason."""
    from gpuprobe.probes import _dflex_lock as locks
    from gpuprobe_pwm.envs import DFLEX_ENVS, dflex_status, make_env

    if ctx.options.get("dflex") is False:
        return {"status": "skip", "reason": "dflex part turned off (-o sim.dflex=false)"}
    installed, detail = dflex_status()
    if not installed:
        return {"status": "skip", "reason": f"not installed: {detail}"}
    package = locks.dflex_package_dir()
    ctx.mark("lock_check", package=str(package))
    report = locks.lock_report(package)
    out: dict = {"version": detail, "package_dir": str(package), "lock": report}
    if report["stale"] and not ctx.options.get("import_despite_lock"):
        return {**out, "status": "fail", "reason": locks.stale_lock_reason(report)}

    ctx.mark("import_dflex", locks=len(report["locks"]),
             stale_locks=[lk["path"] for lk in report["locks"] if lk["stale"]])
    t = time.monotonic()
    importlib.import_module("dflex")
    out["import_s"] = round(time.monotonic() - t, 3)

    name = _dflex_env_name(str(ctx.options.get("env", "dflex_ant")))
    spec = DFLEX_ENVS[name]
    module_name = spec.class_path.split(":")[0]
    ctx.mark("kernel_build", module=module_name)
    t = time.monotonic()
    importlib.import_module(module_name)
    out["kernel_build_s"] = round(time.monotonic() - t, 3)
    out["kernel_build_note"] = (f"time to import {module_name}: dflex builds or loads its kernels there "
                                "(load_inline, and the driver's PTX JIT on a new architecture)")

    num_envs = int(ctx.options.get("num_envs", spec.num_envs))
    steps = int(ctx.options.get("steps", 100))
    ctx.mark("dflex.construct", env=name, num_envs=num_envs)
    t = time.monotonic()
    env = make_env(name, num_envs, device=device, seed=0)
    out.update({"env": name, "construct_s": round(time.monotonic() - t, 3)})
    out.update(step_env(ctx, "dflex", env, steps, torch))
    return {**out, "status": "pass"}


def summary(dflex: dict, bundled: dict) -> str:
    names = ", ".join(bundled) or "none"
    if dflex["status"] == "pass":
        head = f"dflex: pass ({dflex.get('env')}, {dflex.get('steps_per_s')} steps/s)"
    elif dflex["status"] == "skip":
        head = f"dflex: skipped ({dflex['reason']})"
    else:
        head = f"dflex: FAIL ({dflex['reason']})"
    return f"{head}; bundled envs: pass ({names})"


def run(ctx: StageContext) -> dict:
    import torch

    if ctx.device == "cuda" and not torch.cuda.is_available():
        raise ctx.skip("no CUDA (torch.cuda.is_available() is False); use --device cpu")
    device = ctx.torch_device
    # dflex first: a stale lock or a stuck import is the field's failure, and its marks
    # must be the last ones if it stalls.
    try:
        dflex = dflex_part(ctx, torch, device)
    except Exception as exc:  # the bundled envs still run; the stage fails at the end
        log.warning("dflex part failed: %s", exc)
        dflex = {"status": "fail", "reason": f"{type(exc).__name__}: {exc}"}
    bundled = bundled_envs(ctx, torch, device)
    data = {"device": device, "dflex": dflex, "bundled": bundled, "summary": summary(dflex, bundled)}
    if dflex["status"] == "fail":
        failed = SimFailed(data["summary"])
        failed.data = data  # recorded with the failure (gpuprobe.child.stage keeps an exception's data)
        raise failed
    return data
