"""Proxy swarm: members trained through DataMixTrainer, scored per domain, resumable, split over processes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import make_domain_set

from hf_datamix import ComputeLedger, Mixture
from hf_datamix.simulate.proxy_swarm import ProxyConfig, ProxyRuns


CONFIG = ProxyConfig(steps=3, batch_size=2, eval_blocks=2, learning_rate=3e-3)
MIXTURES = [
    Mixture({"alpha": 1.0, "beta": 0.0, "gamma": 0.0}),
    Mixture({"alpha": 0.2, "beta": 0.4, "gamma": 0.4}),
    Mixture({"alpha": 0.0, "beta": 0.0, "gamma": 1.0}),
]


def make_swarm(path, tokenizer, ledger=None):
    from hf_datamix import DataMixArguments

    base = DataMixArguments(output_dir=str(path), block_size=32, use_cpu=True, report_to=[])
    return ProxyRuns(make_domain_set(), tokenizer, CONFIG, str(path), base_args=base, ledger=ledger)


def test_members_are_trained_scored_and_counted(tmp_path, tokenizer):
    ledger = ComputeLedger()
    result = make_swarm(tmp_path, tokenizer, ledger).run(MIXTURES)
    assert result.domains == result.targets == ["alpha", "beta", "gamma"]
    assert result.ratios.shape == (3, 3) and result.metrics.shape == (3, 3)
    np.testing.assert_allclose(result.ratios[1], [0.2, 0.4, 0.4])
    assert np.isfinite(result.metrics).all() and result.trained == 3
    # A proxy trained only on alpha is better on alpha than one trained only on gamma, and vice versa.
    assert result.metrics[0, 0] < result.metrics[2, 0] and result.metrics[2, 2] < result.metrics[0, 2]
    assert ledger.tokens_by_kind["proxy"] == 3 * CONFIG.steps * CONFIG.batch_size * 32
    saved = json.load(open(tmp_path / "member-0001" / "result.json"))
    assert saved["weights"] == pytest.approx({"alpha": 0.2, "beta": 0.4, "gamma": 0.4})
    assert not any(name.endswith(".png") for name in os.listdir(tmp_path / "member-0001"))  # no plot per member


def test_an_interrupted_swarm_never_trains_a_finished_member_twice(tmp_path, tokenizer, monkeypatch):
    swarm = make_swarm(tmp_path, tokenizer)
    first = swarm.run(MIXTURES[:2])
    calls = []
    original = ProxyRuns._train_member
    monkeypatch.setattr(ProxyRuns, "_train_member", lambda self, i, m: calls.append(i) or original(self, i, m))
    again = make_swarm(tmp_path, tokenizer).run(MIXTURES)
    assert calls == [2] and again.reused == 2 and again.trained == 1
    np.testing.assert_array_equal(again.metrics[:2], first.metrics)
    with pytest.raises(ValueError, match="another mixture"):
        make_swarm(tmp_path, tokenizer).run(MIXTURES[::-1])


def test_processes_split_members_and_gather(tmp_path, tokenizer, monkeypatch):
    trained = []
    original = ProxyRuns._train_member
    monkeypatch.setattr(ProxyRuns, "_train_member", lambda self, i, m: trained.append(i) or original(self, i, m))
    # Process 0 of 2 owns members 0 and 2 (trained here first); process 1 trains member 1 and gathers all.
    for index in (0, 2):
        make_swarm(tmp_path, tokenizer)._train_member(index, MIXTURES[index])
    trained.clear()
    result = make_swarm(tmp_path, tokenizer).run(MIXTURES, rank=1, world_size=2, poll_seconds=0.01)
    assert trained == [1] and result.metrics.shape == (3, 3)
    assert sorted(os.listdir(tmp_path)) == ["member-0000", "member-0001", "member-0002"]
