"""gpuprobe_pwm.buffer.Buffer: the sampling contract, the storage rule, persistence and prefetch (CPU only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpuprobe_pwm.buffer import STORAGE_FACTOR, Buffer, StorageUnavailable, decide_storage

OBS, ACT = 5, 3


def episodes(ids: list[int], steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N episodes whose data encode (episode id, t): obs[t,n] = (id, t, ...), act/rew likewise."""
    n = len(ids)
    ep = torch.tensor(ids, dtype=torch.float32).view(1, n)
    t_obs = torch.arange(steps + 1, dtype=torch.float32).view(-1, 1).expand(steps + 1, n)
    obs = torch.zeros(steps + 1, n, OBS)
    obs[..., 0], obs[..., 1] = ep.expand_as(t_obs), t_obs
    act = torch.zeros(steps, n, ACT)
    act[..., 0], act[..., 1] = ep.expand(steps, n), t_obs[:-1]
    rew = ep * 1000.0 + t_obs[:-1]
    return obs, act, rew


def check_slices(obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor) -> set[int]:
    """Assert every column is H+1 consecutive steps of one episode; return the episode ids seen."""
    ep, t = obs[..., 0], obs[..., 1]
    assert torch.equal(ep, ep[:1].expand_as(ep)), "a slice crosses an episode boundary"
    assert torch.equal(t[1:] - t[:-1], torch.ones_like(t[1:])), "a slice is not consecutive"
    assert torch.equal(act[..., 0], ep[:-1]) and torch.equal(act[..., 1], t[:-1])
    assert torch.equal(rew[..., 0], ep[:-1] * 1000.0 + t[:-1])
    return {int(e) for e in ep[0]}


def test_shapes_dtypes_and_sizes() -> None:
    buf = Buffer(capacity=1000, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=32, seed=0)
    buf.add(*episodes([0, 1, 2], steps=20))
    obs, act, rew = buf.sample()
    assert obs.shape == (5, 32, OBS) and act.shape == (4, 32, ACT) and rew.shape == (4, 32, 1)
    assert obs.dtype == act.dtype == rew.dtype == torch.float32
    assert obs.device == torch.device("cpu")
    # Views of one fresh block, never of the storage: writing to a sample leaves the buffer alone.
    assert obs.data_ptr() != buf._data.data_ptr()
    before = buf._data.clone()
    obs.fill_(-1.0), act.fill_(-1.0), rew.fill_(-1.0)
    assert torch.equal(buf._data.nan_to_num(), before.nan_to_num())
    assert len(buf) == 3 * 21 and buf.num_episodes == 3
    assert buf.sample(batch_size=7)[0].shape == (5, 7, OBS)


def test_unbatched_add() -> None:
    buf = Buffer(capacity=100, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=8, seed=0)
    obs, act, rew = episodes([7], steps=10)
    buf.add(obs[:, 0], act[:, 0], rew[:, 0])
    assert buf.num_episodes == 1 and len(buf) == 11
    assert check_slices(*buf.sample()) == {7}


def test_slices_never_cross_episode_boundaries() -> None:
    buf = Buffer(capacity=997, obs_dim=OBS, act_dim=ACT, horizon=6, batch_size=256, seed=1)
    next_id = 0
    for steps in (6, 9, 40, 13, 7, 100, 25):  # varied lengths, incl. exactly H steps (one slice)
        buf.add(*episodes([next_id, next_id + 1], steps))
        next_id += 2
    seen: set[int] = set()
    for _ in range(20):
        seen |= check_slices(*buf.sample())
    assert seen == set(range(next_id))


def test_slice_starts_are_uniform_over_valid_starts() -> None:
    # Episode 0 has 1 valid start, episode 1 has 31: sampling is uniform over slices.
    buf = Buffer(capacity=200, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=4096, seed=2)
    buf.add(*episodes([0], steps=4))
    buf.add(*episodes([1], steps=34))
    obs, _, _ = buf.sample()
    share = float((obs[0, :, 0] == 0).float().mean())
    assert 0.01 < share < 0.06  # expected 1/32


def test_ring_overwrite_drops_whole_oldest_episodes() -> None:
    # 20 rows per episode, capacity 90: the 5th episode wraps around the end of the ring.
    buf = Buffer(capacity=90, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=512, seed=3)
    for i in range(4):
        buf.add(*episodes([i], steps=19))
    assert len(buf) == 80
    buf.add(*episodes([4], steps=19))  # rows 80..89 then 0..9: overwrites episode 0 only
    assert buf.num_episodes == 4 and len(buf) == 80
    seen: set[int] = set()
    starts_of_4: set[int] = set()
    for _ in range(5):
        obs, act, rew = buf.sample()
        seen |= check_slices(obs, act, rew)
        starts_of_4 |= {int(t) for t in obs[0, obs[0, :, 0] == 4, 1]}
    assert seen == {1, 2, 3, 4}
    assert starts_of_4 == set(range(16))  # incl. the slices that run across the ring's end
    buf.add(*episodes([5, 6], steps=19))
    seen = set()
    for _ in range(5):
        seen |= check_slices(*buf.sample())
    assert seen == {3, 4, 5, 6}


def test_window_gather_matches_row_by_row_reference() -> None:
    # Slices are gathered as overlapping windows of H+1 rows (several chunks at this B); each
    # must equal the rows read one by one, modulo the ring, incl. windows that reach the ghost rows.
    buf = Buffer(capacity=90, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=3000, seed=10)
    for i in range(5):  # the 5th episode wraps around the ring's end
        buf.add(*episodes([i], steps=19))
    obs, act, rew = buf.sample()
    ring = buf._data[: buf.capacity]
    for b in range(obs.shape[1]):
        ep, t0 = int(obs[0, b, 0]), int(obs[0, b, 1])
        start = next(s for s, _ in buf._episodes if int(ring[s, 0]) == ep) + t0
        rows = ring[(torch.arange(buf.horizon + 1) + start) % buf.capacity]
        assert torch.equal(obs[:, b], rows[:, :OBS])
        assert torch.equal(act[:, b], rows[:-1, OBS : OBS + ACT])
        assert torch.equal(rew[:, b, 0], rows[:-1, -1])


def test_oversized_batch_keeps_the_newest_episodes() -> None:
    buf = Buffer(capacity=50, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=256, seed=4)
    buf.add(*episodes(list(range(10)), steps=9))  # 100 rows into 50
    assert buf.num_episodes == 5
    assert check_slices(*buf.sample()) == {5, 6, 7, 8, 9}


def test_short_episodes_are_skipped_and_empty_buffer_refuses_to_sample() -> None:
    buf = Buffer(capacity=100, obs_dim=OBS, act_dim=ACT, horizon=8, batch_size=4)
    with pytest.raises(RuntimeError, match="add"):
        buf.sample()
    buf.add(*episodes([0], steps=5))  # shorter than the horizon: no slice fits
    assert buf.skipped_episodes == 1 and len(buf) == 0
    with pytest.raises(ValueError):
        buf.add(torch.zeros(6, 1, OBS), torch.zeros(5, 1, ACT + 1), torch.zeros(5, 1))


def test_same_seed_same_samples() -> None:
    def draw(seed: int) -> torch.Tensor:
        buf = Buffer(capacity=500, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=64, seed=seed)
        buf.add(*episodes([0, 1, 2, 3], steps=50))
        return buf.sample()[0]

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


# -- the storage rule ---------------------------------------------------------------------

PWM_CAPACITY, PWM_OBS, PWM_ACT = 1_000_000, 37, 8  # dflex Ant, pwm_5M


def test_storage_bytes_counts_float32_rows_and_the_episode_table() -> None:
    buf = Buffer(PWM_CAPACITY, PWM_OBS, PWM_ACT, horizon=16)
    rows = PWM_CAPACITY * 4 * (PWM_OBS + PWM_ACT + 1)
    assert rows <= buf.storage_bytes() <= rows * 1.01
    assert buf.decision is None  # lazy: nothing decided before the first add


@pytest.mark.parametrize("free_gib", [48, 141])
def test_auto_storage_uses_the_numbers(free_gib: int) -> None:
    """48 GB (L40S) vs 141 GB (H200) free: the decision is exactly PWM's rule on our bytes."""
    need = Buffer(PWM_CAPACITY, PWM_OBS, PWM_ACT).storage_bytes()
    free = free_gib * 1024**3
    d = decide_storage("auto", "cuda:0", need, free_bytes=free, cuda_available=True)
    expected = "cuda:0" if STORAGE_FACTOR * need < free else "cpu"
    assert d.device == expected
    assert d.bytes_needed == need and d.free_bytes == free and d.factor == 2.5
    assert "PWM's rule" in d.reason and f"{free / 1024**3:.2f} GiB" in d.reason


def test_auto_storage_threshold_is_strict() -> None:
    need = 10**9
    at = decide_storage("auto", "cuda:1", need, free_bytes=int(2.5 * need), cuda_available=True)
    above = decide_storage("auto", "cuda:1", need, free_bytes=int(2.5 * need) + 1, cuda_available=True)
    assert at.device == "cpu" and ">=" in at.reason
    assert above.device == "cuda:1"


def test_buffer_falls_back_to_host_when_free_memory_is_short() -> None:
    """The L40S-like path through the Buffer itself: CUDA compute device, too little free memory."""
    buf = Buffer(1000, OBS, ACT, horizon=4, device="cuda:0", free_memory_bytes=1000)
    buf.add(*episodes([0], steps=10))  # host storage: allocation works without a GPU
    assert buf.decision is not None and buf.decision.device == "cpu"
    assert buf.decision.free_bytes == 1000 and buf.storage_device == torch.device("cpu")


def test_cpu_device_means_host_storage() -> None:
    buf = Buffer(100, OBS, ACT, horizon=4, free_memory_bytes=10**12)
    buf.add(*episodes([0], steps=10))
    assert buf.decision.device == "cpu" and "compute device is cpu" in buf.decision.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_storage_without_cuda_raises_at_first_add() -> None:
    buf = Buffer(100, OBS, ACT, horizon=4, storage="cuda")  # construction stays lazy
    with pytest.raises(StorageUnavailable, match="CUDA is not available"):
        buf.add(*episodes([0], steps=10))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pin_memory_without_cuda_is_recorded_not_faked() -> None:
    buf = Buffer(100, OBS, ACT, horizon=4, pin_memory=True)
    buf.add(*episodes([0], steps=10))
    assert buf.decision.pinned is False and "CUDA is not available" in buf.decision.reason


def test_progress_events_in_order() -> None:
    events: list[tuple[str, dict]] = []
    buf = Buffer(100, OBS, ACT, horizon=4, progress=lambda e, d: events.append((e, d)))
    assert [e for e, _ in events] == ["construct"]
    buf.add(*episodes([0], steps=10))
    buf.add(*episodes([1], steps=10))
    buf.sample()
    buf.sample()
    names = [e for e, _ in events]
    assert names == [
        "construct", "mem_get_info.start", "mem_get_info", "storage_decision",
        "alloc.start", "alloc", "fill", "fill", "first_sample", "sample", "sample",
    ]  # fmt: skip
    data = dict(events[1:])
    assert set(data["mem_get_info"]) >= {"free_bytes", "total_bytes"}
    assert data["storage_decision"] == buf.decision.to_dict()
    assert data["alloc"]["bytes"] == buf.storage_bytes() and data["alloc"]["device"] == "cpu"
    assert events[7][1] == {"steps": 22, "capacity": 100}
    assert events[-1][1] == {"n": 2}


# -- persistence and prefetch ---------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    buf = Buffer(200, OBS, ACT, horizon=4, batch_size=64, seed=7)
    buf.add(*episodes([0, 1, 2], steps=30))
    path = tmp_path / "final_policy.buffer"
    buf.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["final_policy.buffer"]  # no temp file left
    loaded = Buffer.load(path, seed=7)
    assert (loaded.capacity, loaded.obs_dim, loaded.act_dim, loaded.horizon) == (200, OBS, ACT, 4)
    assert len(loaded) == len(buf) and loaded.num_episodes == buf.num_episodes
    for a, b in zip(buf.sample(), loaded.sample()):  # same layout and seed: same batch
        assert torch.equal(a, b)


def test_save_load_after_wraparound_keeps_the_live_episodes(tmp_path: Path) -> None:
    buf = Buffer(90, OBS, ACT, horizon=4, batch_size=512, seed=8)
    for i in range(6):
        buf.add(*episodes([i], steps=19))
    buf.save(tmp_path / "b.buffer")
    loaded = Buffer.load(tmp_path / "b.buffer")
    assert check_slices(*loaded.sample()) == {2, 3, 4, 5}
    smaller = Buffer.load(tmp_path / "b.buffer", capacity=45)  # keeps the newest that fit
    assert check_slices(*smaller.sample()) == {4, 5}


def test_prefetch_returns_valid_samples_and_close_stops_threads() -> None:
    buf = Buffer(500, OBS, ACT, horizon=4, batch_size=32, prefetch=3, seed=9)
    buf.add(*episodes([0, 1, 2, 3], steps=40))
    assert buf.prefetch_threads_alive == 0  # started by the first sample, not before
    seen: set[int] = set()
    for _ in range(30):
        obs, act, rew = buf.sample()
        assert obs.shape == (5, 32, OBS)
        seen |= check_slices(obs, act, rew)
    assert seen == {0, 1, 2, 3}
    assert buf.prefetch_threads_alive == 3
    buf.close()
    assert buf.prefetch_threads_alive == 0
    buf.close()  # idempotent


def test_state_dict_refills_an_empty_buffer_and_refuses_a_full_or_mismatched_one() -> None:
    src = Buffer(capacity=200, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=16, seed=0)
    for i in range(4):
        src.add(*episodes([i], steps=19))
    state = src.state_dict()
    dst = Buffer(capacity=50, obs_dim=OBS, act_dim=ACT, horizon=4, batch_size=16, seed=1)
    dst.load_state_dict(state)  # 2 of the 4 episodes of 20 rows fit: the newest two
    assert len(dst) == 40 and dst.num_episodes == 2
    assert check_slices(*dst.sample()) <= {2, 3}
    with pytest.raises(RuntimeError, match="empty buffer"):
        dst.load_state_dict(state)
    with pytest.raises(ValueError, match="obs"):
        Buffer(capacity=200, obs_dim=OBS + 1, act_dim=ACT, horizon=4).load_state_dict(state)
