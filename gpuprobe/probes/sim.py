"""Stage ``sim``: the simulator's env step, dflex when importable, and the bundled torch envs.

dflex part (when ``find_spec('dflex')`` finds it), each step with its own mark:
  ``lock_check``     dflex's kernel cache and build lock, from the file system alone: where the
                     kernels live (network file system? writable?), when and for what they were
                     built (build.ninja: torch, compiler, flags, CUDA), the ``lock`` (age, holders)
                     and locks in torch's extensions folder
  ``check_source``   ``import dflex`` with the kernel build refused: a valid cache imports
                     (timed: the cached import); otherwise nothing is built or locked, and the
                     source dflex would build says why the cache is not valid here
  ``wait_for_build`` another live process holds the lock: wait while watching it (progress
                     marks); if it dies, the lock is stale
  ``kernel_build``   the cold build (timed), compiler output kept; not reached with a stale
                     lock (it would wait forever), an unwritable kernels folder or no compiler
  ``<env>.construct`` / ``<env>.reset`` / ``<env>.step`` for each dflex env the trainer has a
                     config for, built with that config's (upstream's) arguments; steps/s
The bundled torch envs always run on the same device (marks ``<env>.construct``,
``<env>.reset``, ``<env>.step``), so the stage says something useful without dflex.

Options (``--set sim.KEY=VALUE``): ``dflex_envs`` (list, default every dflex env; ``env=Ant`` picks
one), ``num_envs`` (dflex envs each, default 16), ``steps`` (dflex steps, default 20), ``envs``
(bundled envs, default all), ``bundled_num_envs`` (64), ``bundled_steps`` (200), ``dflex``
(false: skip the dflex part), ``import_despite_lock`` (true: import even past a stale lock, to
reproduce the stall under the watchdog), ``build_wait_s`` (bound on waiting for another
process's build; default: as long as it lives), ``dflex_cuda_arch`` (``sm_90``: build the CUDA
kernels for that architecture instead of dflex's compute_50 PTX).
"""

from __future__ import annotations

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


def _dflex_env_names(options: dict) -> list[str]:
    from gpuprobe_pwm.envs import DFLEX_ENVS

    if options.get("env"):
        return [_dflex_env_name(str(options["env"]))]
    names = options.get("dflex_envs") or list(DFLEX_ENVS)
    return [_dflex_env_name(n) for n in ([names] if isinstance(names, str) else names)]


def _failure(out: dict, kind: str, reason: str, **extra: Any) -> dict:
    return {**out, **extra, "status": "fail", "failure": kind, "reason": reason}


def dflex_envs(ctx: StageContext, torch: Any, device: str, out: dict) -> dict:
    """Construct, reset and step each dflex env through the trainer's adapter."""
    from gpuprobe_pwm.envs import EnvUnavailable, dflex_kernels, make_env
    from gpuprobe_pwm.envs.dflex_adapter import config_options

    num_envs = int(ctx.options.get("num_envs", 16))
    steps = int(ctx.options.get("steps", 20))
    envs: dict = {}
    out["envs"] = envs
    for name in _dflex_env_names(ctx.options):
        ctx.mark(f"{name}.construct", num_envs=num_envs)
        t = time.monotonic()
        try:
            env = make_env(name, num_envs, device=device, seed=0, stochastic_init=True, options=config_options(name))
        except (EnvUnavailable, AttributeError, TypeError) as exc:
            known = dflex_kernels.explain(exc.__cause__ or exc)
            error = {"type": type(exc.__cause__ or exc).__name__, "message": str(exc.__cause__ or exc)[:2000]}
            envs[name] = {"status": "fail", "error": error}
            if known:
                return _failure(out, known[0], known[1], error=error)
            return _failure(out, "env-construct", f"{name}: {type(exc).__name__}: {exc}", error=error)
        envs[name] = {"status": "pass", "num_envs": num_envs, "construct_s": round(time.monotonic() - t, 3),
                      **step_env(ctx, name, env, steps, torch)}
    return {**out, "status": "pass"}


def dflex_part(ctx: StageContext, torch: Any, device: str) -> dict:
    """The dflex half of the stage: a dict with ``status`` pass | skip | fail and its reason."""
    from gpuprobe.probes import _dflex_lock as locks
    from gpuprobe_pwm.envs import dflex_kernels, dflex_status

    if ctx.options.get("dflex") is False:
        return {"status": "skip", "reason": "dflex part turned off (--set sim.dflex=false)"}
    installed, detail = dflex_status()
    if not installed:
        return {"status": "skip", "reason": f"not installed: {detail}"}
    package = dflex_kernels.package_dir()
    ctx.mark("lock_check", package=str(package))
    cache = dflex_kernels.inspect_cache(package)
    out: dict = {"version": detail, "package_dir": str(package), "kernel_cache": cache, "lock": cache["lock"],
                 "compiler": dflex_kernels.compiler(), "warnings": [],
                 # torch's own extensions folder can hold stale locks of other builds (context)
                 "torch_extension_locks": [lk.to_dict() for lk in locks.find_locks(None)]}

    def phase(name: str, data: dict) -> None:
        if name == "build" and data.get("stale_lock"):
            ctx.mark("import_dflex", stale_locks=[data["lock"]], **data)  # the rule reads stale_locks
        ctx.mark("kernel_build" if name == "build" else name, **data)

    def waiting(state: dict) -> None:
        ctx.progress("wait_for_build.waiting", state["age_s"], None, holders=[h["pid"] for h in state["holders"]])

    wait_s = ctx.options.get("build_wait_s")
    try:
        report = dflex_kernels.import_dflex(allow_lock=bool(ctx.options.get("import_despite_lock")),
                                            wait_s=float(wait_s) if wait_s is not None else None,
                                            on_wait=waiting, on_phase=phase,
                                            cuda_arch=ctx.options.get("dflex_cuda_arch"))
    except dflex_kernels.DflexKernelError as exc:
        details = exc.details
        return _failure(out, exc.kind, str(exc), cache_valid=False, match=details.get("match"),
                        lock=details.get("lock", out["lock"]), build_log_tail=details.get("build_log_tail"),
                        build_log=details.get("build_log"))
    except ImportError as exc:
        known = dflex_kernels.explain(exc)
        error = {"type": type(exc).__name__, "message": str(exc)[:2000], "module": getattr(exc, "name", None)}
        if known:
            return _failure(out, known[0], known[1], error=error)
        return _failure(out, "import", f"import dflex: {type(exc).__name__}: {exc}", error=error)
    except AttributeError as exc:  # numpy 2 names, if a dflex version uses them at import time
        known = dflex_kernels.explain(exc)
        if known is None:
            raise
        return _failure(out, known[0], known[1], error={"type": type(exc).__name__, "message": str(exc)[:2000]})
    out.update({
        "cache_valid": report.cached, "import_s": round(report.import_s, 3),
        "kernel_build_s": round(report.build_s, 3) if report.build_s is not None else None,
        "waited_for_build_s": report.waited_for_build_s, "rebuilt_because": report.rebuilt_because,
        "kernel_cache": report.cache, "match": report.match, "lock": report.cache["lock"],
        "build_log_tail": report.build_log_tail,
    })
    out["warnings"] += report.warnings
    if not report.match.get("matches", True):
        out["warnings"].append("cached kernels do not match this node: " + "; ".join(report.match["reasons"]))
    if cache["filesystem"].get("network"):
        out["warnings"].append(
            f"dflex's kernels are in {cache['kernels_dir']} on a network file system ({cache['filesystem']['fs_type']}), "
            "shared by every node that imports this install: nodes with and without CUDA rebuild over each "
            "other's cache, and cold jobs started together wait for one build (a killed one leaves a stale lock)")
    return dflex_envs(ctx, torch, device, out)


def summary(dflex: dict, bundled: dict) -> str:
    names = ", ".join(bundled) or "none"
    if dflex["status"] == "pass":
        rates = ", ".join(f"{n} {e.get('steps_per_s')} steps/s" for n, e in (dflex.get("envs") or {}).items())
        build = "cached kernels" if dflex.get("cache_valid") else f"kernels built in {dflex.get('kernel_build_s')} s"
        warn = f"; {len(dflex['warnings'])} warning(s): {dflex['warnings'][0]}" if dflex.get("warnings") else ""
        head = f"dflex {dflex.get('version')}: pass ({build}; {rates}){warn}"
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
