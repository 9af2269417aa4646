"""Interleaver: weights, determinism, workers, weight changes behind the horizon, repetition caps."""

from __future__ import annotations

import time

import numpy as np
import pytest
from torch.utils.data import DataLoader

from hf_datamix import Interleaver, Mixture
from hf_datamix.data.interleaver import DomainsExhausted
from hf_datamix.data.packing import PackedBlocks


def blocks(domain_id: int, num_blocks: int, block_size: int = 8) -> PackedBlocks:
    # Token value encodes (domain, block index) so tests can read the sequence back from samples.
    data = np.zeros((num_blocks, block_size), dtype=np.int32)
    data[:, 0] = domain_id
    data[:, 1] = np.arange(num_blocks)
    return PackedBlocks(f"d{domain_id}", data)


def sources(sizes=(50, 80, 120)):
    return {f"d{i}": blocks(i, n) for i, n in enumerate(sizes)}


def keys(samples) -> list[tuple[int, int]]:
    return [(int(s["input_ids"][0]), int(s["input_ids"][1])) for s in samples]


def take(iterable, n):
    out = []
    for item in iterable:
        out.append(item)
        if len(out) == n:
            break
    return out


def test_draws_follow_weights_and_are_reproducible():
    mixture = Mixture({"d0": 0.2, "d1": 0.3, "d2": 0.5})
    a = Interleaver(sources((5000, 5000, 5000)), mixture, seed=3)
    b = Interleaver(sources((5000, 5000, 5000)), mixture, seed=3)
    seq = keys(take(a, 4000))
    assert seq == keys(take(b, 4000))
    counts = np.bincount([d for d, _ in seq], minlength=3) / len(seq)
    np.testing.assert_allclose(counts, [0.2, 0.3, 0.5], atol=0.03)
    c = Interleaver(sources((5000, 5000, 5000)), mixture, seed=4)
    assert keys(take(c, 200)) != seq[:200]


def test_each_domain_is_visited_in_a_permutation_before_repeating():
    inter = Interleaver(sources((10, 10, 10)), Mixture.uniform(["d0", "d1", "d2"]), seed=0)
    seq = keys(take(inter, 30))
    for d in range(3):
        visited = [b for dom, b in seq if dom == d]
        first_epoch = visited[:10]
        assert len(set(first_epoch)) == len(first_epoch)


def test_domain_sequence_matches_iteration_and_sample():
    inter = Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]), seed=1)
    seq = keys(take(inter, 40))
    assert [(int(n[1:]), b) for n, b in inter.domain_sequence(0, 40)] == seq
    assert keys([inter.sample(17)]) == [seq[17]]


def test_weight_change_applies_exactly_from_its_sample():
    inter = Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]), seed=0)
    inter.set_weights(Mixture({"d0": 0, "d1": 0, "d2": 1}), from_sample=25)
    seq = keys(take(inter, 60))
    assert all(d == 2 for d, _ in seq[25:])
    assert any(d != 2 for d, _ in seq[:25])
    assert inter.weights_at(24)["d2"] == pytest.approx(1 / 3)
    assert inter.weights_at(25)["d2"] == 1.0


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_deliver_the_same_sequence_as_the_main_process(workers):
    mixture = Mixture({"d0": 0.5, "d1": 0.25, "d2": 0.25})
    reference = Interleaver(sources(), mixture, seed=5)
    expected = keys(take(reference, 48))
    inter = Interleaver(sources(), mixture, seed=5)
    inter.chunk_size = 4
    loader = DataLoader(inter, batch_size=4, num_workers=workers)
    got = []
    for batch in loader:
        got += [(int(r[0]), int(r[1])) for r in batch["input_ids"]]
        if len(got) >= 48:
            break
    assert got[:48] == expected


def test_workers_wait_at_the_horizon_for_a_weight_change():
    """Workers prefetch, but never past the decision point: a change made later still applies exactly."""
    inter = Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]), seed=0)
    inter.chunk_size = 4
    inter.set_horizon(16)
    loader = DataLoader(inter, batch_size=4, num_workers=2, prefetch_factor=4)
    iterator = iter(loader)
    first = [next(iterator) for _ in range(4)]  # samples 0..15, all before the horizon
    time.sleep(0.5)  # give the workers time to prefetch (they must stop at sample 16)
    inter.set_weights(Mixture({"d0": 1, "d1": 0, "d2": 0}), from_sample=16)
    inter.set_horizon(None)
    rest = [next(iterator) for _ in range(4)]
    before = [int(r[0]) for b in first for r in b["input_ids"]]
    after = [int(r[0]) for b in rest for r in b["input_ids"]]
    assert set(after) == {0}
    assert set(before) != {0}


def test_main_process_past_the_horizon_is_an_error():
    inter = Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]), seed=0)
    inter.set_horizon(3)
    with pytest.raises(RuntimeError, match="decision"):
        take(inter, 5)


def test_repetition_cap_redistributes_and_logs(caplog):
    inter = Interleaver(sources((5, 400, 400)), Mixture({"d0": 0.8, "d1": 0.1, "d2": 0.1}), seed=0, max_repetitions=2)
    with caplog.at_level("WARNING"):
        seq = keys(take(inter, 200))
    d0 = [b for d, b in seq if d == 0]
    assert len(d0) == 10  # 2 epochs of 5 blocks, then never again
    assert sorted(d0) == sorted(list(range(5)) * 2)
    assert "ran dry" in caplog.text and "'d0'" in caplog.text
    events = inter.exhaustion_events(200)
    assert [e.domain for e in events] == ["d0"]
    assert events[0].epochs == pytest.approx(2.0)
    # after the cap the remaining weight is spread over d1 and d2 in proportion
    tail = [d for d, _ in seq[100:]]
    assert set(tail) <= {1, 2}


def test_repetition_cap_stop_and_error_modes():
    mix = Mixture({"d0": 0.9, "d1": 0.1})
    src = {"d0": blocks(0, 3), "d1": blocks(1, 300)}
    stopped = take(Interleaver(src, mix, seed=0, max_repetitions=1, on_exhausted="stop"), 100)
    assert 3 <= len(stopped) < 100
    with pytest.raises(DomainsExhausted, match="d0"):
        take(Interleaver(src, mix, seed=0, max_repetitions=1, on_exhausted="error"), 100)


def test_all_domains_dry_ends_the_stream():
    src = {"d0": blocks(0, 3), "d1": blocks(1, 2)}
    got = take(Interleaver(src, Mixture.uniform(["d0", "d1"]), seed=0, max_repetitions=1), 100)
    assert len(got) == 5


@pytest.mark.parametrize("chunk", [1, 2, 4, 7])
def test_stream_that_runs_dry_between_chunks_ends_cleanly(chunk):
    # Regression: with whole chunks, the end of the sequence could fall between two chunks; asking to
    # plan the next one from a simulation already at the end raised instead of ending the stream.
    src = {"d0": blocks(0, 9), "d1": blocks(1, 7)}
    inter = Interleaver(src, Mixture.uniform(["d0", "d1"]), seed=0, max_repetitions=1)
    inter.chunk_size = chunk
    got = take(inter, 100)
    assert len(got) == (16 // chunk) * chunk  # whole chunks only: a partial last batch is dropped
    assert len(set(keys(got))) == len(got)


def test_segments_per_block_mixes_domains_only_when_asked():
    src = sources((100, 100, 100))
    pure = take(Interleaver(src, Mixture.uniform(list(src)), seed=0), 20)
    for sample in pure:
        assert len(sample["input_ids"]) == 8
    mixed = take(Interleaver(src, Mixture.uniform(list(src)), seed=0, segments_per_block=2), 50)
    assert len(mixed[0]["input_ids"]) == 16
    halves = [(int(s["input_ids"][0]), int(s["input_ids"][8])) for s in mixed]
    assert any(a != b for a, b in halves)


def test_state_dict_round_trip_restores_the_schedule():
    inter = Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]), seed=2)
    inter.set_weights(Mixture({"d0": 0.7, "d1": 0.2, "d2": 0.1}), from_sample=10)
    state = inter.state_dict()
    other = Interleaver(sources(), Mixture({"d0": 1, "d1": 1, "d2": 1}), seed=99)
    other.load_state_dict(state)
    assert keys(take(other, 40)) == keys(take(inter, 40))
    other.start_sample = 20
    assert keys(take(other, 10)) == keys(take(inter, 30))[20:]
    with pytest.raises(ValueError, match="domains"):
        Interleaver({"x": blocks(0, 5)}, Mixture({"x": 1})).load_state_dict(state)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="do not match"):
        Interleaver(sources(), Mixture({"d0": 1.0}))
    with pytest.raises(ValueError, match="on_exhausted"):
        Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]), on_exhausted="panic")
    with pytest.raises(ValueError, match="max_repetitions"):
        Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]), max_repetitions={"zz": 1})
    with pytest.raises(ValueError, match="before the last"):
        inter = Interleaver(sources(), Mixture.uniform(["d0", "d1", "d2"]))
        inter.set_weights(Mixture.uniform(["d0", "d1", "d2"]), 10)
        inter.set_weights(Mixture.uniform(["d0", "d1", "d2"]), 5)


@pytest.mark.parametrize("action", ["redistribute", "stop"])
def test_exhaustion_events_do_not_depend_on_how_often_they_are_asked(action):
    src = {"d0": blocks(0, 7), "d1": blocks(1, 40), "d2": blocks(2, 400)}
    mix = Mixture({"d0": 0.5, "d1": 0.3, "d2": 0.2})
    once = Interleaver(src, mix, seed=3, max_repetitions=2, on_exhausted=action).exhaustion_events(300)
    stepwise = Interleaver(src, mix, seed=3, max_repetitions=2, on_exhausted=action)
    for upto in range(1, 301):
        events = stepwise.exhaustion_events(upto)
        assert all(event.sample <= upto for event in events)
    assert events == once and [e.domain for e in once][:1] == ["d0"]
    # The event's sample is exact: d0's last allowed block is the sample just before it.
    seq = keys(take(Interleaver(src, mix, seed=3, max_repetitions=2, on_exhausted=action), 300))
    last_d0 = max(i for i, (d, _) in enumerate(seq) if d == 0)
    assert once[0].sample == last_d0 + 1
    if action == "stop":
        assert len(seq) == once[0].sample  # the stream ends with the block that reached the cap


def test_uncapped_interleaver_never_simulates_for_exhaustion_events():
    inter = Interleaver({"d0": blocks(0, 3), "d1": blocks(1, 3)}, Mixture.uniform(["d0", "d1"]), seed=0)
    assert inter.exhaustion_events(10**9) == [] and inter._sim.sample == 0
