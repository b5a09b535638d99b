"""Stage ``buffer``: the trainer's replay Buffer at staged capacities, one mark per step.

For each capacity (default 1e3, 1e4, 1e5, then the configured one, 1e6) with PWM's Ant
sizes (obs 37, act 8, H=16, B=256), marks ``buffer.cap<N>.<step>`` (each with
``capacity``):
  ``start``             before the constructor
  ``construct``         the Buffer's own event (lazy: no allocation yet)
  ``mem_get_info.start`` / ``mem_get_info``  the free-memory query (cudaMemGetInfo)
  ``storage_decision``  device, bytes, free memory and the reason (PWM's 2.5x rule)
  ``simulated_storage_decision``  with ``--free-memory-gb`` on a machine without CUDA: the
                        decision a CUDA device with that much free memory would get
                        (computed only; no device allocation is made)
  ``alloc.start`` / ``alloc``  the full-capacity allocation
  ``fill``              progress done/total rows added (complete episodes, as the trainer does)
  ``first_sample.start`` / ``first_sample``  the first sample (prefetch threads start here)
  ``sample``            progress done/total of K samples
The marks come from the Buffer's ``progress`` callback, so the probe runs exactly the
trainer's code; see gpuprobe/probes/_buffer_impl.py for ``--buffer-impl`` (another Buffer).

Options (``--set buffer.KEY=VALUE``; ``gpuprobe run`` flags in brackets): ``capacity`` (1e6),
``capacities`` (staged ones below it, [1e3, 1e4, 1e5]), ``obs_dim`` 37, ``act_dim`` 8,
``horizon`` 16, ``batch_size`` 256, ``episode_length`` 1000, ``num_envs`` 128 (episodes per
add), ``fill`` (fraction of capacity to fill, 1.0), ``samples`` K (50), ``budget_s`` per
capacity (120), ``bisect`` [--bisect], ``bisect_steps`` (4), ``impl`` [--buffer-impl],
``storage`` auto|cuda|cpu [--storage], ``pin_memory`` [--pin-memory], ``prefetch``
[--prefetch], ``free_memory_gb`` [--free-memory-gb] (GB = 1e9 bytes).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from typing import Any

from gpuprobe.child.stage import StageContext
from gpuprobe.probes import _buffer_impl

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1_000_000
DEFAULT_STAGED = (1_000, 10_000, 100_000)
NO_DEVICE_ALLOCATION = "computed from the forced free-memory figure; no device allocation was made"


class BufferOverBudget(RuntimeError):
    """The configured capacity did not complete within its budget (data: every capacity)."""


def cap_tag(capacity: int) -> str:
    """1000 -> 'cap1e3', 250000 -> 'cap2.5e5', 1234 -> 'cap1234': short and glob-friendly."""
    exp = int(math.floor(math.log10(capacity))) if capacity > 0 else 0
    mant = capacity / 10**exp
    if exp >= 3 and abs(mant - round(mant, 1)) < 1e-9:
        text = f"{round(mant, 1):g}"
        return f"cap{text}e{exp}"
    return f"cap{capacity}"


class CapacityRun:
    """One capacity: build, fill, sample; marks through the Buffer's progress callback."""

    def __init__(self, ctx: StageContext, impl: _buffer_impl.BufferImpl, capacity: int, opts: dict,
                 torch: Any, device: str, emulation: Any = None):
        self.ctx, self.impl, self.capacity, self.o, self.torch, self.device = ctx, impl, capacity, opts, torch, device
        self.emulation = emulation     # _emulate.Emulation: the foreign code sees an emulated GPU
        self.tag = cap_tag(capacity)
        self.budget = float(opts["budget_s"])
        self.fill_total = 0
        self.fill_done = 0
        self.samples_total = int(opts["samples"])
        self.times: dict[str, float] = {}
        self.record: dict = {"capacity": capacity, "completed": False, "over_budget": False}

    # -- marks ----------------------------------------------------------------------------
    def on_event(self, event: str, data: dict) -> None:
        """The Buffer's progress callback: every event becomes a mark under this capacity."""
        self.times[event] = time.monotonic()
        name = f"{self.tag}.{event}"
        payload = {**data, "capacity": self.capacity}
        if event == "fill":
            self.ctx.progress(name, self.fill_done, self.fill_total, **payload)
        elif event == "sample":
            self.ctx.progress(name, data.get("n"), self.samples_total, capacity=self.capacity)
        elif event == "storage_decision":
            self.record["storage_decision"] = dict(data)
            self.ctx.mark(name, **payload, compute_device=self.device,
                          simulated=self.o.get("free_memory_bytes") is not None)
        else:
            if event == "mem_get_info":
                self.record["mem_get_info"] = dict(data)
            self.ctx.mark(name, **payload)

    def over(self, started: float, step: str) -> bool:
        if time.monotonic() - started <= self.budget:
            return False
        self.record.update(over_budget=True, over_budget_at=step)
        self.ctx.mark(f"{self.tag}.over_budget", capacity=self.capacity, step=step, budget_s=self.budget)
        return True

    # -- the run --------------------------------------------------------------------------
    def kwargs(self) -> dict:
        o = self.o
        # under emulation the Buffer is told what it is told on the GPU node: compute on cuda:0
        device = "cuda:0" if self.emulation is not None else self.device
        return {"capacity": self.capacity, "obs_dim": o["obs_dim"], "act_dim": o["act_dim"], "horizon": o["horizon"],
                "batch_size": o["batch_size"], "device": device, "storage": o["storage"],
                "pin_memory": o["pin_memory"], "prefetch": o["prefetch"], "progress": self.on_event,
                "free_memory_bytes": o.get("free_memory_bytes"), "seed": 0}

    def run(self) -> dict:
        started = time.monotonic()
        kwargs, left_out = self.impl.split_kwargs(self.kwargs())
        self.record["kwargs_left_out"] = left_out
        self.ctx.mark(f"{self.tag}.start", capacity=self.capacity, impl=self.impl.spec)
        buf = self.impl.cls(**kwargs)
        if not self.impl.has_progress:
            self.on_event("construct", {})
        self.record["construct_s"] = round(time.monotonic() - started, 4)
        self.simulated_decision(buf)
        try:
            if self.fill(buf, started) and self.sample(buf, started):
                self.record["completed"] = True
        finally:
            close = getattr(buf, "close", None)
            if callable(close):
                close()
        self.record["seconds"] = round(time.monotonic() - started, 3)
        if self.emulation is not None and "emulation" in self.record:  # pinning happens at sample time
            self.record["emulation"] = self.emulation.record.to_dict()
            self.record["storage_decision"]["pin_requests"] = self.emulation.record.pin_requests
        decision = getattr(buf, "decision", None)
        if decision is not None and "storage_decision" not in self.record:
            self.record["storage_decision"] = decision.to_dict()
        return self.record

    def simulated_decision(self, buf: Any) -> None:
        """--free-memory-gb without CUDA: what PWM's rule says for a CUDA device with that much free."""
        forced = self.o.get("free_memory_bytes")
        if forced is None or self.device != "cpu" or not hasattr(buf, "storage_bytes") or self.emulation is not None:
            return
        from gpuprobe_pwm.buffer import decide_storage

        decision = decide_storage(self.o["storage"], "cuda:0", buf.storage_bytes(), free_bytes=forced,
                                  pin_memory=self.o["pin_memory"], cuda_available=True).to_dict()
        decision.update(simulated=True, note=NO_DEVICE_ALLOCATION)
        self.record["simulated_storage_decision"] = decision
        self.ctx.mark(f"{self.tag}.simulated_storage_decision",
                      **{**decision, "capacity": self.capacity, "compute_device": "cuda:0"})

    def emulated_decision(self) -> None:
        """The storage decision as the foreign Buffer made it, read from its own first allocation."""
        rec = self.emulation.record
        decision = rec.storage_decision() or {"device": None, "note": "no allocation of 1 MiB or more seen"}
        decision.update(simulated=True, emulated_gpu=rec.gpu["name"], mem_get_info_calls=len(rec.mem_get_info_calls),
                        pin_requests=rec.pin_requests)
        self.record["storage_decision"] = decision
        self.record["emulation"] = rec.to_dict()
        self.ctx.mark(f"{self.tag}.storage_decision", **{**decision, "capacity": self.capacity,
                                                           "compute_device": "cuda:0"})

    def episodes(self) -> tuple[Any, Any, Any]:
        """One block of N complete episodes, reused for every add (the content does not matter)."""
        o, torch = self.o, self.torch
        steps = max(o["horizon"], min(int(o["episode_length"]), self.capacity // 4 - 1))
        n = max(1, min(int(o["num_envs"]), self.capacity // (steps + 1)))
        gen = torch.Generator().manual_seed(self.capacity)
        obs = torch.randn(steps + 1, n, o["obs_dim"], generator=gen).to(self.device)
        act = torch.rand(steps, n, o["act_dim"], generator=gen).to(self.device) * 2 - 1
        rew = torch.randn(steps, n, generator=gen).to(self.device)
        self.record.update(episode_steps=steps, episodes_per_add=n)
        return obs, act, rew

    def fill(self, buf: Any, started: float) -> bool:
        obs, act, rew = self.episodes()
        rows = obs.shape[0] * obs.shape[1]
        self.fill_total = max(rows, int(self.capacity * float(self.o["fill"])))
        t = time.monotonic()
        while self.fill_done < self.fill_total:
            first = self.fill_done == 0
            self.fill_done = min(self.fill_total, self.fill_done + rows)  # what the fill mark reports
            buf.add(obs, act, rew)
            if first and self.emulation is not None:
                self.emulated_decision()
            if not self.impl.has_progress:
                self.on_event("fill", {})
            if self.fill_done < self.fill_total and self.over(started, "fill"):
                return False
        self.record["fill_s"] = round(time.monotonic() - t, 4)
        if "alloc.start" in self.times and "alloc" in self.times:
            self.record["alloc_s"] = round(self.times["alloc"] - self.times["alloc.start"], 4)
        return not self.over(started, "fill")

    def sample(self, buf: Any, started: float) -> bool:
        self.ctx.mark(f"{self.tag}.first_sample.start", capacity=self.capacity, prefetch=self.o["prefetch"])
        t = time.monotonic()
        buf.sample()
        self.record["first_sample_s"] = round(time.monotonic() - t, 4)
        if not self.impl.has_progress:
            self.on_event("first_sample", {})
            self.on_event("sample", {"n": 1})
        t = time.monotonic()
        done = 0
        for i in range(2, self.samples_total + 1):
            buf.sample()
            done += 1
            if not self.impl.has_progress:
                self.on_event("sample", {"n": i})
            if i < self.samples_total and self.over(started, "sample"):
                break
        elapsed = time.monotonic() - t
        self.record.update(samples=done + 1, ms_per_sample=round(1000 * elapsed / done, 3) if done else None)
        return done + 1 >= self.samples_total and not self.over(started, "sample")


def options(ctx: StageContext) -> dict:
    o = ctx.options
    capacity = int(float(o.get("capacity", DEFAULT_CAPACITY)))
    staged = o.get("capacities", list(DEFAULT_STAGED))
    staged = [staged] if isinstance(staged, (int, float, str)) else list(staged)
    storage = str(o.get("storage", "auto"))
    if storage not in ("auto", "cuda", "cpu"):
        raise ValueError(f"buffer storage must be auto, cuda or cpu, got {storage!r} (--set buffer.storage / --storage)")
    free_gb = o.get("free_memory_gb")
    return {
        "capacities": sorted({int(float(c)) for c in staged if int(float(c)) < capacity} | {capacity}),
        "capacity": capacity, "obs_dim": int(o.get("obs_dim", 37)), "act_dim": int(o.get("act_dim", 8)),
        "horizon": int(o.get("horizon", 16)), "batch_size": int(o.get("batch_size", 256)),
        "episode_length": int(o.get("episode_length", 1000)), "num_envs": int(o.get("num_envs", 128)),
        "fill": float(o.get("fill", 1.0)), "samples": max(1, int(o.get("samples", 50))),
        "budget_s": float(o.get("budget_s", 120)), "bisect": bool(o.get("bisect", False)),
        "bisect_steps": int(o.get("bisect_steps", 4)), "impl": o.get("impl"), "storage": storage,
        "pin_memory": bool(o.get("pin_memory", False)), "prefetch": int(o.get("prefetch", 0)),
        "free_memory_gb": None if free_gb is None else float(free_gb),
        "emulate_gpu": o.get("emulate_gpu"),
        "free_memory_bytes": None if free_gb is None else int(float(free_gb) * 1e9),
    }


def bisect(run_one: Any, ok: int | None, bad: int, steps: int, smallest: int) -> list[int]:
    """Geometric bisection between the largest capacity in budget and the first one over it.

    With nothing in budget it steps down by 10x, not below ``smallest`` (a few slices).
    """
    tried = []
    lo = ok or 0
    for _ in range(steps):
        mid = int(math.sqrt(max(lo, 1) * bad)) if lo else bad // 10
        mid = int(float(f"{mid:.2g}"))  # round numbers read better in marks and tables
        if mid < smallest or mid <= lo or mid >= bad or bad / max(mid, 1) < 1.1:
            break
        tried.append(mid)
        if run_one(mid):
            lo = mid
        else:
            bad = mid
    return tried


def run(ctx: StageContext) -> dict:
    import torch

    o = options(ctx)
    if ctx.device == "cuda" and not torch.cuda.is_available():
        raise ctx.skip("no CUDA (torch.cuda.is_available() is False); use --device cpu")
    if o["storage"] == "cuda" and not torch.cuda.is_available():
        raise ctx.skip(f"--storage cuda needs CUDA, and torch.cuda.is_available() is False here "
                       f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                       "use --storage auto|cpu, or --free-memory-gb to simulate the decision")
    impl = _buffer_impl.load(o["impl"])
    device = ctx.torch_device
    results: list[dict] = []
    emulated = _emulation(o, impl)

    def run_one(capacity: int) -> bool:
        emulation = None
        if emulated is not None:
            from gpuprobe.probes import _emulate

            emulation = _emulate.Emulation(emulated, o["free_memory_gb"])
        if emulation is None:
            record = CapacityRun(ctx, impl, capacity, o, torch, device).run()
        else:
            with emulation:
                record = CapacityRun(ctx, impl, capacity, o, torch, device, emulation).run()
        results.append(record)
        gc.collect()  # free this capacity's storage before the next one allocates
        return record["completed"]

    last_ok: int | None = None
    first_over: int | None = None
    for capacity in o["capacities"]:
        if not run_one(capacity):
            first_over = capacity
            break
        last_ok = capacity
    data: dict = {
        "impl": impl.spec, "device": device, "capacities": results,
        "config": {k: v for k, v in o.items() if k not in ("free_memory_bytes",)},
        "free_memory": ({"forced_gb": o["free_memory_gb"], "simulated": True,
                         "note": NO_DEVICE_ALLOCATION if device == "cpu" else "Buffer given free_memory_bytes"}
                        if o["free_memory_gb"] is not None else None),
        "not_attempted": [c for c in o["capacities"] if c not in {r["capacity"] for r in results}],
    }
    if emulated is not None:  # the runner records such a stage as simulated
        data["emulation"] = {"gpu": emulated.name, "free_memory_gb": o["free_memory_gb"], "style": impl.style}
    if o["bisect"]:
        tried = ([] if first_over is None
                 else bisect(run_one, last_ok, first_over, o["bisect_steps"], 4 * (o["horizon"] + 1)))
        ok = [r["capacity"] for r in results if r["completed"]]
        bad = [r["capacity"] for r in results if not r["completed"]]
        data["bisect"] = {"largest_in_budget": max(ok) if ok else None,
                          "smallest_over_budget": min(bad) if bad else None,
                          "tried": tried, "budget_s": o["budget_s"]}
        largest = data["bisect"]["largest_in_budget"]
        data["summary"] = (f"largest capacity within {o['budget_s']:g} s: {largest}"
                           + (f" (over budget at {min(bad)})" if bad else " (every capacity tried fits)"))
        return data
    if first_over is not None:
        record = results[-1]
        failed = BufferOverBudget(
            f"capacity {first_over} did not complete within its budget of {o['budget_s']:g} s "
            f"(stopped in {record.get('over_budget_at')}); larger capacities not attempted: "
            f"{data['not_attempted'] or 'none'}")
        failed.data = data
        raise failed
    data["summary"] = pass_summary(results)
    return data


def _emulation(o: dict, impl: _buffer_impl.BufferImpl) -> Any:
    """The GPU the foreign Buffer should see: --emulate-gpu MODEL, or --free-memory-gb for a
    TD-MPC2/PWM-style Buffer (which asks torch.cuda.mem_get_info itself); None: no emulation."""
    if o.get("emulate_gpu") is None and not (impl.style == "episode" and o["free_memory_gb"] is not None):
        return None
    from gpuprobe.probes import _emulate

    return _emulate.model(o.get("emulate_gpu"), o["free_memory_gb"])


def pass_summary(results: list[dict]) -> str:
    last = results[-1]
    decision = last.get("simulated_storage_decision") or last.get("storage_decision") or {}
    where = str(decision.get("device", "?")) + (" (simulated decision)" if decision.get("simulated") else "")
    return (f"capacities {', '.join(str(r['capacity']) for r in results)} within budget; "
            f"storage at {last['capacity']}: {where}; {last.get('ms_per_sample')} ms/sample")
