"""olmix_reuse end to end on a tiny model: a swarm before training, reuse at a domain-set update."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import create_strategy
from hf_datamix.continual import plan_stages, run_continual
from hf_datamix.reuse import VIRTUAL


FAST = dict(swarm_size=5, proxy_steps=2, proxy_batch_size=2, proxy_eval_blocks=2, law_starts=10)


def test_full_reuse_resimulates_only_the_new_domain_and_the_virtual_one(tmp_path, tokenizer):
    strategy = create_strategy("olmix_reuse", **FAST)
    stages = plan_stages(make_domain_set(), ["alpha"], [["beta"], ["gamma"]], 3)
    args = datamix_args(tmp_path, max_steps=3, save_steps=3, max_eval_blocks=2)
    run_continual(tiny_llama(len(tokenizer)), tokenizer, args, stages, strategy, report=lambda t: None)
    history = json.load(open(tmp_path / "mixtures.json"))
    stage1, stage2 = [r for r in history if r["kind"] == "decision"]
    # The first stage has no previous mixture: the whole set is simulated (5 proxies over alpha, beta).
    assert stage1["reuse"]["mode"] == "recompute" and stage1["proxy_runs"] == 5
    X = np.array(stage1["candidates"])
    assert X.shape == (5, 2) and np.allclose(X.sum(axis=1), 1)
    assert stage2["reuse"]["mode"] == "full"
    assert stage2["collapsed_domains"] == [VIRTUAL, "gamma"]
    assert stage2["reuse"]["fixed"] == ["alpha", "beta"]
    previous = stage1["weights"]
    w = stage2["weights"]
    # the fixed domains keep their previous internal ratio
    assert w["alpha"] / w["beta"] == pytest.approx(previous["alpha"] / previous["beta"], rel=1e-6)
    assert strategy.proxy_runs == 10
    assert json.load(open(tmp_path / "compute.json"))["by_kind"]["proxy"] > 0


def test_removal_needs_no_proxy_runs(tmp_path, tokenizer):
    from hf_datamix.strategies.base import DecisionContext

    domains = make_domain_set()
    update = domains.remove("gamma")
    strategy = create_strategy("olmix_reuse", **FAST)
    from hf_datamix import Mixture

    context = DecisionContext(
        step=0,
        max_steps=3,
        stage=2,
        domains=update.domains,
        token_counts={"alpha": 1, "beta": 1},
        previous_mixture=Mixture({"alpha": 0.2, "beta": 0.3, "gamma": 0.5}),
        update=update,
    )
    decision = strategy.decide(context)
    assert decision.mixture.allclose({"alpha": 0.4, "beta": 0.6})
    assert decision.details["proxy_runs"] == 0 and strategy.proxy_runs == 0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="reuse='sometimes'"):
        create_strategy("olmix_reuse", reuse="sometimes")
