"""The report of mixbench quality (``opmix_quality_pretrain.json`` + PNG): what :mod:`.quality`'s units measured,
judged by the protocol's rules.

Per set and arm the per-seed mean test loss (one per seed, the plan's seed order), per-domain test losses, FLOPs
by kind, decisions; every arm's paired difference (arm − natural, arm − uniform); the fraction of the oracle
headroom at an op_mix arm's decision point (from the fidelity results of the sweep trained as the arm trains:
:func:`fidelity_variant`); ``run_to_run_noise`` (the noise floor of a paired difference, from arms of one seed that
read the same stream, and the smallest difference a t-interval can resolve at 3-10 seeds: :func:`run_to_run_noise`);
``verdicts`` by the protocol's rules, each with its rule's text, over all of an arm's seeds; ``confirmation``, the
two-stage design's verdicts on the arm the selection seeds chose, judged on the confirmation seeds alone
(:data:`~.quality.SELECTION_ARMS`); and ``held_out``, that arm's verdicts on a held-out set
(:data:`~.quality.HELD_OUT_SETS`).  The paired-difference helpers (:func:`paired`, :func:`_compare`,
:func:`_protocol`) are shared with the other kinds' reports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Container, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from . import stats
from .fidelity import PREFIXES, variant_suffix
from .quality import (
    BASELINES,
    CONFIRMATION_SEEDS,
    HELD_OUT_ARM,
    HELD_OUT_ARMS,
    HELD_OUT_SEEDS,
    HELD_OUT_SETS,
    REFERENCES,
    SELECTION_ARMS,
    SELECTION_SEEDS,
    QualityPlan,
    is_forked_reference,
)


#: The protocol's thresholds (rule 9): relative headroom below which a set cannot tell methods apart, the
#: headroom from which a null result refutes, the half-width of "no difference", the share of headroom to support.
UNTESTABLE_BELOW, REFUTE_HEADROOM, REFUTE_WIDTH, SUPPORT_FRACTION = 0.005, 0.015, 0.005, 0.5


def arm_summary(plan: QualityPlan, arm: str, units: dict[str, Any]) -> dict[str, Any]:
    """One arm's finished seeds (in the plan's seed order): test losses, weights, epochs, seconds, compute."""
    done = [units[f"{arm}/{seed}"] for seed in plan.seeds if f"{arm}/{seed}" in units]
    means = [r["test_mean"] for r in done]
    entry = {
        "mean_test_loss": means,
        "test": [r["test"] for r in done],
        "seeds": [r["seed"] for r in done],
        "weights": done[0]["weights"] if done else None,
        "epochs": [r["epochs"] for r in done],
        "seconds": [r["seconds"] for r in done],
        "seed_std": float(np.std(means, ddof=1)) if len(done) > 1 else None,
        "definition": plan.definitions[arm],
        # per seed, the arms whose run forked from the same decision-time model as this one (shared_decision)
        "shared_decision_with": {str(r["seed"]): r.get("shared_decision_with", []) for r in done},
    }
    if done and all("flops" in r for r in done):  # units of the first baselines runs have no compute record
        entry.update(
            {
                "test_by_domain": {d: [r["test"][j] for r in done] for j, d in enumerate(plan.domains)},
                "total_flops": [r["total_flops"] for r in done],
                "flops_by_kind": [r["flops"] for r in done],
                "tokens_by_kind": [r["tokens"] for r in done],
                "decision_seconds": [r["decision_seconds"] for r in done],
                "decisions": {str(r["seed"]): r["decisions"] for r in done},
            }
        )
    return entry


def paired_by_domain(arms: dict[str, dict], a: str, b: str, seeds: Container[int]) -> dict[str, Any] | None:
    """``a − b`` per test domain over the seeds of ``seeds`` both arms finished: each domain's mean and
    t-interval (where the gain comes from; None below 2 seeds or without per-domain records)."""
    if a not in arms or b not in arms or "test_by_domain" not in arms[a] or "test_by_domain" not in arms[b]:
        return None
    theirs = {s: i for i, s in enumerate(arms[b]["seeds"])}
    common = [(i, theirs[s]) for i, s in enumerate(arms[a]["seeds"]) if s in theirs and s in seeds]
    if len(common) < 2:
        return None
    out = {}
    for domain, values in arms[a]["test_by_domain"].items():
        other = arms[b]["test_by_domain"][domain]
        difference = stats.paired_difference([values[i] for i, _ in common], [other[j] for _, j in common])
        out[domain] = {"mean": difference["mean"], "t_ci": difference["t_ci"]}
    return out


def paired(arms: dict[str, dict], a: str, b: str, seed: int = 0) -> dict[str, Any] | None:
    """``a − b`` over the seeds both arms finished (None below 2); ``shared_decision_seeds``: those on which both
    forked from one decision-time model θ_D (one warm-up, one simulation), so the difference is the proposers'
    and their continuations' alone."""
    if a not in arms or b not in arms:
        return None
    mine = dict(zip(arms[a]["seeds"], arms[a]["mean_test_loss"]))
    theirs = dict(zip(arms[b]["seeds"], arms[b]["mean_test_loss"]))
    common = [s for s in arms[a]["seeds"] if s in theirs]
    if len(common) < 2:
        return None
    shared = arms[a].get("shared_decision_with", {})
    return {
        **stats.paired_difference([mine[s] for s in common], [theirs[s] for s in common], seed=seed),
        "seed_values": common,
        "shared_decision_seeds": [s for s in common if b in shared.get(str(s), [])],
    }


def add_differences(arms: dict[str, dict], references: tuple[str, ...]) -> dict[str, dict]:
    """``arms`` with every arm's paired difference to each reference run (``minus_<reference>``)."""
    for arm, entry in arms.items():
        for ref in references:
            if ref != arm and ref in arms:
                entry[f"minus_{ref}"] = paired(arms, arm, ref)
    return arms


def headroom_at(plan: QualityPlan, step: int | None, fidelity: dict | None) -> dict[str, Any]:
    """The oracle headroom the fidelity results give at decision step ``step`` of this plan's set and shape."""
    if step is None:
        return {"headroom": None, "why": "the arm made no decision"}
    if not fidelity:
        return {"headroom": None, "why": "no fidelity results file of the arm's variant next to this one"}
    entry = fidelity.get("domain_sets", {}).get(plan.set_name)
    if not entry:
        return {"headroom": None, "why": f"the fidelity results have no set {plan.set_name!r}"}
    if entry.get("settings", {}).get("shape") != asdict(plan.shape):
        return {"headroom": None, "why": "the fidelity results were measured at another run shape"}
    for point, result in entry.get("decision_points", {}).items():
        if result.get("step") == step:
            if result.get("headroom") is None:
                return {
                    "headroom": None,
                    "why": f"the oracle sweep at {point} is incomplete "
                    f"({result.get('oracle_done')} of {result.get('oracle_planned')} mixtures)",
                }
            by_name = {o["name"]: o["test_mean"] for o in result["oracle"]}
            return {
                "headroom": result["headroom"],
                "oracle_mixtures": len(by_name),
                "oracle_baselines": sum(name in by_name for name in REFERENCES),
                "headroom_relative": result["headroom_relative"],
                "point": float(point),
                "step": step,
                "fidelity_seed": entry.get("seed"),
                "best_baseline": result["best_baseline"],
                "best_baseline_loss": by_name[result["best_baseline"]],
                "best_mixture": result["best_mixture"],
            }
    return {"headroom": None, "why": f"the fidelity results have no decision point at step {step}"}


def headroom_fraction(arm_losses: list[float], headroom: dict[str, Any]) -> dict[str, Any]:
    """The share of the headroom the arm gets: (oracle's best baseline − the arm's mean test loss) / headroom."""
    if headroom.get("headroom") is None:
        return {"fraction": None, "why": headroom["why"]}
    if headroom["headroom_relative"] < UNTESTABLE_BELOW:
        return {
            "fraction": None,
            "why": f"headroom {headroom['headroom']:.4f} nats ({headroom['headroom_relative']:.2%} "
            f"of the best baseline) < {UNTESTABLE_BELOW:.1%}: the set cannot tell methods "
            "apart at this decision point (protocol rule 4)",
        }
    gain = headroom["best_baseline_loss"] - float(np.mean(arm_losses))
    return {
        "fraction": gain / headroom["headroom"],
        "gain_over_oracle_baseline": gain,
        "note": "the arm's mean over its seeds against the oracle's best baseline (one seed, a uniform prefix to "
        "the decision point with plan_caps off, then that mixture) at the same decision step",
    }


RULES = {
    "better": "better: the t-interval (95 %, df = seeds − 1) of the paired difference arm − reference excludes 0 "
    "and is below it",
    "worse": "worse: the t-interval of the paired difference arm − reference excludes 0 and is above it",
    "not distinguishable": "not distinguishable: the t-interval of the paired difference arm − reference contains 0",
    "better_than_both": "better than both natural and uniform: the t-interval of each paired difference (arm − natural, "
    "arm − uniform) excludes 0 and is below it",
    "supported": "supported: the t-interval of arm − best baseline (the lowest mean test loss over the seeds of "
    f"{', '.join(BASELINES)}, those run) excludes 0 and is below it, and the arm gets >= "
    f"{SUPPORT_FRACTION:.0%} of the oracle headroom at its (first) decision point (protocol rule 9)",
    "refuted": f"refuted: the t-interval of arm − best baseline lies within ±{REFUTE_WIDTH:.1%} of the best baseline's "
    f"mean test loss while the headroom is >= {REFUTE_HEADROOM:.1%} (protocol rule 9)",
    "untestable": f"untestable: the oracle headroom at the arm's decision point is < {UNTESTABLE_BELOW:.1%} of the best "
    "baseline (protocol rules 4 and 9)",
    "undecided": "undecided: none of supported, refuted, untestable applies (e.g. a gain that excludes 0 with < "
    f"{SUPPORT_FRACTION:.0%} of the headroom, or an interval wider than ±{REFUTE_WIDTH:.1%})",
    "not judged": "not judged: fewer than 3 paired seeds (protocol rule 1) or no oracle headroom measured at the "
    "arm's decision point",
}


def _compare(difference: dict | None) -> dict[str, Any]:
    if difference is None:
        return {"verdict": None, "rule": "needs >= 2 seeds finished by both arms"}
    lo, hi = difference["t_ci"]
    verdict = "better" if hi < 0 else "worse" if lo > 0 else "not distinguishable"
    return {"verdict": verdict, "rule": RULES[verdict], "t_ci": [lo, hi]}


def _protocol(arms: dict, arm: str, headroom: dict, fraction: dict) -> dict[str, Any]:
    """Rule 9's verdict on ``arm`` against the best baseline run."""
    runs = [b for b in BASELINES if b in arms and arms[b]["mean_test_loss"]]
    if not runs:
        return {"verdict": None, "rule": RULES["not judged"], "why": "no baseline arm run"}
    best = min(runs, key=lambda b: np.mean(arms[b]["mean_test_loss"]))
    difference = paired(arms, arm, best)
    out: dict[str, Any] = {"best_baseline": best, "difference": difference}
    if difference is None or difference["seeds"] < 3:
        return {**out, "verdict": "not judged", "rule": RULES["not judged"], "why": "fewer than 3 paired seeds"}
    if headroom.get("headroom") is None:
        return {**out, "verdict": "not judged", "rule": RULES["not judged"], "why": headroom["why"]}
    relative = headroom["headroom_relative"]
    lo, hi = difference["t_ci"]
    width = REFUTE_WIDTH * float(np.mean(arms[best]["mean_test_loss"]))
    if relative < UNTESTABLE_BELOW:
        verdict = "untestable"
    elif hi < 0 and (fraction.get("fraction") or 0.0) >= SUPPORT_FRACTION:
        verdict = "supported"
    elif relative >= REFUTE_HEADROOM and -width <= lo and hi <= width:
        verdict = "refuted"
    else:
        verdict = "undecided"
    return {**out, "verdict": verdict, "rule": RULES[verdict], "headroom_relative": relative}


def _verdicts(arms: dict, judged: dict[str, dict]) -> dict[str, Any]:
    out = {}
    for arm, info in judged.items():
        vs = {ref: _compare(arms[arm].get(f"minus_{ref}")) for ref in REFERENCES if ref in arms}
        both = len(vs) == len(REFERENCES) and all(v["verdict"] == "better" for v in vs.values())
        decided = all(v["verdict"] for v in vs.values()) and len(vs) == len(REFERENCES)
        out[arm] = {
            **{f"vs_{ref}": v for ref, v in vs.items()},
            "better_than_both": {"verdict": both if decided else None, "rule": RULES["better_than_both"]},
            "protocol": _protocol(arms, arm, info["headroom"], info["headroom_fraction"]),
        }
    return out


def _on_seeds(entry: dict, seeds: tuple[int, ...]) -> dict:
    keep = [i for i, s in enumerate(entry["seeds"]) if s in seeds]
    return {
        "seeds": [entry["seeds"][i] for i in keep],
        "mean_test_loss": [entry["mean_test_loss"][i] for i in keep],
        "shared_decision_with": entry.get("shared_decision_with", {}),
    }


def confirmation(
    arms: dict[str, dict], judged: dict[str, dict], references: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    """The second stage of the two-stage design (:data:`SELECTION_ARMS`): which arm the selection seeds chose, and
    its verdicts against natural, uniform and the protocol's best baseline on the confirmation seeds alone, and
    (``vs_forked``) against the forked references of its group (``references``: :func:`forked_references`)."""
    out: dict[str, Any] = {
        "selection_arms": list(SELECTION_ARMS),
        "selection_seeds": list(SELECTION_SEEDS),
        "confirmation_seeds": list(CONFIRMATION_SEEDS),
    }
    missing = [a for a in SELECTION_ARMS if a not in arms or not set(SELECTION_SEEDS) <= set(arms[a]["seeds"])]
    if missing:
        return {**out, "selected": None, "why": f"not yet run on every selection seed: {', '.join(missing)}"}
    first = {a: float(np.mean(_on_seeds(arms[a], SELECTION_SEEDS)["mean_test_loss"])) for a in SELECTION_ARMS}
    selected = min(SELECTION_ARMS, key=lambda a: first[a])  # min keeps the first of equal means: table order
    sub = {a: _on_seeds(arms[a], CONFIRMATION_SEEDS) for a in (selected, *BASELINES) if a in arms}
    sub = {a: e for a, e in sub.items() if e["seeds"]}
    seeds_run = sub.get(selected, {}).get("seeds", [])
    out.update(
        selected=selected,
        selection_means=first,
        seeds_run=seeds_run,
        # the stage is done when the selected arm and uniform have every confirmation seed (natural needs fewer)
        complete=set(seeds_run) == set(CONFIRMATION_SEEDS)
        and set(sub.get("uniform", {}).get("seeds", [])) == set(CONFIRMATION_SEEDS),
    )
    if selected not in sub:
        return {**out, "why": "the selected arm has not run on a confirmation seed"}
    judgement, unforked = _judge_on_seeds(arms, judged, selected, CONFIRMATION_SEEDS, references)
    from_scratch_in = out["complete"]
    out["complete"] = bool(from_scratch_in and not unforked)
    if not from_scratch_in:  # every confirmation seed runs whatever the interim figures say (no optional stopping)
        judgement["note"] = (
            f"{len(seeds_run)} of {len(CONFIRMATION_SEEDS)} confirmation seeds are in: the verdicts are read "
            "when all are (no early look)"
        )
    elif unforked:
        judgement["note"] = _unforked_note(unforked)
    return {**out, **judgement}


def _unforked_note(unforked: Mapping[str, list[int]]) -> str:
    where = "; ".join(f"{ref} on seed(s) {', '.join(map(str, seeds))}" for ref, seeds in unforked.items())
    return (
        "every seed is in for the arm and the from-scratch references, so the verdicts against them are final; "
        f"a forked reference did not continue from the arm's θ_D ({where}: it ran apart from the arm's group), "
        "so vs_forked is over the other seeds and the stage counts as incomplete only for that"
    )


def _judge_on_seeds(
    arms: dict[str, dict],
    judged: dict[str, dict],
    arm: str,
    seeds: tuple[int, ...],
    references: Mapping[str, list[str]] | None,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """``arm``'s verdicts on ``seeds`` alone: against natural and uniform, the protocol's best baseline, and
    (``vs_forked``) the forked references of its group; and ``{reference: [seed, ...]}``, the seeds of ``seeds``
    the arm ran on where a reference did not fork from its θ_D (empty: every one did)."""
    sub = {a: _on_seeds(arms[a], seeds) for a in (arm, *BASELINES) if a in arms}
    sub = {a: e for a, e in sub.items() if e["seeds"]}
    headroom = judged.get(arm, {}).get("headroom") or {"headroom": None, "why": "not judged in this report"}
    vs = {
        f"vs_{ref}": {**_compare(paired(sub, arm, ref)), "by_domain": paired_by_domain(arms, arm, ref, seeds)}
        for ref in REFERENCES
        if ref in sub
    }
    protocol = _protocol(sub, arm, headroom, headroom_fraction(sub[arm]["mean_test_loss"], headroom))
    vs_forked = {ref: forked_difference(arms, arm, ref, seeds) for ref in (references or {}).get(arm, [])}
    shared = arms[arm].get("shared_decision_with", {})
    for ref, difference in vs_forked.items():
        if difference is not None:
            forked_seeds = set(difference["seed_values"])
            difference["by_domain"] = paired_by_domain(arms, arm, ref, forked_seeds)
    unforked = {
        ref: missing
        for ref in vs_forked
        if (missing := [s for s in seeds if s in arms[arm]["seeds"] and ref not in shared.get(str(s), [])])
    }
    return {**vs, "protocol": protocol, **({"vs_forked": vs_forked} if vs_forked else {})}, unforked


def held_out(
    arms: dict[str, dict], judged: dict[str, dict], references: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    """The held-out verdicts of :data:`HELD_OUT_ARM` on a set of :data:`HELD_OUT_SETS`: on
    :data:`HELD_OUT_SEEDS`, complete when every arm of :data:`HELD_OUT_ARMS` has every one of them."""
    out: dict[str, Any] = {
        "arm": HELD_OUT_ARM,
        "arms": list(HELD_OUT_ARMS),
        "seeds": list(HELD_OUT_SEEDS),
        "chosen_on": {"set": "skewed", "stage": "selection", "seeds": list(SELECTION_SEEDS)},
    }
    missing = {a: sorted(set(HELD_OUT_SEEDS) - set(arms.get(a, {}).get("seeds", []))) for a in HELD_OUT_ARMS}
    missing = {a: s for a, s in missing.items() if s}
    out["complete"] = not missing
    if missing:
        out["missing"] = missing
    if HELD_OUT_ARM not in arms or not set(HELD_OUT_SEEDS) & set(arms[HELD_OUT_ARM]["seeds"]):
        return {**out, "why": "the arm has not run on a held-out seed"}
    judgement, unforked = _judge_on_seeds(arms, judged, HELD_OUT_ARM, HELD_OUT_SEEDS, references)
    if not out["complete"]:
        judgement["note"] = "not every held-out seed is in: the verdicts are read when all are (no early look)"
    elif unforked:
        judgement["note"] = _unforked_note(unforked)
    out["complete"] = bool(out["complete"] and not unforked)
    return {**out, **judgement}


def fidelity_variant(definition: Mapping[str, Any]) -> str:
    """The fidelity results an arm's headroom is read from: the sweep trained as the arm trains (caps planned
    or not, the warm-up on uniform or natural), e.g. ``mixbench_fidelity_planned``."""
    prefix = definition["settings"].get("warmup_mixture", "uniform")
    return "mixbench_fidelity" + variant_suffix(definition["plan_caps"], prefix)


def report(
    plans_and_units: list[tuple[QualityPlan, dict[str, Any], dict[str, list]]],
    fidelity: dict[str, dict | None] | None = None,
) -> dict[str, Any]:
    """The ``opmix_quality_pretrain.json`` body (module docstring); ``fidelity``: the fidelity results by
    variant (:func:`fidelity_variant`), for each op_mix arm's headroom."""
    out: dict[str, Any] = {"domain_sets": {}, "complete": bool(plans_and_units)}
    for plan, units, _ in plans_and_units:
        arms = add_differences({arm: arm_summary(plan, arm, units) for arm in plan.arms}, REFERENCES)
        judged = {}
        methods = [a for a in plan.arms if plan.definitions[a]["strategy"] == "op_mix"]
        for arm in (a for a in methods if not is_forked_reference(plan.definitions[a])):
            steps = sorted(
                {
                    d["step"]
                    for r in (units.get(f"{arm}/{s}") for s in plan.seeds)
                    if r
                    for d in r["decisions"]
                    if d["kind"] in ("decision", "kept")
                }
            )
            variant = fidelity_variant(plan.definitions[arm])
            headroom = {
                **headroom_at(plan, steps[0] if steps else None, (fidelity or {}).get(variant)),
                "fidelity_file": variant,
            }
            fraction = headroom_fraction(arms[arm]["mean_test_loss"], headroom)
            arms[arm].update({"decision_steps": steps, "headroom": headroom, "headroom_fraction": fraction})
            judged[arm] = {"headroom": headroom, "headroom_fraction": fraction}
        caps = {base: paired(arms, base, f"{base}_unplanned") for base in REFERENCES}
        if plan.set_name in HELD_OUT_SETS:
            held = held_out(arms, judged, forked_references(plan))
            confirmed = {"selected": None, "why": f"a held-out set: {HELD_OUT_ARM} is judged in held_out"}
            # the plan's own units; whether the held-out design is done is held["complete"]
            complete = all(key in units for key in plan.unit_keys())
        else:
            held = None
            confirmed = confirmation(arms, judged, forked_references(plan))
            complete = _complete(plan, units, confirmed)
        out["complete"] &= complete
        out["domain_sets"][plan.set_name] = {
            "seeds": list(plan.seeds),
            "settings": plan.settings(),
            "complete": complete,
            "domains": list(plan.domains),
            "arms": arms,
            "planned_minus_unplanned": caps,
            "shared_decision": _shared_pairs(plan, arms),
            "forked": forked(plan, arms),
            "run_to_run_noise": run_to_run_noise(plan, units, _best_headroom(judged)),
            "confirmation": confirmed,
            **({"held_out": held} if held is not None else {}),
            "verdicts": _verdicts(arms, judged),
            "rules": RULES,
        }
    selected = out["domain_sets"].get("skewed", {}).get("confirmation", {}).get("selected")
    for name in HELD_OUT_SETS:
        held = out["domain_sets"].get(name, {}).get("held_out")
        if held is not None and selected is not None and selected != HELD_OUT_ARM:
            held["selection_mismatch"] = f"skewed's selection seeds now choose {selected}, not {HELD_OUT_ARM}"
    return out


#: the seed counts at which the report gives the smallest paired difference a t-interval can tell from 0
POWER_SEEDS = (3, 5, 8, 10)


def _stream(record: dict) -> str:
    """What a run read: its mixtures in force (step, weights) and its epochs per domain, exactly."""
    return json.dumps([_schedule(record), record.get("epochs")], sort_keys=True)


#: Mixtures in force that differ by no more than this in any share count as the same mixture (``same_mixture``).
SAME_MIXTURE_TOLERANCE = 1e-3


def _schedule(record: dict) -> list[tuple[int, dict[str, float]]]:
    """A run's mixtures in force: ``[(from step, weights)]`` of its initial, decision and kept records, in the
    run's order (a decision at step 0 follows the initial mixture of the same step)."""
    return [(d["step"], d["weights"]) for d in record["decisions"] if d["kind"] in ("initial", "decision", "kept")]


def _same_mixture(a: dict, b: dict, tolerance: float = SAME_MIXTURE_TOLERANCE) -> bool:
    """Whether two runs trained the same mixtures (every share within ``tolerance`` at every step)."""
    sa, sb = _schedule(a), _schedule(b)
    for step in sorted({s for s, _ in sa} | {s for s, _ in sb}):
        wa, wb = ([w for s, w in schedule if s <= step][-1] for schedule in (sa, sb))
        if set(wa) != set(wb) or max(abs(wa[k] - wb[k]) for k in wa) > tolerance:
            return False
    return True


def same_mixture_noise(plan: QualityPlan, units: dict[str, Any]) -> dict[str, Any]:
    """The noise of a paired difference between runs of one seed that trained the same mixtures but not
    necessarily the same stream (e.g. uniform and an op_mix arm whose decision kept its uniform warm-up): GPU
    nondeterminism and data order together, what a paired difference between two arms from scratch carries."""
    pairs = _pairs_of_one_seed(
        plan, units, lambda a, b: a.get("decisions") and b.get("decisions") and _same_mixture(a, b)
    )
    out: dict[str, Any] = {
        "pairs": pairs,
        "tolerance": SAME_MIXTURE_TOLERANCE,
        "note": "pairs of runs of one seed whose mixtures in force agree within the tolerance at every step (the "
        "same-stream pairs among them); three such arms on one seed give three pairs, two of them independent",
    }
    return {**out, **_noise_of(pairs)}


def _pairs_of_one_seed(plan: QualityPlan, units: dict[str, Any], alike) -> list[dict[str, Any]]:
    """Every pair of finished arms of one seed for which ``alike(record, record)`` holds, with its test difference."""
    pairs = []
    for seed in plan.seeds:
        done = [(arm, units[f"{arm}/{seed}"]) for arm in plan.arms if f"{arm}/{seed}" in units]
        for i, (a, ra) in enumerate(done):
            for b, rb in done[i + 1 :]:
                if alike(ra, rb):
                    pairs.append({"arms": [a, b], "seed": seed, "difference": ra["test_mean"] - rb["test_mean"]})
    return pairs


def _noise_of(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """``sd_of_difference`` of pairs whose expected difference is 0 (their root mean square; None below 2 pairs)
    and the smallest difference a t-interval resolves at :data:`POWER_SEEDS` seeds."""
    if len(pairs) < 2:
        return {"sd_of_difference": None}
    sd = float(np.sqrt(np.mean([p["difference"] ** 2 for p in pairs])))
    return {"sd_of_difference": sd, "detectable": {str(n): stats.detectable_difference(sd, n) for n in POWER_SEEDS}}


def run_to_run_noise(plan: QualityPlan, units: dict[str, Any], headroom: dict | None = None) -> dict[str, Any]:
    """The noise floor of a paired difference, measured where two arms of one seed read the same data stream
    (same init, same mixtures at the same steps, same epochs per domain: natural and natural_unplanned when no
    cap binds).  Their test losses differ only by the GPU's run-to-run nondeterminism, amplified by training;
    two arms that read different streams differ at least that much by chance, so ``sd_of_difference`` bounds
    from below the noise of every paired difference, and ``detectable`` gives the smallest one a t-interval can
    tell from 0 at a few seed counts.  With ``headroom`` (:func:`headroom_at`'s entry), how many seeds half of it
    would need, and the headroom its oracle sweep would show by chance (each mixture one run, all equally good:
    :func:`.stats.chance_headroom`, at a run's noise sd = ``sd_of_difference`` / √2)."""
    pairs = _pairs_of_one_seed(plan, units, lambda a, b: a.get("epochs") and _stream(a) == _stream(b))
    out: dict[str, Any] = {
        "pairs": pairs,
        "note": "pairs of runs of one seed that read the same data stream; their difference is run-to-run noise, "
        "a lower bound on the chance part of any paired difference",
    }
    out["same_mixture"] = same_mixture_noise(plan, units)
    # E[d] = 0 for such a pair: the root mean square is the standard deviation of a difference
    out.update(_noise_of(pairs))
    sd = out["sd_of_difference"]
    if sd is None:
        return out
    room = (headroom or {}).get("headroom")
    if room is not None:
        out["headroom"] = {
            "headroom": room,
            "point": headroom.get("point"),
            "half_headroom": room / 2,
            "seeds_for_half_headroom": stats.seeds_to_detect(sd, room / 2),
        }
        if headroom.get("oracle_mixtures"):
            out["headroom"]["chance_headroom"] = stats.chance_headroom(
                sd / np.sqrt(2), headroom["oracle_mixtures"], max(1, headroom.get("oracle_baselines") or 1)
            )
    return out


def _complete(plan: QualityPlan, units: dict[str, Any], confirmed: dict[str, Any]) -> bool:
    """Every unit of the plan; with seeds past the selection seeds (the two-stage design), every arm on the
    selection seeds and the confirmation stage complete (only the selected arm and the references run there)."""
    if set(plan.seeds) <= set(SELECTION_SEEDS) or not confirmed.get("selected"):
        return all(key in units for key in plan.unit_keys())
    first = [s for s in plan.seeds if s in SELECTION_SEEDS]
    # forked references joined after the selection seeds: they are needed with the selected arm only
    arms = [a for a in plan.arms if not is_forked_reference(plan.definitions[a])]
    return all(f"{arm}/{s}" in units for arm in arms for s in first) and bool(confirmed.get("complete"))


def _best_headroom(judged: dict[str, dict]) -> dict | None:
    """The :func:`headroom_at` entry with the largest oracle headroom at any op_mix arm's decision point, or None."""
    measured = [j["headroom"] for j in judged.values() if j["headroom"].get("headroom") is not None]
    return max(measured, key=lambda h: h["headroom"]) if measured else None


def forked_references(plan: QualityPlan) -> dict[str, list[str]]:
    """``{op_mix arm: the forked references of its shared-decision group}`` (:func:`_forked`)."""
    out: dict[str, list[str]] = {}
    for group in plan.groups():
        references = [a for a in group if is_forked_reference(plan.definitions[a])]
        for arm in group:
            if references and arm not in references:
                out[arm] = references
    return out


def forked_difference(arms: dict[str, dict], arm: str, reference: str, seeds: Container[int] | None = None):
    """``arm − reference`` on the seeds (within ``seeds``) on which both continued from one θ_D, with the t rule's
    verdict; None below 2 such seeds."""
    if arm not in arms or reference not in arms:
        return None
    shared = arms[arm].get("shared_decision_with", {})
    common = tuple(
        s for s in arms[arm]["seeds"] if reference in shared.get(str(s), []) and (seeds is None or s in seeds)
    )
    difference = paired({a: _on_seeds(arms[a], common) for a in (arm, reference)}, arm, reference)
    return None if difference is None else {**difference, **_compare(difference)}


def forked(plan: QualityPlan, arms: dict[str, dict]) -> dict[str, Any]:
    """Each op_mix arm against the forked references of its group (:func:`forked_difference`): what its decision
    changed, at the noise of a continuation from θ_D, not of a whole run (``ARMS``' note on the references)."""
    return {
        "differences": {
            f"{arm} - {ref}": forked_difference(arms, arm, ref)
            for arm, references in forked_references(plan).items()
            for ref in references
        },
        "note": "paired over the seeds on which the arm and the reference forked from one θ_D; a forked reference "
        "keeps the warm-up mixture to the end, so it is that seed's warm-up mixture trained for the whole run. "
        "Added in session 11, after the selection seeds and before the confirmation seeds; the verdicts above "
        "stay the pre-registered from-scratch ones",
    }


def _shared_pairs(plan: QualityPlan, arms: dict[str, dict]) -> dict[str, Any]:
    """The paired differences among the arms of each group that shares a warm-up and a decision."""
    pairs = {
        f"{b} - {a}": paired(arms, b, a)
        for group in plan.groups()
        for i, a in enumerate(group)
        for b in group[i + 1 :]
    }
    return {
        "differences": pairs,
        "note": "on its shared_decision_seeds a pair forked from one decision-time model θ_D (one warm-up, one "
        "simulation): the difference there is the proposers' and their continuations' alone",
    }


def report_inputs(results_dir: str, shape: str) -> dict[str, Any]:
    """What :func:`report` reads besides the stores: the fidelity results of the same shape (the headroom)."""
    from _common import read_json  # benchmarks/ is on sys.path (runner puts it there)

    suffix = "" if shape == "gpu" else f"_{shape}"
    variants = [f"mixbench_fidelity{variant_suffix(planned, p)}" for planned in (False, True) for p in PREFIXES]
    return {"fidelity": {v: read_json(os.path.join(results_dir, f"{v}{suffix}.json"), default=None) for v in variants}}


def _gain_panel(ax, items: list[tuple[str, dict]], title: str, ylabel: str) -> None:
    """Per-seed gains (−difference: above 0, the arm is better) of ``[(label, paired difference)]``, with the
    mean, its t-interval (thick) and bootstrap interval (thin)."""
    for x, (_, d) in enumerate(items):
        gains = -np.asarray(d["per_seed"])
        ax.scatter(np.full(len(gains), x) + np.linspace(-0.12, 0.12, len(gains)), gains, s=14, color="grey")
        lo, hi = -d["t_ci"][1], -d["t_ci"][0]
        ax.errorbar(x, -d["mean"], yerr=[[-d["mean"] - lo], [hi + d["mean"]]], fmt="o", color="C0", lw=2.2, capsize=4)
        if d["bootstrap_ci"][0] is not None:
            ax.vlines(x + 0.2, -d["bootstrap_ci"][1], -d["bootstrap_ci"][0], color="C1", lw=1)
    if not items:
        ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    # a fixed width per item, so one or two items keep their seeds beside their interval, not across the panel
    ax.set_xlim(-0.6, max(len(items), 2) - 0.4)
    ax.axhline(0, color="black", lw=0.7)
    ax.set_xticks(range(len(items)), [label for label, _ in items], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)


def plot(result: dict[str, Any], path: str) -> None:
    """Per-seed paired gains (reference − arm: above 0, the arm is better) over natural, over uniform and over
    the arm's forked reference (same θ_D), with the mean, its t-interval (thick) and bootstrap interval (thin),
    one row per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [
        (name, entry)
        for name, entry in result["domain_sets"].items()
        if any(arm.get(f"minus_{ref}") for arm in entry["arms"].values() for ref in REFERENCES)
        or any(entry.get("forked", {}).get("differences", {}).values())
    ]
    if not sets:
        return
    columns = len(REFERENCES) + 1
    fig, axes = plt.subplots(len(sets), columns, figsize=(6.5 * columns, 3.8 * len(sets)), squeeze=False)
    for row, (set_name, entry) in zip(axes, sets):
        for ax, ref in zip(row, REFERENCES):
            items = [(a, e[f"minus_{ref}"]) for a, e in entry["arms"].items() if e.get(f"minus_{ref}")]
            title = f"{set_name}: gain over {ref} (per seed; t CI blue, bootstrap orange)"
            _gain_panel(ax, items, title, f"{ref} − arm, mean test loss (nats)")
        forked_items = [(pair, d) for pair, d in entry.get("forked", {}).get("differences", {}).items() if d]
        title = f"{set_name}: gain over the arm's forked reference (same θ_D)"
        _gain_panel(row[-1], forked_items, title, "reference − arm (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
