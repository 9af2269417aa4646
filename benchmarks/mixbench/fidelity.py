"""The oracle sweep and simulator fidelity at decision points (protocol rules 4 and 5).

One run per (domain set, seed) trains on the prefix mixture (uniform, op_mix's published warm-up) and stops
at each decision point D.  There, from θ_D with its optimizer state and LR schedule:

* **oracle**: each of >= 12 mixtures (``design.oracle_mixtures``) is trained for real to the end of
  the run (:class:`~hf_datamix.simulate.branches.TrainerBranches`: the run had it decided that mixture
  at D) and scored on the *test* split;
* **simulators** score the same mixtures on the *decision* split: op_mix's LoRA probes (both
  encodings), LoRA probes from an annealed copy of θ_D, and ``branches`` at the probes' token budget
  and at a quarter of it.

The report ranks each simulator's mean score against the oracle's mean test loss (Spearman, Kendall,
bootstrap intervals over mixtures, top-1 regret, per domain) and gives the headroom: the best of
uniform/natural minus the best oracle mixture.

``planned=True`` (``--planned``; its own store and ``mixbench_fidelity_planned.json``) runs the same
sweep as the library trains by default, with repetition caps planned over the horizon
(``DataMixArguments.plan_caps``): the prefix is planned, and every oracle mixture is fitted to the
horizon at the decision point before it is trained and simulated (each unit records the mixture
requested and the one trained).  Without it mixtures are trained as given and a capped domain runs
dry part-way, as the first units were measured.

``prefix="natural"`` (``--prefix natural``; its own store and ``mixbench_fidelity_natural.json``) trains
the prefix on the natural mixture instead (op_mix's ``warmup_mixture=natural``): where a uniform
prefix has spent the small domains' epochs before the first decision point, this asks whether any
mixture beats natural from a natural prefix, and how well the simulators rank from there.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hf_datamix.proposer import PRIORS, prior_weights

from . import stats
from .common import DATA_DIR, SETS, Shape, domain_set, epochs_per_domain, new_model, run_args, tokenizer
from .design import oracle_mixtures
from .runner import Budget, WorkerFile


def variant_suffix(planned: bool, prefix: str) -> str:
    """What a sweep variant adds to the names of its store and results file: ``_planned``, ``_natural``."""
    return ("_planned" if planned else "") + ("_natural" if prefix == "natural" else "")


SIMULATORS = ("lora", "lora_annealed", "branches", "branches_quarter")
#: Branches of the derived ``calibrated`` simulator (its default, ``calibration_branches``).
CALIBRATION_BRANCHES = 3
#: LoRA probes train on the unwrapped (eager) model: this many times a compiled training step, per step.
_PROBE_STEP_COST = 2.5
#: Prefix mixtures: uniform (op_mix's published warm-up) or natural (``OpMixConfig.warmup_mixture``), the
#: priors the library builds (:func:`hf_datamix.proposer.prior_weights`).
PREFIXES = PRIORS


@dataclass
class FidelityPlan:
    """One fidelity benchmark: a domain set, a seed, the run shape, the decision points, the simulators' budget."""

    set_name: str
    seed: int = 0
    shape: Shape = field(default_factory=Shape)
    points: tuple[float, ...] = (0.2, 0.5)
    probe_fraction: float = 0.03  # each LoRA probe trains this share of the run's steps (at the run's batch)
    anneal_fraction: float = 0.03
    mixtures: int = 12
    domains: tuple[str, ...] = ()  # the set's domains when the units were run (default: SETS[set_name])
    planned: bool = False  # caps planned over the horizon (module docstring)
    prefix: str = "uniform"  # the mixture trained up to the decision points: uniform or natural (module docstring)

    def __post_init__(self):
        if self.set_name not in SETS:
            raise ValueError(f"unknown domain set {self.set_name!r}; known: {sorted(SETS)}.")
        self.domains = tuple(self.domains or SETS[self.set_name])
        self.points = tuple(float(p) for p in self.points)
        if not all(0 < p < 1 for p in self.points):
            raise ValueError(f"decision points {self.points} must be fractions of the run in (0, 1).")
        if self.prefix not in PREFIXES:
            raise ValueError(f"prefix={self.prefix!r}: the prefix mixture is one of {PREFIXES}.")

    @property
    def probe_steps(self) -> int:
        return max(1, round(self.probe_fraction * self.shape.steps))

    @property
    def anneal_steps(self) -> int:
        return max(1, round(self.anneal_fraction * self.shape.steps))

    def branch_steps(self, quarter: bool = False) -> int:
        """Steps per branch at the probes' token budget ((domains + 1) probes), or a quarter of it."""
        steps = (len(self.domains) + 1) * self.probe_steps / self.mixtures
        return max(1, round(steps / 4 if quarter else steps))

    def settings(self) -> dict[str, Any]:
        values = asdict(self)
        if not self.planned:  # the settings of the stores measured before `planned` existed
            del values["planned"]
        if self.prefix == "uniform":  # ... and before `prefix` existed
            del values["prefix"]
        return {
            "kind": "fidelity",
            **values,
            "probe_steps": self.probe_steps,
            "anneal_steps": self.anneal_steps,
            "branch_steps": self.branch_steps(),
            "branch_steps_quarter": self.branch_steps(quarter=True),
        }

    @staticmethod
    def unit_kind(key: str) -> str:
        """``oracle`` or ``sim/<simulator>``: the budget paces each kind by its own seconds per step (a LoRA unit
        compiles its probes, so its steps take longer than an oracle unit's)."""
        kind = key.split("/", 1)[1]
        return "oracle" if kind.startswith("oracle/") else kind

    def units(self) -> list[tuple[str, float]]:
        """``[(key, cost in training steps)]``, in the order a worker runs them."""
        out = []
        for point in self.points:
            rest = self.shape.steps - self.shape.step_at(point)
            out += [(f"{point}/oracle/{i}", rest) for i in range(self.mixtures)]
            probes = (len(self.domains) + 1) * self.probe_steps * _PROBE_STEP_COST
            out += [
                (f"{point}/sim/lora", probes),
                (f"{point}/sim/lora_annealed", probes + self.anneal_steps),
                (f"{point}/sim/branches", self.mixtures * self.branch_steps()),
                (f"{point}/sim/branches_quarter", self.mixtures * self.branch_steps(quarter=True)),
            ]
        return out


# ---------------------------------------------------------------------------------- one worker
def prefix_mixture(plan: FidelityPlan, context):
    """The mixture the sweep's run trains up to its decision points (``plan.prefix``), which the simulators
    are given as the run's current mixture."""
    from hf_datamix import Mixture

    names = context.domains.names
    return Mixture.from_array(names, prior_weights(plan.prefix, context, names, setting="prefix"))


def drop_unreachable(pending: dict[float, list[str]], step: int, plan: FidelityPlan, budget: Budget, log) -> None:
    """Remove from ``pending`` (keys by decision point) the units that would not end before the deadline once
    the prefix steps from ``step`` to their point are trained too, so a worker does not train a prefix
    toward a point where none of its units fits."""
    costs = dict(plan.units())
    for point, keys in pending.items():
        gap = max(0, plan.shape.step_at(point) - step)
        for key in [k for k in keys if not budget.allows(costs[k] + gap, kind=plan.unit_kind(k))]:
            log(f"skip: {key} (~{gap} prefix steps first) would not end before the deadline")
            keys.remove(key)


def run_worker(
    plan: FidelityPlan,
    keys: list[str],
    work: str,
    out: WorkerFile,
    budget: Budget,
    data_dir: str = DATA_DIR,
    unpacked: str | None = None,
) -> None:
    """Train the prefix (``plan.prefix``) and run ``keys`` at their decision points, within ``budget``."""
    from transformers import TrainerCallback

    from hf_datamix import DataMixTrainer, Mixture, Strategy
    from hf_datamix.simulate.branches import Branches, TrainerBranches
    from hf_datamix.simulate.probes import LoRAProbes
    from hf_datamix.simulate.scoring import BlockLossScorer

    shape = plan.shape
    pending = {point: [k for k in keys if k.startswith(f"{point}/")] for point in plan.points}
    steps = {shape.step_at(p): p for p in plan.points}

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')} {budget.left:6.0f}s left] {message}", flush=True)

    class Harness(Strategy):
        name = "mixbench_sweep"

        def initial_mixture(self, context):
            return prefix_mixture(plan, context)

        def next_decision_step(self, step, max_steps):
            due = [s for s, p in steps.items() if s >= step and pending[p]]
            return min(due) if due else None

        def decide(self, context):
            trainer = context.trainer
            point = steps[context.step]
            mixtures = oracle_mixtures(trainer.domains.names, context.token_counts, plan.mixtures, plan.seed)
            if plan.planned:  # what the run would train from here had it decided each mixture
                start = context.step * trainer.samples_per_step
                mixtures = [
                    {
                        **m,
                        "requested": m["weights"],
                        "weights": dict(trainer.mixing.plan_mixture(Mixture(m["weights"]), start)[0]),
                    }
                    for m in mixtures
                ]
            for key in list(pending[point]):
                cost = dict(plan.units())[key]
                if not budget.allows(cost, kind=plan.unit_kind(key)):  # a smaller unit may still fit
                    log(f"skip: {key} (~{cost:.0f} steps) would not end before the deadline")
                    pending[point].remove(key)
                    continue
                started = time.perf_counter()
                kind, name = key.split("/")[1:]
                result = (
                    oracle_unit(context, mixtures[int(name)])
                    if kind == "oracle"
                    else simulator_unit(context, name, mixtures)
                )
                seconds = time.perf_counter() - started
                result["seconds"] = seconds
                budget.observe(cost, seconds, plan.unit_kind(key))
                out.add(key, result)
                pending[point].remove(key)
                log(
                    f"{key} done in {seconds:.1f} s"
                    + (f": mean test loss {result['test_mean']:.4f}" if kind == "oracle" else "")
                )
            drop_unreachable(pending, context.step, plan, budget, log)
            if not any(pending.values()):
                trainer.control.should_training_stop = True  # nothing left for this worker past here

    def oracle_unit(context, mixture):
        trainer = context.trainer
        test = BlockLossScorer(trainer.eval_blocks, 32, trainer.args.device)
        decision = trainer.decision_scorer(batch_size=32)
        left = shape.steps - context.step
        with TrainerBranches(trainer) as branches:
            losses, tokens = branches.train(mixture["weights"], left)
            scores = branches.score({"test": test, "decision": decision})
        prefix = dict(trainer.interleaver.weights_at(0))
        return {
            "name": mixture["name"],
            "weights": mixture["weights"],
            "test": scores["test"],
            **({"requested": mixture["requested"]} if "requested" in mixture else {}),
            "decision": scores["decision"],
            "test_mean": float(np.mean(scores["test"])),
            "final_train_loss": float(np.mean(losses[-10:])),
            "tokens": tokens,
            "epochs": epochs_per_domain(trainer, [(0, prefix), (context.step, mixture["weights"])], shape.steps),
        }

    def simulator_unit(context, name, mixtures):
        trainer = context.trainer
        candidates = [m["weights"] for m in mixtures]
        before = dict(trainer.ledger.tokens_by_kind)
        current = prefix_mixture(plan, context)  # what the run trains at the decision point: the simulators' own
        if name.startswith("lora"):
            anneal = plan.anneal_steps if name == "lora_annealed" else 0
            probes = LoRAProbes(
                probe_steps=plan.probe_steps,
                probe_batch_size=shape.batch_size,
                probe_bf16=trainer.args.bf16,
                eval_blocks=shape.decision_blocks,
                eval_batch_size=32,
                anneal_steps=anneal,
                seed=plan.seed,
            )
            simulation = probes.simulate(context, current, candidates)
            scores = {e: v["Y"] for e, v in simulation.record["encodings"].items()} if simulation else None
            extra = {
                "probes": simulation.record.get("probes") if simulation else None,
                "anneal": simulation.record.get("anneal") if simulation else None,
            }
        else:
            steps_each = plan.branch_steps(quarter=name == "branches_quarter")
            simulation = Branches(
                branch_steps=steps_each, eval_blocks=shape.decision_blocks, eval_batch_size=32
            ).simulate(context, current, candidates)
            scores, extra = {"decision": simulation.Y.tolist()}, {"steps_per_branch": steps_each}
        tokens = {
            k: v - before.get(k, 0.0) for k, v in trainer.ledger.tokens_by_kind.items() if v != before.get(k, 0.0)
        }
        return {"scores": scores, "tokens": tokens, **extra}

    class StepClock(TrainerCallback):
        """Seconds per training step of the prefix: the budget's estimate until a unit has run."""

        def __init__(self):
            self.last = None

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if self.last is not None and state.global_step > 5 and budget.per_cost is None:
                budget.observe(1, now - self.last)
            self.last = now
            if budget.left < 0:
                control.should_training_stop = True

    if not keys:
        return
    tok = tokenizer()
    trainer = DataMixTrainer(
        model=new_model(tok, shape, plan.seed),
        args=run_args(shape, os.path.join(work, "run"), plan.seed, plan_caps=plan.planned),
        domains=domain_set(plan.set_name, unpacked or work, data_dir),
        strategy=Harness(),
        processing_class=tok,
        callbacks=[StepClock()],
    )
    log(f"worker: {len(keys)} units: {keys}")
    trainer.train()


# ---------------------------------------------------------------------------------- the report
def report(plans_and_units: list[tuple[FidelityPlan, dict[str, Any], dict[str, list]]]) -> dict[str, Any]:
    """The ``mixbench_fidelity.json`` body: per set and decision point, the oracle, headroom and fidelity,
    and the run-to-run differences of units that were run twice (``replicates``)."""
    out: dict[str, Any] = {"domain_sets": {}, "complete": bool(plans_and_units)}
    for plan, units, replicates in plans_and_units:
        entry = out["domain_sets"].setdefault(
            plan.set_name, {"seed": plan.seed, "settings": plan.settings(), "decision_points": {}}
        )
        for point in plan.points:
            oracle = [units.get(f"{point}/oracle/{i}") for i in range(plan.mixtures)]
            sims = {name: units.get(f"{point}/sim/{name}") for name in SIMULATORS}
            complete = all(oracle) and all(sims.values())
            out["complete"] &= complete
            entry["decision_points"][str(point)] = _point_report(plan, point, oracle, sims, complete)
        entry["replicates"] = _replicates(units, replicates)
    return out


def _replicates(units: dict[str, Any], replicates: dict[str, list]) -> dict[str, Any]:
    """Oracle units run again from scratch (same seed and code, another GPU run): how far apart they land."""
    rows = []
    for key, again in sorted(replicates.items()):
        if "/oracle/" not in key:
            continue
        first = units[key]
        for other in again:
            rows.append(
                {
                    "unit": key,
                    "name": first["name"],
                    "test_mean": [first["test_mean"], other["test_mean"]],
                    "difference": other["test_mean"] - first["test_mean"],
                    "per_domain_difference": (np.subtract(other["test"], first["test"])).tolist(),
                }
            )
    diffs = np.abs([r["difference"] for r in rows])
    return {
        "oracle": rows,
        "mean_abs_difference": float(diffs.mean()) if rows else None,
        "max_abs_difference": float(diffs.max()) if rows else None,
        "note": "the same unit run twice (same seed, same code, each call retraining the prefix): GPU kernels "
        "are not bitwise deterministic, so this is the run-to-run noise of a single oracle run",
    }


def _point_report(plan, point, oracle, sims, complete) -> dict[str, Any]:
    done = [o for o in oracle if o]
    result: dict[str, Any] = {
        "step": plan.shape.step_at(point),
        "complete": complete,
        "oracle": done,
        "oracle_done": len(done),
        "oracle_planned": len(oracle),
        "simulators": {},
    }
    if len(done) < len(oracle):
        return result
    true = np.array([o["test_mean"] for o in oracle])
    per_domain = np.array([o["test"] for o in oracle])
    by_name = {o["name"]: o["test_mean"] for o in oracle}
    best_baseline = min(by_name["uniform"], by_name["natural"])
    spread = float(true.max() - true.min())
    result.update(
        {
            "headroom": float(best_baseline - true.min()),
            "headroom_relative": float((best_baseline - true.min()) / best_baseline),
            "best_baseline": "uniform" if by_name["uniform"] <= by_name["natural"] else "natural",
            "best_mixture": oracle[int(np.argmin(true))]["name"],
            "true_spread": spread,
        }
    )

    def agreement(Y, tokens, seconds):
        out = stats.rank_agreement(Y.mean(axis=1), true, seed=plan.seed)
        out["per_domain_spearman"] = {
            d: stats.rank_agreement(Y[:, j], per_domain[:, j], seed=plan.seed)["spearman"]
            for j, d in enumerate(plan.domains)
        }
        out.update(tokens=tokens, seconds=seconds, scores_mean=Y.mean(axis=1).tolist())
        return out

    for name, unit in sims.items():
        if not unit or not unit.get("scores"):
            continue
        for variant, scores in unit["scores"].items():
            Y = np.asarray(scores, dtype=float)
            label = name if variant == "decision" else f"{name}:{variant}"
            result["simulators"][label] = found = agreement(Y, unit["tokens"], unit.get("seconds"))
            if name.startswith("lora"):
                other = np.asarray(unit["scores"]["old" if variant == "spread" else "spread"], dtype=float)
                found["encoding_inconsistency"] = (
                    float(abs(Y[0].mean() - other[0].mean()) / spread) if spread else None
                )
                # Signed, in nats, over every mixture: > 0 when this encoding scores the same data worse (the
                # spread encoding interpolates more probes' deltas; op_mix's law then favours the "old" vertex).
                gap = Y.mean(axis=1) - other.mean(axis=1)
                found["encoding_gap"] = {"mean": float(gap.mean()), "min": float(gap.min()), "max": float(gap.max())}
    lora, branches = sims.get("lora"), sims.get("branches")
    if lora and branches and lora.get("scores") and branches.get("scores"):
        result["simulators"]["calibrated"] = _derived_calibrated(plan, lora, branches, agreement)
    return result


def _derived_calibrated(plan, lora, branches, agreement) -> dict[str, Any]:
    """``calibrated`` (hf_datamix.simulate.calibrated) computed from the ``lora`` and ``branches`` units of the
    same point: the spread-encoded probe scores corrected per target by the affine fit to the branch scores of
    the candidates that span the probes' mean score; those candidates keep their branch scores."""
    from hf_datamix.simulate.calibrated import corrected_scores, spanning

    L = np.asarray(lora["scores"]["spread"], dtype=float)
    B = np.asarray(branches["scores"]["decision"], dtype=float)
    chosen = spanning(L.mean(axis=1), CALIBRATION_BRANCHES)
    Y, fit = corrected_scores(L, B[chosen], chosen)
    share = len(chosen) / len(B)
    tokens = dict(lora["tokens"])
    for kind, count in branches["tokens"].items():
        tokens[kind] = tokens.get(kind, 0.0) + share * count
    out = agreement(Y, tokens, (lora.get("seconds") or 0.0) + share * (branches.get("seconds") or 0.0))
    out["derived"] = (
        f"from the lora (spread) and branches units of this point: {len(chosen)} of the branches "
        f"({plan.branch_steps()} steps each) calibrate the probes; no run of its own, tokens and "
        "seconds are the probes' plus those branches' share"
    )
    out["calibration"] = {"candidates": chosen, "fit": fit.to_dict(list(plan.domains))}
    return out


def plot(result: dict[str, Any], path: str) -> None:
    """True (oracle test) vs simulated mean loss per mixture, one panel per set and decision point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(result["domain_sets"].items()) + [
        (f"{name} (pilot)", entry) for name, entry in result.get("pilot", {}).get("domain_sets", {}).items()
    ]
    panels = [(s, p, r) for s, e in sets for p, r in e["decision_points"].items() if r.get("simulators")]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (set_name, point, r) in zip(axes[0], panels):
        true = np.array([o["test_mean"] for o in r["oracle"]])
        for label, sim in r["simulators"].items():
            sim_scores = np.array(sim["scores_mean"])
            # Simulators' levels and spreads differ from the truth's: compare orderings on one scale.
            scaled = (sim_scores - sim_scores.mean()) / (sim_scores.std() or 1.0) * true.std() + true.mean()
            ax.scatter(true, scaled, s=18, label=f"{label} (ρ={sim['spearman']:.2f})")
        ax.plot([true.min(), true.max()], [true.min(), true.max()], color="grey", lw=0.8)
        ax.set_xlabel("oracle: mean test loss at the end of the run (nats)")
        ax.set_ylabel("simulated mean loss (standardised)")
        ax.set_title(f"{set_name}, decision at {float(point):.0%} (headroom {r['headroom']:.4f})", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
