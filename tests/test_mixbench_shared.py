"""mixbench quality: arms that differ only in how a decision's simulation becomes a mixture share one warm-up and one
simulation, and each arm's record is the one its own run gives (tiny shape, CPU)."""

from __future__ import annotations

import json
import os
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mixbench import quality, quality_report  # noqa: E402
from mixbench.common import SHAPES  # noqa: E402
from mixbench.quality import QualityPlan  # noqa: E402
from mixbench.runner import Budget, WorkerFile, pending_units  # noqa: E402
from mixbench.shared_decision import shared_decision_groups  # noqa: E402
from test_mixbench import staged  # noqa: E402


SHARING = ("op_mix", "op_mix_prior", "op_mix_design")
#: every op_mix arm of the table that decides once from a uniform warm-up on the LoRA probes
GROUP = (*SHARING, "op_mix_canonical")


def test_arms_share_a_decision_when_only_the_proposal_or_the_candidate_design_differs(monkeypatch):
    plan = QualityPlan("skewed")  # every arm of the table
    groups = plan.groups()
    late = ("op_mix_late", "op_mix_late_design", "op_mix_late_canonical", "op_mix_late_best")  # decided at 50 %
    # each forked reference joins the group whose warm-up it continues
    early, late = (*GROUP, "uniform_forked"), (*late, "uniform_forked_late")
    calibrated = ("op_mix_late_calibrated", "uniform_forked_late_calibrated")
    assert early in groups and late in groups and calibrated in groups
    assert all(len(g) == 1 for g in groups if g not in (early, late, calibrated))  # other warm-ups, simulators
    table = {
        "kl": quality._arm("op_mix", kl=0.2, law="linear"),  # proposer settings: shares
        "more_candidates": quality._arm("op_mix", num_candidates=20),  # the candidate design: shares
        "rank": quality._arm("op_mix", probe_rank=8),  # other probes: alone
        "unplanned": quality._arm("op_mix", plan_caps=False),  # another data stream: alone
        "seeded": quality._arm("op_mix", decision_seed=1),  # other probe data: alone
        "redecide": quality._arm("op_mix", redecide_every=4),  # several decisions: alone
        "uniform": quality._arm("uniform"),
    }
    definitions = {name: quality.resolve(d, SHAPES["tiny"]) for name, d in table.items()}
    assert shared_decision_groups({"op_mix": plan.definitions["op_mix"], **definitions}, SHAPES["tiny"]) == [
        ("op_mix", "kl", "more_candidates"),
        ("rank",),
        ("unplanned",),
        ("seeded",),
        ("redecide",),
        ("uniform",),
    ]


def test_a_shared_group_costs_one_warm_up_and_one_decision():
    plan = QualityPlan("skewed", arms=SHARING, seeds=(0, 1, 2))  # 1400 steps, the decision at 280
    alone = plan.cost("op_mix")
    assert alone == 1400 * (1 + quality.DECISION_COST)
    assert plan.cost(SHARING) == 280 + 1400 * quality.DECISION_COST + 3 * 1120 < 3 * alone
    assert plan.units() == [(f"op_mix+op_mix_prior+op_mix_design/{s}", plan.cost(SHARING)) for s in (0, 1, 2)]
    # What is left of a group cut short: its arms not stored yet, still sharing; an arm left alone is a plain unit.
    done = {"op_mix/0": {}, "op_mix/1": {}, "op_mix_prior/1": {}}
    assert pending_units(plan, done) == [
        ("op_mix_prior+op_mix_design/0", plan.cost(("op_mix_prior", "op_mix_design"))),
        ("op_mix_design/1", alone),
        ("op_mix+op_mix_prior+op_mix_design/2", plan.cost(SHARING)),
    ]
    assert plan.unit_keys()[:3] == ["op_mix/0", "op_mix_prior/0", "op_mix_design/0"]  # the store's records


class UpTo(Budget):
    """A budget that allows any unit costing at most ``most`` steps (the time left for one arm alone, say)."""

    def __init__(self, most):
        super().__init__(1e9)
        self.most = most

    def allows(self, cost, margin=1.15):
        return cost <= self.most


class StopAfter(Budget):
    """A budget that lets ``calls`` checks pass, then none (a deadline reached mid-group)."""

    def __init__(self, calls):
        super().__init__(1e9)
        self.calls = calls

    def allows(self, cost, margin=1.15):
        self.calls -= 1
        return self.calls >= 0


def _run(plan, keys, tmp_path, name, data, budget=None):
    out = WorkerFile(str(tmp_path / f"{name}.json"), plan.settings(), {"call": name})
    work = str(tmp_path / name)
    quality.run_worker(plan, keys, work, out, budget or Budget(1e9), data_dir=str(data), unpacked=str(tmp_path / "u"))
    return out.units, work


def _timeless(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "phase_seconds")} for r in records]


def _full_records(work, unit, arm=None):
    folder = os.path.join(work, "runs", unit.replace("/", "-"), *([arm] if arm else []))
    with open(os.path.join(folder, "mixtures.json")) as handle:
        return json.load(handle)


@pytest.mark.timeout(600)
def test_each_arm_of_a_shared_group_is_its_own_run(tmp_path, monkeypatch):
    data = tmp_path / "data"
    staged(tmp_path, "skewed")
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path / "scratch" / "packed"))
    plan = QualityPlan("skewed", seeds=(0, 1), shape=SHAPES["tiny"], arms=GROUP)
    # Seed 1: there the first step after the decision reads other domains under the decided mixture than under
    # the warm-up's, so a continuation that applied the mixture a step early would not be the arm's run.
    group = "+".join(GROUP) + "/1"
    shared, shared_work = _run(plan, [group], tmp_path, "shared", data)
    alone, alone_work = _run(plan, [f"{arm}/1" for arm in GROUP], tmp_path, "alone", data)

    assert sorted(shared) == sorted(alone) == sorted(f"{arm}/1" for arm in GROUP)
    for arm in GROUP:
        mine, theirs = shared[f"{arm}/1"], alone[f"{arm}/1"]
        # (a) the record an arm's own run stores, and what it shared
        assert set(mine) == set(theirs) | {"shared_decision_with", "group"}
        assert mine["shared_decision_with"] == [a for a in GROUP if a != arm]
        assert mine["group"]["arms"] == list(GROUP) and mine["group"]["unit"] == group
        # (b) the same warm-up: initial mixture, records before the decision, decision step
        assert mine["weights"] == theirs["weights"]
        before = [d for d in theirs["decisions"] if d["kind"] not in ("decision", "kept")]
        assert [d for d in mine["decisions"] if d["kind"] not in ("decision", "kept")] == before
        # (c) the same decision, continuation and test losses (CPU: deterministic)
        assert _timeless(mine["decisions"]) == _timeless(theirs["decisions"])
        assert mine["test"] == theirs["test"] and mine["test_mean"] == theirs["test_mean"]
        assert mine["epochs"] == theirs["epochs"]
        assert mine["final_train_loss"] == pytest.approx(theirs["final_train_loss"], rel=1e-6)
        # compute: what the arm alone costs (warm-up, probes, its own candidates, its continuation)
        assert mine["flops"] == pytest.approx(theirs["flops"], rel=1e-12)
        assert mine["tokens"] == pytest.approx(theirs["tokens"], rel=1e-12)
        # the decision in full: probes, candidates and their simulated scores, law fit, proposal
        ours, own = mine["decision_records"], theirs["decision_records"]
        assert len(ours) == len(own) == 1 and ours[0]["kind"] == "decision" and ours[0]["observed"]
        assert _timeless(ours) == _timeless(own)
        # ... and the run's mixtures.json, kept in the group's folder as the arm's own run keeps it
        assert _timeless(_full_records(shared_work, group, arm)) == _timeless(_full_records(alone_work, f"{arm}/1"))
    # One warm-up, one set of probes, three designs scored (dirichlet for op_mix and op_mix_prior, covering,
    # canonical), four continuations: the group cost less than the four runs.
    actual = shared["op_mix/1"]["group"]
    runs = [alone[f"{arm}/1"] for arm in GROUP]
    assert actual["flops"]["probe"] == pytest.approx(runs[0]["flops"]["probe"])
    assert actual["flops"]["eval"] == pytest.approx(sum(runs[i]["flops"]["eval"] for i in (0, 2, 3)))
    assert actual["total_flops"] < sum(r["total_flops"] for r in runs)
    decisions = {arm: next(d for d in shared[f"{arm}/1"]["decisions"] if d["kind"] == "decision") for arm in GROUP}
    assert len({json.dumps(d["weights"], sort_keys=True) for d in decisions.values()}) == 4  # four proposals

    # Cut short after its first arm: that one is stored (sharing with no arm), the rest is left as one unit.
    cut, _ = _run(plan, ["+".join(GROUP) + "/0"], tmp_path, "cut", data, StopAfter(2))
    assert list(cut) == ["op_mix/0"] and cut["op_mix/0"]["shared_decision_with"] == []
    assert [k for k, _ in pending_units(plan, {**shared, **cut})] == ["op_mix_prior+op_mix_design+op_mix_canonical/0"]
    # A group starts when its warm-up, decision and first continuation fit, though the whole group would not:
    # the continuations after the first are checked one by one.
    assert plan.cost(GROUP) > plan.cost(GROUP[:1])
    budget = UpTo(plan.cost(GROUP[:1]))
    started, _ = _run(plan, ["+".join(GROUP[:2]) + "/0"], tmp_path, "first", data, budget)
    assert sorted(started) == sorted(f"{arm}/0" for arm in GROUP[:2])
    assert budget.per_cost > 0  # the warm-up and each continuation pace the later checks, on a fresh call too


@pytest.mark.timeout(300)
def test_a_unit_that_does_not_fit_is_skipped_and_a_cheaper_one_after_it_runs(tmp_path, monkeypatch):
    staged(tmp_path, "skewed")
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path / "scratch" / "packed"))
    plan = QualityPlan("skewed", seeds=(0, 1), shape=SHAPES["tiny"], arms=("natural", *GROUP))
    group = "+".join(GROUP) + "/0"
    assert plan.cost("natural") < plan.cost(GROUP[:1])
    done, _ = _run(plan, [group, "natural/0"], tmp_path, "skip", tmp_path / "data", UpTo(plan.cost("natural")))
    assert list(done) == ["natural/0"]


@pytest.mark.timeout(600)
def test_a_forked_reference_keeps_the_warm_up_mixture_from_the_groups_decision_point(tmp_path, monkeypatch):
    staged(tmp_path, "skewed")
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path / "scratch" / "packed"))
    plan = QualityPlan("skewed", seeds=(0, 1), shape=SHAPES["tiny"], arms=("op_mix", "uniform_forked"))
    assert plan.groups() == [("op_mix", "uniform_forked")]
    steps = plan.shape.steps
    assert plan.cost("uniform_forked") == steps  # alone it simulates nothing: a plain run's steps
    shared, _ = _run(
        plan, ["op_mix+uniform_forked/0", "op_mix+uniform_forked/1"], tmp_path, "shared", tmp_path / "data"
    )
    alone, _ = _run(plan, ["uniform_forked/1"], tmp_path, "alone", tmp_path / "data")
    for seed in (0, 1):
        reference, method = shared[f"uniform_forked/{seed}"], shared[f"op_mix/{seed}"]
        assert reference["shared_decision_with"] == ["op_mix"]
        kinds = [d["kind"] for d in reference["decisions"]]
        assert "decision" not in kinds and "kept" in kinds
        kept = next(d for d in reference["decisions"] if d["kind"] == "kept")
        assert kept["weights"] == reference["weights"] and kept["step"] == plan.decision_steps("op_mix")[0]
        assert "probe" not in reference["flops"] and method["flops"]["probe"] > 0  # its record pays no simulation
    # Alone it is the same run (CPU: deterministic): the warm-up mixture trained to the end, with no probes.
    assert alone["uniform_forked/1"]["test"] == shared["uniform_forked/1"]["test"]
    assert alone["uniform_forked/1"]["flops"] == pytest.approx(shared["uniform_forked/1"]["flops"])

    result = quality_report.report([(plan, shared, {})])
    quality_report.plot(result, str(tmp_path / "quality.png"))  # its third panel draws the forked difference
    assert (tmp_path / "quality.png").stat().st_size > 0
    body = result["domain_sets"]["skewed"]
    assert "uniform_forked" not in body["verdicts"] and "op_mix" in body["verdicts"]
    difference = body["forked"]["differences"]["op_mix - uniform_forked"]
    assert difference["seed_values"] == [0, 1] and difference["verdict"] in ("better", "worse", "not distinguishable")
    expected = [shared[f"op_mix/{s}"]["test_mean"] - shared[f"uniform_forked/{s}"]["test_mean"] for s in (0, 1)]
    assert difference["per_seed"] == pytest.approx(expected)


@pytest.mark.timeout(600)
def test_the_calibrated_late_arm_and_its_forked_reference_run_as_one_group(tmp_path, monkeypatch):
    staged(tmp_path, "skewed")
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path / "scratch" / "packed"))
    arms = ("op_mix_late_calibrated", "uniform_forked_late_calibrated")
    plan = QualityPlan("skewed", seeds=(0, 1), shape=SHAPES["tiny"], arms=arms)
    assert plan.groups() == [arms]
    units, _ = _run(plan, ["+".join(arms) + "/0"], tmp_path, "calibrated", tmp_path / "data")
    method, reference = units["op_mix_late_calibrated/0"], units["uniform_forked_late_calibrated/0"]
    decision = next(r for r in method["decision_records"] if r["kind"] == "decision")
    assert decision["step"] == plan.decision_steps(arms[0])[0] == plan.shape.steps // 2
    # the probes and the real calibration branches are the arm's compute; the reference kept the mixture
    assert method["flops"]["probe"] > 0 and method["flops"]["branch"] > 0
    assert "probe" not in reference["flops"] and "branch" not in reference["flops"]
    assert [d["kind"] for d in reference["decisions"]].count("kept") == 1


def test_the_design_re_decision_arm_decides_three_times_with_the_design_fixes(tmp_path, monkeypatch):
    staged(tmp_path, "skewed")
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path / "scratch" / "packed"))
    plan = QualityPlan("skewed", seeds=(0, 1), shape=SHAPES["tiny"], arms=("op_mix_design_redecide",))
    steps = plan.shape.steps
    assert plan.decision_steps("op_mix_design_redecide") == [round(f * steps) for f in (0.2, 0.5, 0.8)]
    units, _ = _run(plan, ["op_mix_design_redecide/0"], tmp_path, "redecide", tmp_path / "data")
    records = units["op_mix_design_redecide/0"]["decision_records"]
    decided = [r for r in records if r["step"] > 0]
    assert [r["step"] for r in decided] == plan.decision_steps("op_mix_design_redecide")
    # every decision fits the law on the data shares with the trust region (op_mix_design's settings)
    assert all(r.get("trust_region") is not None for r in decided if r["kind"] == "decision")
