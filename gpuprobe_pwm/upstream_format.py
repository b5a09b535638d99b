"""Upstream PWM's checkpoint layout (imgeorgiev/PWM aa5a1d8) against gpuprobe_pwm.models': state-dict key
names, network sizes and Adam states, both ways. Pure data conversion; gpuprobe_pwm.upstream
loads and writes the files.
"""
from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from gpuprobe_pwm.models import ModelConfig, upstream_layout
from gpuprobe_pwm.safe_load import CheckpointError

WM_NETS = ("encoder", "dynamics", "reward")
# The pickle of a checkpoint (tensors are separate records) is kilobytes; refuse to scan a huge one.
_MAX_PICKLE_BYTES = 64 << 20


class UpstreamCheckpointError(CheckpointError):
    """An upstream-format file this package cannot turn into networks (one-line message)."""


# ---- state-dict key names: upstream <-> gpuprobe_pwm.models ----------------------------------------

def _indices(sd: dict[str, Any], pattern: str) -> list[int]:
    return sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(pattern, k)))


def wm_from_upstream(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """_encoder.i.weight / _encoder.i.ln.weight -> encoder.i.0.weight / encoder.i.1.weight
    (NormedLinear = our Linear, LayerNorm, act block); a plain last Linear keeps its index."""
    if any(k.startswith("_task_emb") for k in sd):
        raise UpstreamCheckpointError("a multitask world model (task embedding): only single-task ones load")
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"_(encoder|dynamics|reward)\.(\d+)\.(ln\.)?(weight|bias)", key)
        if m is None:
            raise UpstreamCheckpointError(f"unexpected world-model key {key!r}")
        net, i, ln, param = m.groups()
        normed = f"_{net}.{i}.ln.weight" in sd
        out[f"{net}.{i}.{1 if ln else 0}.{param}" if normed else f"{net}.{i}.{param}"] = value
    return out


def wm_to_upstream(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"(encoder|dynamics|reward)\.(\d+)\.(?:([01])\.)?(weight|bias)", key)
        if m is None:
            raise ValueError(f"unexpected world-model key {key!r}")
        net, i, sub, param = m.groups()
        out[f"_{net}.{i}.ln.{param}" if sub == "1" else f"_{net}.{i}.{param}"] = value
    return out


def actor_from_upstream(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mu_net is Linear, Mish, LayerNorm per hidden layer (indices 3k, 3k+1, 3k+2), then Linear at
    3n; ours is mu.k.{0: Linear, 2: LayerNorm} and mu.n."""
    last = max(_indices(sd, r"mu_net\.(\d+)\.weight"), default=-1)
    out = {}
    for key, value in sd.items():
        if key == "logstd":
            out[key] = value
            continue
        m = re.fullmatch(r"mu_net\.(\d+)\.(weight|bias)", key)
        if m is None or int(m.group(1)) % 3 == 1:
            raise UpstreamCheckpointError(f"unexpected actor key {key!r}")
        i, param = int(m.group(1)), m.group(2)
        out[f"mu.{i // 3}.{param}" if i == last else f"mu.{i // 3}.{i % 3}.{param}"] = value
    return out


def actor_to_upstream(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if key == "logstd":
            out[key] = value
            continue
        m = re.fullmatch(r"mu\.(\d+)\.(?:([02])\.)?(weight|bias)", key)
        if m is None:
            raise ValueError(f"unexpected actor key {key!r} (not the upstream layout?)")
        k, sub, param = int(m.group(1)), m.group(2), m.group(3)
        out[f"mu_net.{3 * k + int(sub or 0)}.{param}"] = value
    return out


def critic_head_names(n_params: int) -> list[str]:
    """Our names of one critic head's parameters, in upstream's CriticMLP.parameters() order
    (the order upstream's Ensemble stacks them in as params.0..N)."""
    hidden = (n_params - 2) // 4
    names = [f"{k}.{sub}.{p}" for k in range(hidden) for sub in (0, 2) for p in ("weight", "bias")]
    return names + [f"{hidden}.weight", f"{hidden}.bias"]


def critic_from_upstream(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(sd)
    if set(sd) != {f"params.{j}" for j in range(n)} or n < 2 or (n - 2) % 4:
        raise UpstreamCheckpointError(f"unexpected critic keys {sorted(sd)[:4]}...")
    names = critic_head_names(n)
    heads = sd["params.0"].shape[0]
    return {f"heads.{h}.{names[j]}": sd[f"params.{j}"][h].clone() for h in range(heads) for j in range(n)}


def critic_to_upstream(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    heads = 1 + max(int(k.split(".")[1]) for k in sd)
    names = critic_head_names(len(sd) // heads)
    return {f"params.{j}": torch.stack([sd[f"heads.{h}.{name}"] for h in range(heads)])
            for j, name in enumerate(names)}


# ---- sizes ---------------------------------------------------------------------------------------

def _linear_dims(sd: dict[str, torch.Tensor], prefix: str) -> list[tuple[int, int]]:
    """(in, out) of each Linear under `prefix` (2-D weights; LayerNorms have 1-D ones), in order."""
    pattern = re.escape(prefix) + r"(\d+)\.weight"
    return [(sd[f"{prefix}{i}.weight"].shape[1], sd[f"{prefix}{i}.weight"].shape[0])
            for i in _indices(sd, pattern) if sd[f"{prefix}{i}.weight"].dim() == 2]


def model_config_from_upstream(ckpt: dict[str, Any], simnorm_group: int = 8, reward_vmin: float = -10.0,
                               reward_vmax: float = 10.0) -> tuple[ModelConfig, int, int]:
    """The ModelConfig (upstream layout), obs_dim and act_dim the checkpoint's networks have.
    SimNorm's group and the two-hot support are not stored: upstream's configs all use 8 and
    [-10, 10]. A one-output reward head is read as upstream's num_bins empty (a plain regression)."""
    wm, actor, critic = ckpt["world_model"], ckpt["actor"], ckpt["critic"]
    dims = {net: _linear_dims(wm, f"_{net}.") for net in WM_NETS}
    actor_dims = _linear_dims(actor, "mu_net.")
    n_critic = len(critic)
    critic_dims = [tuple(critic[f"params.{4 * k}"].shape[1:][::-1]) for k in range((n_critic - 2) // 4)]
    if not all(dims.values()) or not actor_dims:
        raise UpstreamCheckpointError("the world model or actor has no Linear layers")
    obs_dim, latent = dims["encoder"][0][0], dims["encoder"][-1][1]
    act_dim = dims["dynamics"][0][0] - latent
    bins = dims["reward"][-1][1]
    cfg = upstream_layout(ModelConfig(
        latent_dim=latent, encoder_dims=[o for _, o in dims["encoder"][:-1]],
        dynamics_dims=[o for _, o in dims["dynamics"][:-1]], reward_dims=[o for _, o in dims["reward"][:-1]],
        simnorm_group=simnorm_group, actor_dims=[o for _, o in actor_dims[:-1]],
        critic_dims=[o for _, o in critic_dims], num_critics=int(critic["params.0"].shape[0]),
        reward_bins=0 if bins == 1 else bins, reward_vmin=reward_vmin, reward_vmax=reward_vmax))
    if actor_dims[-1][1] != act_dim or actor_dims[0][0] != latent:
        raise UpstreamCheckpointError(f"the actor maps {actor_dims[0][0]} -> {actor_dims[-1][1]}, the world model "
                                      f"has latent {latent} and {act_dim} actions")
    return cfg, obs_dim, act_dim


# ---- optimiser states ------------------------------------------------------------------------------
# Each upstream parameter index j is one "slot": the names of our parameters it holds, and for the
# critic the ensemble member (upstream stacks the critics' parameters along dim 0).
Slot = list[tuple[str, int | None]]


def slots_for(kind: str, upstream_sd: dict[str, torch.Tensor]) -> list[Slot]:
    if kind == "critic":
        names, heads = critic_head_names(len(upstream_sd)), int(upstream_sd["params.0"].shape[0])
        return [[(f"heads.{h}.{name}", h) for h in range(heads)] for name in names]
    convert = actor_from_upstream if kind == "actor" else wm_from_upstream
    return [[(ours, None)] for ours in convert(dict(upstream_sd))]  # same order as upstream's keys


def _clone(value: Any, head: int | None = None) -> Any:
    if not torch.is_tensor(value):
        return value
    return (value[head] if head is not None and value.dim() > 0 else value).detach().clone()


def _hyper(opt_state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opt_state["param_groups"][0].items() if k != "params"}


def optimizer_from_upstream(opt_state: dict[str, Any], slots: list[Slot], our_names: list[str]) -> dict[str, Any]:
    """An upstream Adam state dict -> one over our parameters (in `our_names` order), one group."""
    index = {name: i for i, name in enumerate(our_names)}
    n_upstream = sum(len(g["params"]) for g in opt_state["param_groups"])
    if n_upstream != len(slots):
        raise UpstreamCheckpointError(f"optimiser state covers {n_upstream} parameters, the network has {len(slots)}")
    state = {index[name]: {k: _clone(v, head) for k, v in per.items()}
             for j, per in opt_state["state"].items() for name, head in slots[int(j)]}
    return {"state": state, "param_groups": [{**_hyper(opt_state), "params": list(range(len(our_names)))}]}


def optimizer_to_upstream(opt_state: dict[str, Any], slots: list[Slot], our_names: list[str],
                          group_sizes: list[int]) -> dict[str, Any]:
    """Ours (parameters in `our_names` order) -> upstream's, in groups of `group_sizes`."""
    index = {name: i for i, name in enumerate(our_names)}
    state = {}
    for j, slot in enumerate(slots):
        parts = [opt_state["state"].get(index[name]) for name, _ in slot]
        if any(p is None for p in parts):
            continue  # never stepped: upstream's Adam starts it fresh, as ours would
        if slot[0][1] is None:
            state[j] = {k: _clone(v) for k, v in parts[0].items()}
        else:
            state[j] = {k: torch.stack([p[k] for p in parts]) if torch.is_tensor(v) and v.dim() > 0 else _clone(v)
                        for k, v in parts[0].items()}
    groups, start = [], 0
    for size in group_sizes:
        groups.append({**_hyper(opt_state), "params": list(range(start, start + size))})
        start += size
    return {"state": state, "param_groups": groups}


# ---- recognising the format ---------------------------------------------------------------------------

def is_upstream_checkpoint(path: str | Path) -> bool:
    """Whether `path` looks like a file PWM.save wrote (its world model's keys start with
    `_encoder.`), read from the pickle's instructions without running any of them."""
    if not Path(path).is_file():  # a FIFO or device would block the open
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return False
            if archive.getinfo(name).file_size > _MAX_PICKLE_BYTES:
                return False
            data = archive.read(name)
        for _, arg, _ in pickletools.genops(data):
            # A world-model key, or the RunningMeanStd class (a GLOBAL's argument is "module name").
            if isinstance(arg, str) and arg.startswith(("_encoder.", "pwm.utils.running_mean_std ")):
                return True
    except (OSError, zipfile.BadZipFile, ValueError, pickle.PickleError, EOFError, KeyError):
        return False  # unreadable or not a pickle: not upstream's, and the loader will say why
    return False
