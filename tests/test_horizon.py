"""Repetition caps planned over the horizon: a capped domain is spread over the run instead of running dry."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from conftest import datamix_args, make_docs, tiny_llama

from hf_datamix import DataMixTrainer, DomainSet, DomainSpec, Mixture
from hf_datamix.horizon import caps_for, fit_to_horizon


def test_a_capped_weight_is_lowered_and_its_excess_shared_in_proportion():
    mixture = Mixture({"small": 0.5, "a": 0.3, "b": 0.2})
    planned, lowered = fit_to_horizon(mixture, {"small": 10, "a": None, "b": 1000}, horizon=100)
    assert planned["small"] == pytest.approx(0.1) and lowered == {"small": 0.5}
    assert planned["a"] / planned["b"] == pytest.approx(0.3 / 0.2)  # the excess follows the others' weights
    # A second domain capped by the redistribution is lowered too (water-filling).
    planned, lowered = fit_to_horizon(mixture, {"small": 10, "a": 35, "b": None}, horizon=100)
    np.testing.assert_allclose(planned.to_array(["small", "a", "b"]), [0.1, 0.35, 0.55])
    assert lowered == {"small": 0.5}  # a was raised by the excess, then held at its own cap: not lowered
    # Nothing to lower: the same mixture back.
    assert fit_to_horizon(mixture, {"small": 1000, "a": 1000, "b": 1000}, 100) == (mixture, {})
    # Caps summing to less than 1 over the mixture's domains: capped as far as possible, the rest stays.
    planned, _ = fit_to_horizon(Mixture({"small": 0.5, "a": 0.5, "b": 0.0}), {"small": 10, "a": 10, "b": None}, 100)
    assert planned["b"] == 0 and planned["small"] == pytest.approx(0.5)


def test_caps_count_what_was_already_drawn():
    tokens = {"a": 1000, "b": 1000}
    np.testing.assert_allclose(caps_for(["a", "b"], {}, tokens, 2000, 4.0), [1.0, 1.0])
    np.testing.assert_allclose(caps_for(["a", "b"], {}, tokens, 2000, 4.0, drawn={"a": 3500}), [0.25, 1.0])
    groups = {"v": {"a": 0.5, "b": 0.5}}
    np.testing.assert_allclose(caps_for(["v"], groups, tokens, 2000, 4.0, drawn={"a": 3500}), [0.5])


def _domains():
    def spec(name, docs):
        return DomainSpec(
            name,
            train=datasets.Dataset.from_dict({"text": make_docs(name, docs, seed=1)}),
            eval=datasets.Dataset.from_dict({"text": make_docs(name, 8, seed=2)}),
        )

    return DomainSet([spec("alpha", 80), spec("beta", 80), spec("gamma", 3)])  # gamma: a few blocks only


@pytest.mark.parametrize("plan", [True, False])
def test_uniform_spreads_a_small_domain_over_the_run_instead_of_running_it_dry(plan, tmp_path, tokenizer):
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        domains=_domains(),
        strategy="uniform",
        args=datamix_args(tmp_path, max_steps=40, max_repetitions=1.0, plan_caps=plan),
        processing_class=tokenizer,
    )
    trainer.train()
    history = json.load(open(tmp_path / "mixtures.json"))
    exhausted = [r for r in history if r["kind"] == "exhausted"]
    gamma = trainer.sources["gamma"].num_blocks
    horizon = 40 * trainer.samples_per_step
    if plan:
        initial = history[0]
        assert initial["capped_for_horizon"] == {"gamma": pytest.approx(1 / 3)}
        assert initial["weights"]["gamma"] == pytest.approx(gamma / horizon)
        assert trainer.interleaver.weights_at(horizon - 1)["gamma"] > 0  # still trained at the end
        assert trainer.interleaver.drawn(horizon)["gamma"] <= gamma
    else:
        assert exhausted and exhausted[0]["domain"] == "gamma"  # ran dry part-way (the behaviour before)
