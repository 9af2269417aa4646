"""The report of the reuse benchmark (``olmix_reuse_scale.json`` + PNG) from its stores.

Per stage and arm: the mixture, the reuse plan, proxy runs, mean test loss per seed.  Per arm (the keys the
issue's checks read, also at the top level for the file's one set): ``mean_test_loss`` at the last update
(one per seed), ``proxy_runs`` (every swarm member its decisions needed, the shared first swarm included, as
Olmix counts), FLOPs by kind (proxy and target training), the paired difference to natural; per reuse arm
the fraction of recomputation's gain over natural it keeps (bootstrap interval over seeds), its proxy runs
as a fraction of recomputation's; auto's reopened domains against the best single reopen (when run); and
the verdicts on the issue's targets and the protocol's rule 9, each with its rule's text.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from . import stats
from .quality_report import _compare, _protocol, paired


KEEP, RUNS = 0.9, 0.35  # the targets: full reuse keeps >= 90 % of the gain with <= 35 % of the runs

RULES = {
    "recompute_beats_natural": "met: the t-interval (95 %, df = seeds − 1) of recompute − natural mean test loss at "
    "the last update excludes 0 and is below it",
    "full_keeps_gain": f"met: full reuse keeps >= {KEEP:.0%} of recompute's gain over natural at the last update (ratio "
    f"of the mean gains over seeds; bootstrap interval reported), recompute's gain is > 0, and full "
    f"uses <= {RUNS:.0%} of recompute's proxy runs",
    "auto_at_least_full": "met: the mean over seeds of the paired difference auto − full (mean test loss, last update) "
    "is <= 0 (its t-interval reported)",
    "not judged": "not judged: an arm's targets at the last update are missing (fewer than 2 seeds)",
}


def _arm_at(plan, units: dict, arm: str, stage: int) -> dict[str, Any]:
    chain = "olmix" if stage == 0 and arm != "natural" else arm
    done = [
        (s, units[f"target/{chain}/{stage}/{s}"])
        for s in plan.seeds_at(stage)
        if f"target/{chain}/{stage}/{s}" in units
    ]
    decision = units.get(f"decision/{chain}/{stage}")
    plan_record = decision and decision["plan"]
    return {
        "mean_test_loss": [t["mean"] for _, t in done],
        "seeds": [s for s, _ in done],
        "test_by_domain": {d: [t["scores"][j] for _, t in done] for j, d in enumerate(plan.names[stage])}
        if done
        else {},
        "weights": decision["mixture"] if decision else (done[0][1]["weights"] if done else None),
        "proxy_runs": decision["proxy_runs"] if decision else 0,
        "decided": decision is not None or arm == "natural",
        "reuse_plan": plan_record
        and {k: plan_record.get(k) for k in ("mode", "compute", "fixed", "reasons", "no_runs")},
        "target_flops": sum(t["train_flops"] for _, t in done),
        "proxy_flops": sum(units[m]["train_flops"] for m in (decision or {}).get("members", []) if m in units),
    }


def kept_fraction(arms: dict, arm: str, seed: int = 0) -> dict[str, Any]:
    """The fraction of recompute's gain over natural that ``arm`` keeps: mean gain of the arm / mean gain of recompute."""
    table = {a: dict(zip(arms[a]["seeds"], arms[a]["mean_test_loss"])) for a in ("natural", "recompute", arm)}
    common = [s for s in table["natural"] if all(s in table[a] for a in table)]
    if not common:
        return {"fraction": None, "why": "no seed finished by natural, recompute and the arm"}
    nat, rec, mine = (np.array([table[a][s] for s in common]) for a in ("natural", "recompute", arm))
    gain_rec, gain_arm = nat - rec, nat - mine
    out = {
        "fraction": float(gain_arm.mean() / gain_rec.mean()) if gain_rec.mean() != 0 else None,
        "recompute_gain": float(gain_rec.mean()),
        "arm_gain": float(gain_arm.mean()),
        "relative_gain_over_natural": {
            "recompute": float(gain_rec.mean() / nat.mean()),
            arm: float(gain_arm.mean() / nat.mean()),
        },
        "seeds": common,
        "bootstrap_ci": stats.bootstrap_interval(
            lambda i: gain_arm[i].mean() / gain_rec[i].mean() if gain_rec[i].mean() > 0 else np.nan, len(common), seed
        )
        if len(common) >= 2
        else [None, None],
    }
    if gain_rec.mean() <= 0:
        out["note"] = "recompute did not beat natural: a fraction of a non-positive gain does not measure reuse"
    return out


def _single_reopens(plan, units: dict, arms: dict, stages: list) -> dict[str, Any]:
    if not plan.single_reopens:
        return {
            "ran": False,
            "why": "not run (--single-reopens not given: it costs one partial-reuse swarm and "
            f"{len(plan.seeds)} targets per unaffected domain at the last update)",
        }
    last = stages[-1]["arms"]
    auto_plan = (units.get(f"decision/auto/{plan.last}") or {}).get("plan") or {}
    singles = {
        d: float(np.mean(last[f"single:{d}"]["mean_test_loss"]))
        for d in plan.single_reopens
        if last[f"single:{d}"]["mean_test_loss"]
    }
    out = {
        "ran": True,
        "auto_reopened": (auto_plan.get("reasons") or {}).get("reopened", []),
        "auto_reasons": auto_plan.get("reasons"),
        "singles_mean_test_loss": singles,
        "done": len(singles),
        "planned": len(plan.single_reopens),
    }
    if singles and arms["auto"]["mean_test_loss"]:
        best = min(singles, key=singles.get)
        auto = float(np.mean(arms["auto"]["mean_test_loss"]))
        out.update(
            best_single=best,
            best_single_mean=singles[best],
            auto_mean=auto,
            auto_minus_best_single=auto - singles[best],
            auto_rank_among_singles=1 + sum(v < auto for v in singles.values()),
        )
    return out


def _verdicts(arms: dict, kept: dict, runs_ratio: dict) -> dict[str, Any]:
    rec = paired(arms, "recompute", "natural")
    out: dict[str, Any] = {}
    if rec is None:
        out["recompute_beats_natural"] = {"verdict": "not judged", "rule": RULES["not judged"]}
    else:
        out["recompute_beats_natural"] = {
            "verdict": "met" if rec["t_ci"][1] < 0 else "missed",
            "rule": RULES["recompute_beats_natural"],
            "difference": rec,
        }
    full = kept.get("full", {})
    if full.get("fraction") is None or runs_ratio.get("full") is None:
        out["full_keeps_gain"] = {"verdict": "not judged", "rule": RULES["not judged"]}
    else:
        ok = full["recompute_gain"] > 0 and full["fraction"] >= KEEP and runs_ratio["full"] <= RUNS
        out["full_keeps_gain"] = {
            "verdict": "met" if ok else "missed",
            "rule": RULES["full_keeps_gain"],
            "fraction": full["fraction"],
            "bootstrap_ci": full["bootstrap_ci"],
            "proxy_runs_ratio": runs_ratio["full"],
        }
    auto = paired(arms, "auto", "full")
    out["auto_at_least_full"] = (
        {"verdict": "not judged", "rule": RULES["not judged"]}
        if auto is None
        else {
            "verdict": "met" if auto["mean"] <= 0 else "missed",
            "rule": RULES["auto_at_least_full"],
            "difference": auto,
            "compare": _compare(auto),
        }
    )
    no_headroom = {"headroom": None, "why": "no oracle sweep on this set: the protocol's headroom is not measured"}
    out["protocol"] = {
        arm: _protocol(arms, arm, no_headroom, {"fraction": None}) for arm in ("recompute", "full", "partial", "auto")
    }
    return out


def report(plans_and_units: list, transfer: dict | None = None) -> dict[str, Any]:
    """The ``olmix_reuse_scale.json`` body (module docstring); ``transfer``: the ladder's results (the rung)."""
    from .reuse import ARMS, OLMIX_ARMS, choose_rung

    out: dict[str, Any] = {"domain_sets": {}, "complete": bool(plans_and_units)}
    for plan, units, replicates in plans_and_units:
        complete = all(key in units for key in plan.unit_keys())
        out["complete"] &= complete
        stages = []
        for k in range(plan.last + 1):
            names = [
                "natural",
                *(OLMIX_ARMS if k else ["olmix"]),
                *([f"single:{d}" for d in plan.single_reopens] if k == plan.last else []),
            ]
            stages.append(
                {
                    "stage": k,
                    "domains": plan.names[k],
                    "update": asdict(plan.updates[k - 1]) if k else None,
                    "arms": {a: _arm_at(plan, units, a, k) for a in names},
                }
            )
        arms = {}
        for arm in ARMS:
            at = [s["arms"]["olmix" if s["stage"] == 0 and arm != "natural" else arm] for s in stages]
            arms[arm] = {
                **{k: at[-1][k] for k in ("mean_test_loss", "seeds", "test_by_domain", "weights")},
                "proxy_runs": sum(a["proxy_runs"] for a in at),
                "flops_by_kind": {
                    "proxy": sum(a["proxy_flops"] for a in at),
                    "target_train": sum(a["target_flops"] for a in at),
                },
                "mean_test_loss_by_stage": [a["mean_test_loss"][0] if a["mean_test_loss"] else None for a in at],
                "decisions_done": sum(a["decided"] for a in at),
            }
        for arm in OLMIX_ARMS:
            arms[arm]["minus_natural"] = paired(arms, arm, "natural")
        kept = {arm: kept_fraction(arms, arm) for arm in ("full", "partial", "auto")}
        per_stage = {arm: [] for arm in ("full", "partial", "auto")}
        for k in range(1, plan.last + 1):
            first = {a: arms[a]["mean_test_loss_by_stage"][k] for a in ARMS}
            for arm in per_stage:
                ok = (
                    None not in (first["natural"], first["recompute"], first[arm])
                    and first["natural"] != first["recompute"]
                )
                per_stage[arm].append(
                    (first["natural"] - first[arm]) / (first["natural"] - first["recompute"]) if ok else None
                )
        recompute_runs = arms["recompute"]["proxy_runs"]
        runs_ratio = {
            a: arms[a]["proxy_runs"] / recompute_runs if recompute_runs else None for a in ("full", "partial", "auto")
        }
        chosen, why = choose_rung(transfer, plan.set_name, "gpu" if plan.shape.preset != "tiny" else "tiny")
        out["domain_sets"][plan.set_name] = {
            "settings": plan.settings(),
            "complete": complete,
            "stages": stages,
            "arms": arms,
            "kept_fraction": {a: {**kept[a], "per_stage_first_seed": per_stage[a]} for a in kept},
            "proxy_runs_ratio": runs_ratio,
            "rung": {
                "used": list(plan.rung),
                "proxy_steps": plan.proxy().steps,
                "transfer_results_now_give": {"rung": list(chosen), "why": why},
                "why": "the rung of the store's settings (chosen when its first units ran: --rung, else the "
                "cheapest rung with Spearman >= 0.8 in mixbench_transfer.json, else the default)",
            },
            "auto_vs_single_reopen": _single_reopens(plan, units, arms, stages),
            "verdicts": _verdicts(arms, kept, runs_ratio),
            "rules": RULES,
            "replicated_units": sorted(replicates),
        }
        out.setdefault("set", plan.set_name)
        out.setdefault("arms", arms)
    return out


def report_inputs(results_dir: str, shape: str) -> dict[str, Any]:
    """The transfer ladder's results of the same shape (which rung they make the cheapest with ρ >= 0.8)."""
    from _common import read_json  # benchmarks/ is on sys.path (runner puts it there)

    name = "mixbench_transfer" + ("" if shape == "gpu" else f"_{shape}")
    return {"transfer": read_json(os.path.join(results_dir, f"{name}.json"), default=None)}


def plot(result: dict[str, Any], path: str) -> None:
    """Per stage: each Olmix arm's gain over natural (first seed; the last stage's mean) and its proxy runs so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(result["domain_sets"].items())
    if not sets:
        return
    fig, axes = plt.subplots(len(sets), 2, figsize=(11, 3.8 * len(sets)), squeeze=False)
    for (set_name, entry), (left, right) in zip(sets, axes):
        stages = entry["stages"]
        for arm in ("recompute", "full", "partial", "auto"):
            gains, runs, total = [], [], 0
            for s in stages:
                nat = s["arms"]["natural"]["mean_test_loss"]
                mine = s["arms"]["olmix" if s["stage"] == 0 else arm]
                total += mine["proxy_runs"]
                runs.append(total)
                gains.append(
                    np.mean(nat) - np.mean(mine["mean_test_loss"]) if nat and mine["mean_test_loss"] else np.nan
                )
            left.plot(range(len(stages)), gains, marker="o", label=arm)
            right.plot(range(len(stages)), runs, marker="o", label=arm)
        labels = ["initial"] + [s["update"]["kind"] for s in stages[1:]]
        for ax in (left, right):
            ax.set_xticks(range(len(stages)), labels, fontsize=8)
            ax.legend(fontsize=7)
        left.axhline(0, color="black", lw=0.7)
        left.set_ylabel("natural − arm, mean test loss (nats)")
        left.set_title(f"{set_name}: gain over natural per update", fontsize=9)
        right.set_ylabel("proxy runs so far")
        right.set_title(f"{set_name}: proxy runs (the first swarm shared)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
