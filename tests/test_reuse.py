"""Mixture reuse: plans for add/remove/partition/revise, expansion, the virtual-domain cap, auto reopening."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_datamix import DomainSet, DomainSpec, Mixture
from hf_datamix.horizon import caps_for, virtual_cap
from hf_datamix.reuse import VIRTUAL, plan_reuse
from hf_datamix.simulate.base import Simulation
from hf_datamix.strategies.base import DecisionContext
from hf_datamix.strategies.registry import create_strategy


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


# A previous fit after a first reuse step: a and b inside the virtual domain, c, d and e its own
# coordinates; the law's rows are the five domains, its columns the four coordinates.
WIDE = DomainSet([spec(n) for n in "abcde"])
WIDE_PREVIOUS = Mixture({"a": 0.1, "b": 0.1, "c": 0.2, "d": 0.3, "e": 0.3})
WIDE_LAW = dict(
    law_domains=[VIRTUAL, "c", "d", "e"],
    law_targets=["a", "b", "c", "d", "e"],
    law_groups={VIRTUAL: {"a": 0.5, "b": 0.5}},
)
WIDE_T = [
    [-1.0, 0.0, 0.0, 0.0],
    [-0.1, -0.1, -3.0, -0.1],  # target b leans on d (row 1: where c's column index points)
    [-0.1, -1.0, -0.1, -3.0],  # target c leans on e
    [0.0, 0.0, -1.0, 0.0],
    [0.0, 0.0, 0.0, -1.0],
]


def test_auto_reads_the_target_rows_by_name_after_a_virtual_domain():
    # Revising c: c's own row (the third target) drives the choice, so e is reopened, not d.
    plan = plan_reuse(WIDE_PREVIOUS, WIDE.revise("c", spec("c")), mode="auto", law=FakeLaw(WIDE_T), **WIDE_LAW)
    assert plan.reasons["targets"] == ["c"] and plan.reasons["reopened"] == ["e"]
    assert plan.coordinates == [VIRTUAL, "c", "e"] and plan.fixed == ["a", "b", "d"]
    assert plan.internals.allclose({"a": 0.2, "b": 0.2, "d": 0.6})
    # An added domain had no target: every previous target counts, each named.
    added = plan_reuse(WIDE_PREVIOUS, WIDE.add(spec("new")), mode="auto", law=FakeLaw(WIDE_T), **WIDE_LAW)
    assert added.reasons["targets"] == ["a", "b", "c", "d", "e"]


# The previous fit: a and b inside the virtual domain (internal weights 1:3), c its own coordinate.
INNER_LAW = dict(law_domains=[VIRTUAL, "c"], law_targets=["a", "b", "c"], law_groups={VIRTUAL: {"a": 0.25, "b": 0.75}})
INNER_T = [[-2.0, -0.1], [-2.0, -0.1], [-1.0, -0.2]]
INNER_PREVIOUS = Mixture({"a": 0.1, "b": 0.3, "c": 0.6})


def assert_reopens_b_from_the_virtual_domain(plan):
    # |t| over all targets (a domain was added): virtual 5.0, c 0.4; the virtual domain's share goes
    # to a and b by internal weight (1.25, 3.75), so b holds 3.75 / 5.4 and is reopened.
    assert plan.reasons["sensitivity_share"] == pytest.approx({"b": 3.75 / 5.4, "a": 1.25 / 5.4, "c": 0.4 / 5.4})
    assert plan.reasons["reopened"] == ["b"]
    # b becomes its own coordinate; the virtual domain keeps a and c, renormalised from the previous mixture.
    assert plan.coordinates == [VIRTUAL, "b", "new"] and plan.fixed == ["a", "c"]
    assert plan.internals.allclose({"a": 0.1 / 0.7, "c": 0.6 / 0.7})
    full = plan.expand(Mixture({VIRTUAL: 0.5, "b": 0.2, "new": 0.3}))
    assert full.allclose({"a": 0.5 / 7, "b": 0.2, "c": 3 / 7, "new": 0.3})


def test_auto_reopens_a_domain_held_inside_the_virtual_domain():
    plan = plan_reuse(INNER_PREVIOUS, BASE.add(spec("new")), mode="auto", law=FakeLaw(INNER_T), **INNER_LAW)
    assert_reopens_b_from_the_virtual_domain(plan)


def reuse_context(previous, update, **extra):
    return DecisionContext(
        step=0,
        max_steps=3,
        stage=1,
        domains=update.domains,
        token_counts=dict.fromkeys(update.domains.names, 100),
        previous_mixture=previous,
        update=update,
        **extra,
    )


def law_state(t, law_domains, law_targets, law_groups):
    """olmix_reuse's state after a fit with log-linear coefficients ``t``."""
    law = {"name": "log_linear", "domains": len(law_domains), "targets": len(law_targets)}
    law["params"] = {"c": [0.0] * len(law_targets), "t": t}
    return {
        "proxy_runs": 7,
        "last_law": law,
        "last_domains": law_domains,
        "last_targets": law_targets,
        "last_internals": law_groups,
    }


def older_state(state):
    """``state`` as olmix_reuse saved it before it kept the law's targets and internals."""
    return {k: state[k] for k in ("proxy_runs", "last_law", "last_domains")}


def test_olmix_reuse_state_round_trips_the_law_targets_and_internals():
    saved = create_strategy("olmix_reuse", reuse="auto")
    saved.load_state_dict(law_state(INNER_T, **INNER_LAW))
    state = json.loads(json.dumps(saved.state_dict()))  # as datamix_state.json keeps it
    assert state["last_targets"] == ["a", "b", "c"] and state["last_internals"] == {VIRTUAL: {"a": 0.25, "b": 0.75}}
    resumed = create_strategy("olmix_reuse", reuse="auto")
    resumed.load_state_dict(state)
    assert resumed.state_dict() == saved.state_dict()
    assert_reopens_b_from_the_virtual_domain(resumed.plan(reuse_context(INNER_PREVIOUS, BASE.add(spec("new")))))
    # State saved before targets and internals were kept: without a virtual domain the coordinates
    # are the targets, as before; with one, auto declines instead of reading the wrong rows.
    resumed.load_state_dict(older_state(law_state(INNER_T, **INNER_LAW)))
    declined = resumed.plan(reuse_context(INNER_PREVIOUS, BASE.add(spec("new"))))
    assert declined.fixed == ["a", "b", "c"] and "not recorded" in declined.reasons["note"]
    flat = [[-2.0, 0.1, 0.1], [-0.1, -1.0, -3.0], [0.1, 0.1, -2.0]]  # test_auto_reopens_..._revised_target's
    resumed.load_state_dict(older_state(law_state(flat, ["a", "b", "c"], ["a", "b", "c"], {})))
    assert resumed.plan(reuse_context(PREVIOUS, BASE.revise("b", spec("b")))).reasons["reopened"] == ["c"]


class FixedSimulator:
    """Candidates over the plan's coordinates with made-up losses, scored on ``targets``."""

    supports_groups = True

    def __init__(self, targets):
        self.targets = targets

    def simulate(self, context, around, groups=None):
        names = context.domains.names
        grouped = {m for ratios in groups.values() for m in ratios}
        coordinates = list(groups) + [n for n in names if n not in grouped]
        X = np.random.default_rng(0).dirichlet(np.ones(len(coordinates)), size=8)
        Y = 2.0 + np.exp(-X @ np.linspace(1.0, 2.0, len(coordinates)))[:, None] * np.ones(len(self.targets))
        return Simulation(coordinates, dict(groups), list(names), X, Y, list(self.targets), {"proxy_runs": 8})


def test_olmix_reuse_keeps_the_law_rows_columns_and_internals_of_its_decision():
    strategy = create_strategy("olmix_reuse", reuse="full", prior="uniform", law_starts=3)
    targets = ["a", "b", "c", "new"]
    strategy.simulator = FixedSimulator(targets)
    decision = strategy.decide(reuse_context(PREVIOUS, BASE.add(spec("new"))))
    assert decision is not None
    assert strategy.last_domains == [VIRTUAL, "new"] and strategy.last_targets == targets
    assert Mixture(strategy.last_internals[VIRTUAL]).allclose(PREVIOUS)
    assert np.asarray(strategy.last_law["params"]["t"]).shape == (len(targets), 2)
