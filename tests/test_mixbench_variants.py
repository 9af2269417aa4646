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
from mixbench.quality import ARMS  # noqa: E402
from mixbench.quality_report import fidelity_variant  # noqa: E402

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


def test_quality_adopts_the_unplanned_baselines_units_the_baselines_store_holds(tmp_path):
    from mixbench.baselines import BaselinePlan
    from mixbench.common import SHAPES
    from mixbench.quality import QualityPlan, adopt_baselines
    from mixbench.runner import Store

    tiny = SHAPES["tiny"]
    baselines = BaselinePlan("five", seeds=(0, 1), shape=tiny)
    baselines_path = str(tmp_path / "baselines-five-tiny.json")
    stored = Store(baselines_path, baselines.settings())
    stored.units = {key: {"test_mean": 2.0 + i, "seed": int(key[-1])} for i, key in enumerate(baselines.unit_keys())}
    tokens = {"python_stdlib": 4096, "man_de": 2048}
    stored.calls = [{"command": "mixbench baselines", "commit": "abc"}]
    stored.save()
    plan = QualityPlan("five", seeds=(0, 1, 2), shape=tiny, arms=("natural", "natural_unplanned", "uniform_unplanned"))
    unverified = Store(str(tmp_path / "q0.json"), plan.settings(), extensible=plan.extensible)
    assert adopt_baselines(plan, unverified, baselines_path) == 0  # no record of the data they trained on
    stored.calls = [{"command": "mixbench baselines", "commit": "abc", "training_tokens": tokens}]
    stored.save()
    other_data = Store(str(tmp_path / "q1.json"), plan.settings(), extensible=plan.extensible)
    other_data.calls = [{"command": "mixbench quality", "training_tokens": {**tokens, "man_de": 1024}}]
    assert adopt_baselines(plan, other_data, baselines_path) == 0  # a set staged again, with other data
    assert not other_data.units

    store = Store(str(tmp_path / "quality-five-tiny.json"), plan.settings(), extensible=plan.extensible)
    assert adopt_baselines(plan, store, baselines_path) == 4  # 2 arms x seeds 0, 1 (no seed 2 there)
    assert sorted(store.units) == [
        "natural_unplanned/0",
        "natural_unplanned/1",
        "uniform_unplanned/0",
        "uniform_unplanned/1",
    ]
    assert store.units["natural_unplanned/1"]["test_mean"] == stored.units["natural/1"]["test_mean"]
    assert store.units["natural_unplanned/1"]["adopted_from"] == "baselines-five-tiny.json"
    assert store.calls == stored.calls  # the call that measured them
    assert adopt_baselines(plan, store, baselines_path) == 0  # nothing twice

    # Other settings are other units: a planned arm, another shape, another set.
    planned_only = QualityPlan("five", seeds=(0, 1), shape=tiny, arms=("natural", "uniform"))
    fresh = Store(str(tmp_path / "q2.json"), planned_only.settings(), extensible=planned_only.extensible)
    assert adopt_baselines(planned_only, fresh, baselines_path) == 0
    gpu = QualityPlan("five", seeds=(0, 1), arms=("natural_unplanned",))
    assert adopt_baselines(gpu, Store(str(tmp_path / "q3.json"), gpu.settings()), baselines_path) == 0
    even = QualityPlan("even", seeds=(0, 1), shape=tiny, arms=("natural_unplanned",))
    assert adopt_baselines(even, Store(str(tmp_path / "q4.json"), even.settings()), baselines_path) == 0


def test_the_60m_check_trains_the_60m_preset_on_the_gpu_runs_tokens(tmp_path):
    from mixbench.__main__ import main
    from mixbench.common import SHAPES
    from mixbench.quality import QualityPlan
    from mixbench.runner import store_name

    big, base = SHAPES["60m"], SHAPES["gpu"]
    assert big.preset == "60m" and big.tokens_per_step * big.steps == base.tokens_per_step * base.steps
    plan = QualityPlan("skewed", seeds=(0, 1), shape=big, arms=("natural", "uniform", "op_mix_design"))
    assert plan.settings()["shape"]["preset"] == "60m"
    # its own store: nothing measured at 20M is read as a 60M unit
    assert store_name("quality", "skewed", "60m") == "quality-skewed-60m.json"
    args = [
        "quality",
        "--set",
        "skewed",
        "--shape",
        "60m",
        "--arms",
        "natural,uniform,op_mix_design",
        "--seeds",
        "0,1",
    ]
    assert main([*args, "--dry-run", "--store", str(tmp_path / "quality-skewed-60m.json")]) == 0
