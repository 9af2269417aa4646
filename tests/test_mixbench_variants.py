"""mixbench's sweep variants: the prefix mixture (uniform as published, or natural) and which fidelity
results an arm's headroom is read from."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import make_domain_set


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from mixbench.__main__ import _variant  # noqa: E402
from mixbench.fidelity import FidelityPlan, prefix_mixture  # noqa: E402
from mixbench.quality import ARMS, fidelity_variant  # noqa: E402

from hf_datamix.strategies.base import DecisionContext  # noqa: E402


def test_the_prefix_mixture_and_its_own_store():
    domains = make_domain_set()
    counts = dict(zip(domains.names, (600, 300, 100)))
    context = DecisionContext(step=0, max_steps=10, stage=0, domains=domains, token_counts=counts)
    uniform, natural = FidelityPlan("five"), FidelityPlan("five", prefix="natural")
    assert [prefix_mixture(uniform, context)[n] for n in domains.names] == pytest.approx([1 / 3] * 3)
    assert [prefix_mixture(natural, context)[n] for n in domains.names] == pytest.approx([0.6, 0.3, 0.1])
    # The published prefix keeps the settings the stored units were measured with; natural is its own store.
    assert "prefix" not in uniform.settings() and natural.settings()["prefix"] == "natural"
    with pytest.raises(ValueError, match="prefix='zipf'"):
        FidelityPlan("five", prefix="zipf")

    class Opts:
        command, planned, prefix = "fidelity", True, "natural"

    assert _variant(Opts) == "fidelity_planned_natural"


def test_an_arm_reads_the_headroom_of_the_sweep_trained_as_it_trains():
    assert fidelity_variant(ARMS["op_mix"]) == "mixbench_fidelity_planned"  # caps planned: the library default
    assert fidelity_variant(ARMS["op_mix_natural"]) == "mixbench_fidelity_planned_natural"
    assert fidelity_variant({"settings": {}, "plan_caps": False}) == "mixbench_fidelity"
