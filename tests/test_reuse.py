"""Mixture reuse: plans for add/remove/partition/revise, expansion, the virtual-domain cap, auto reopening."""

from __future__ import annotations

import numpy as np
import pytest

from hf_datamix import DomainSet, DomainSpec, Mixture
from hf_datamix.horizon import caps_for, virtual_cap
from hf_datamix.reuse import VIRTUAL, plan_reuse


def spec(name):
    return DomainSpec(name, train=f"/data/{name}.jsonl", eval=f"/data/{name}_eval.jsonl")


BASE = DomainSet([spec("a"), spec("b"), spec("c")])
PREVIOUS = Mixture({"a": 0.25, "b": 0.25, "c": 0.5})


def test_full_reuse_of_an_added_domain_matches_the_hand_worked_example():
    plan = plan_reuse(PREVIOUS, BASE.add(spec("new")), mode="full")
    assert plan.coordinates == [VIRTUAL, "new"] and plan.fixed == ["a", "b", "c"]
    full = plan.expand(Mixture({VIRTUAL: 0.4, "new": 0.6}))
    assert full.allclose({"a": 0.1, "b": 0.1, "c": 0.2, "new": 0.6}, atol=1e-12)


def test_virtual_domain_cap():
    tokens = {"a": 100, "b": 400, "c": 1000, "new": 50}
    # min_j k N_j / (R p~_j) = min(4*100/(1000*.25), 4*400/(1000*.25), 4*1000/(1000*.5)) = 1.6
    assert virtual_cap(PREVIOUS, tokens, 1000, 4) == pytest.approx(1.6)
    plan = plan_reuse(PREVIOUS, BASE.add(spec("new")))
    caps = caps_for(plan.coordinates, plan.groups, tokens, 1000, 4)
    np.testing.assert_allclose(caps, [1.0, 0.2])  # the virtual cap 1.6 is clipped to 1
    caps = caps_for(plan.coordinates, plan.groups, tokens, 4000, 4)
    np.testing.assert_allclose(caps, [0.4, 0.05])
    assert caps_for(plan.coordinates, plan.groups, tokens, 1000, None) is None
    assert caps_for(["a", "x"], {}, {"a": 10, "x": None}, 100, 2)[1] == 1.0  # unknown size: uncapped


def test_removal_needs_no_runs():
    plan = plan_reuse(PREVIOUS, BASE.remove("c"))
    assert plan.no_runs and plan.compute == []
    assert plan.internals.allclose({"a": 0.5, "b": 0.5})
    recompute = plan_reuse(PREVIOUS, BASE.remove("c"), mode="recompute")
    assert not recompute.no_runs and recompute.compute == ["a", "b"]


def test_partition_and_revise_recompute_only_affected_domains():
    parted = plan_reuse(PREVIOUS, BASE.partition("c", [spec("c:x"), spec("c:y")]))
    assert parted.compute == ["c:x", "c:y"] and parted.fixed == ["a", "b"]
    assert parted.internals.allclose({"a": 0.5, "b": 0.5})
    revised = plan_reuse(PREVIOUS, BASE.revise("b", spec("b")))
    assert revised.compute == ["b"] and revised.fixed == ["a", "c"]
    assert revised.expand(Mixture({VIRTUAL: 0.5, "b": 0.5})).allclose({"a": 0.5 / 3, "b": 0.5, "c": 1 / 3})


def test_partial_reuse_reopens_named_domains_and_rejects_affected_ones():
    plan = plan_reuse(PREVIOUS, BASE.add(spec("new")), mode="partial", reopen=["c"])
    assert plan.compute == ["c", "new"] and plan.fixed == ["a", "b"]
    assert plan.reasons == {"c": "chosen by the user"}
    with pytest.raises(ValueError, match="'new'"):
        plan_reuse(PREVIOUS, BASE.add(spec("new")), mode="partial", reopen=["new"])
    with pytest.raises(ValueError, match="reuse mode"):
        plan_reuse(PREVIOUS, BASE.add(spec("new")), mode="sometimes")


def test_recompute_reopens_everything():
    plan = plan_reuse(PREVIOUS, BASE.add(spec("new")), mode="recompute")
    assert plan.coordinates == ["a", "b", "c", "new"] and plan.fixed == []


class FakeLaw:
    def __init__(self, t):
        self.t = np.asarray(t, dtype=float)


def test_auto_reopens_domains_that_drive_the_revised_target():
    # Targets a, b, c (rows); coefficients over domains a, b, c (columns). Revising b: b's target
    # depends mostly on c, so c is reopened and a (a small share) is not.
    law = FakeLaw([[-2.0, 0.1, 0.1], [-0.1, -1.0, -3.0], [0.1, 0.1, -2.0]])
    plan = plan_reuse(PREVIOUS, BASE.revise("b", spec("b")), mode="auto", law=law, law_domains=["a", "b", "c"])
    assert plan.compute == ["b", "c"] and plan.fixed == ["a"]
    assert plan.reasons["reopened"] == ["c"]
    assert plan.reasons["sensitivity_share"]["c"] > 0.9
    without_law = plan_reuse(PREVIOUS, BASE.revise("b", spec("b")), mode="auto")
    assert without_law.fixed == ["a", "c"] and "no fitted" in without_law.reasons["note"]
