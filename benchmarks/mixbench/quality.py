"""Mixing quality end to end (issue 18): arms trained from scratch over paired seeds, scored on the test split.

Each unit ``arm/seed`` trains the shape's model from its seed's init for the whole run with
DataMixTrainer under the arm's strategy and settings (:data:`ARMS`, the one table of arms), then scores
the test split per domain, and records the compute by kind (the trainer's ledger), the mixtures in
force over time (its ``mixtures.json`` history, compacted) and the seconds.  ``baselines`` is this
runner restricted to natural and uniform as they first ran (:class:`~.baselines.BaselinePlan`).

The store's settings hold the definition (strategy, settings, ``plan_caps``) of every arm run so far,
resolved for the shape: an arm added later joins the store, but an arm whose definition changed in
:data:`ARMS` is refused together with its old units (use another ``--store``, or rename the arm).
Seeds added later join too.  Every arm's settings are checked (:meth:`QualityPlan.check`: the arm's
strategy is built with the library's factory) before anything is trained.

Arms that train the same run up to one decision and differ only in how its simulation becomes a mixture
(:func:`.shared_decision.shared_decision_groups`: op_mix, op_mix_prior, op_mix_design and op_mix_canonical) are one unit of work per
seed, ``op_mix+op_mix_prior+op_mix_design/<seed>`` (:mod:`.shared_decision`): the warm-up and the probes
run once and every arm continues from the decision-time model, optimizer, schedule and data stream.  The
store still holds one ``arm/seed`` record each, as the arm alone would have produced it (its compute is the
warm-up, its decision and its continuation), with ``shared_decision_with`` (the arms that forked from the
same decision-time model θ_D) and ``group`` (the group's actual compute and seconds).  A group cut short
keeps its finished arms; the others form the next call's unit.  A forked reference (``uniform_forked``,
``uniform_forked_late``) joins the group whose warm-up it shares and keeps that warm-up's mixture from θ_D to
the end, so the report's ``forked`` differences measure a decision at the noise of a continuation.

The report (``opmix_quality_pretrain.json`` + PNG) is :mod:`.quality_report`'s; this module holds the arms,
the plan, the two-stage design and the held-out set (:data:`SELECTION_ARMS`, :data:`HELD_OUT_SETS`) and the worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Container, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from .common import DATA_DIR, SETS, Shape, domain_set, new_model, run_args, tokenizer
from .runner import Budget, WorkerFile, as_stored, differences
from .shared_decision import planned_decisions, shared_decision_groups


@dataclass(frozen=True)
class RunFraction:
    """A setting given as a fraction of the run's steps (resolved for the shape: ``round(fraction · steps)``, >= 1)."""

    fraction: float

    def resolve(self, shape: Shape) -> int:
        return max(1, int(round(self.fraction * shape.steps)))


def _arm(strategy: str, plan_caps: bool = True, **settings: Any) -> dict[str, Any]:
    return {"strategy": strategy, "settings": settings, "plan_caps": plan_caps}


def _forked(**settings: Any) -> dict[str, Any]:
    """A forked reference: op_mix's warm-up with ``settings``, then, at its decision point, the mixture in force
    kept to the end (no simulation, no decision; ``keep``).  It joins the shared-decision group of the op_mix arms
    with the same warm-up (:func:`.shared_decision.shared_decision_groups`), so it continues from their θ_D."""
    return {**_arm("op_mix", **settings), "keep": True}


#: What ``op_mix_late_calibrated`` and its forked reference share (the calibrated simulator has no design settings:
#: its candidates and encoding are part of what it trains, so the reference must carry them to share its θ_D).
_LATE_CALIBRATED = dict(
    warmup_fraction=0.5,
    simulator="calibrated",
    candidate_design="canonical",
    encoding="old",
    branch_steps=RunFraction(0.1),
)

#: The arms: strategy, its settings, and ``plan_caps`` (repetition caps planned over the horizon: the
#: library default; ``False`` trains a mixture as given until a domain runs dry, as baselines first ran).
ARMS: dict[str, dict[str, Any]] = {
    "natural": _arm("natural"),
    "uniform": _arm("uniform"),
    "natural_unplanned": _arm("natural", plan_caps=False),
    "uniform_unplanned": _arm("uniform", plan_caps=False),
    "op_mix": _arm("op_mix"),  # as published: op_mix's defaults
    "op_mix_prior": _arm("op_mix", prior_space="coordinates"),  # the reference's KL prior over the coordinates
    "op_mix_design": _arm("op_mix", law_space="data", candidate_design="covering", trust_region=True),
    # Each candidate's data mixture scored at one preimage: spreading a mixture over more probes scores it worse
    # (mixbench_fidelity.json's encoding_gap, +0.006…+0.020 nats), which draws over the probes mix into the law;
    # "old": the encoding that ranked the oracle better at 3 of 4 fidelity points (LoRA rows), chosen before any run.
    "op_mix_canonical": _arm(
        "op_mix", law_space="data", candidate_design="canonical", encoding="old", trust_region=True
    ),
    "op_mix_branches": _arm("op_mix", simulator="branches"),
    "op_mix_calibrated": _arm("op_mix", simulator="calibrated"),
    "op_mix_late": _arm("op_mix", warmup_fraction=0.5),
    # The fixes of op_mix_design and op_mix_canonical decided at 50 %: where fidelity --set skewed measured headroom
    # (0.017 nats; 0 at 20 %, op_mix's default) and every simulator ranked the oracle positively; op_mix_late as
    # published decides in the probes' coordinates.  Defined before any run (session 10); they share op_mix_late's
    # warm-up and probes, so each costs one continuation.
    "op_mix_late_design": _arm(
        "op_mix", warmup_fraction=0.5, law_space="data", candidate_design="covering", trust_region=True
    ),
    "op_mix_late_canonical": _arm(
        "op_mix",
        warmup_fraction=0.5,
        law_space="data",
        candidate_design="canonical",
        encoding="old",
        trust_region=True,
    ),
    # No law: the best simulated candidate within the caps.  In the decisions recorded on skewed (seeds 0-1) the
    # law's held-out error (0.03-0.04 nats a target) exceeded the candidates' spread near the mixture in force and
    # its proposals were predicted worse than the best simulated candidate, while at 50 % the fidelity sweep's LoRA
    # ranking had top-1 regret 0.  Defined before any late run (session 10); shares op_mix_late's probes.
    "op_mix_late_best": _arm(
        "op_mix",
        warmup_fraction=0.5,
        law_space="data",
        candidate_design="canonical",
        encoding="old",
        proposal="best_candidate",
    ),
    # Beyond the paper: warm up on the natural mixture, KL prior natural (a uniform warm-up spends the small
    # domains' epochs before the decision: on `five`, natural after a uniform 20 % ends 0.36 nats above
    # natural from scratch: mixbench_fidelity.json's oracle vs mixbench_baselines.json).
    "op_mix_natural": _arm("op_mix", warmup_mixture="natural", prior="natural"),
    "op_mix_redecide": _arm("op_mix", redecide_every=RunFraction(0.25)),
    # The re-decision the issue asks for, on the configuration skewed's first stage chose (session 13, before any
    # run of it): op_mix_design deciding at 20 %, then again at 50 % and 80 % from the model as it is then (three
    # decisions, ≈ 125 s each at 20M: one unit fits a call).  op_mix_redecide re-decides as published, and op_mix as
    # published kept the warm-up mixture at every decision on skewed.
    "op_mix_design_redecide": _arm(
        "op_mix", law_space="data", candidate_design="covering", trust_region=True, redecide_every=RunFraction(0.3)
    ),
    # Forked references (session 11, after the first stage, before the second): the uniform warm-up continued
    # unchanged from the op_mix arms' own θ_D.  Two runs of one seed from scratch differ by GPU nondeterminism
    # amplified over the whole run (run_to_run_noise: sd 0.0076 of a difference), while continuations forked from
    # one θ_D differed by an sd of 0.0002-0.0005 across seeds (shared_decision on skewed): against these an arm's
    # decision is judged at the noise of its own continuation (``forked``), beside the from-scratch verdicts.
    "uniform_forked": _forked(),
    "uniform_forked_late": _forked(warmup_fraction=0.5),
    # The simulator fix the late group points to (session 11, defined before any run): op_mix_late_best followed the
    # probes' best candidate and lost 0.018 nats on every seed because the probes foresaw a third of wordnet's gain
    # and none of python_stdlib's and scripture's losses over the 700 steps left.  ``calibrated`` maps each target's
    # probe scores onto 3 real branches of 10 % of the run (per target a + b·lora), so the targets' scales come
    # from real training; the proposal is op_mix_late_design's (law on the data shares, trust region), whose forked
    # gain over keeping the mixture was -0.0025 nats.  Prediction: its gain over its own forked reference is larger.
    "op_mix_late_calibrated": _arm("op_mix", **_LATE_CALIBRATED, law_space="data", trust_region=True),
    "uniform_forked_late_calibrated": _forked(**_LATE_CALIBRATED),
}
#: The references of the paired differences, and the baselines the protocol's "best baseline" is chosen from.
REFERENCES = ("natural", "uniform")
BASELINES = ("natural", "uniform", "natural_unplanned", "uniform_unplanned")
#: A decision costs about this many training steps per step of the run (LoRA probes: (k + 1) probes of
#: 10 % of the run, eager, ≈ 2.5× a compiled step); only orders and budgets the units.
DECISION_COST = 1.5


def resolve(definition: Mapping[str, Any], shape: Shape) -> dict[str, Any]:
    """An arm's definition with its run-relative settings resolved for ``shape`` (what the store records)."""
    settings = {k: v.resolve(shape) if isinstance(v, RunFraction) else v for k, v in definition["settings"].items()}
    out = {"strategy": definition["strategy"], "settings": settings, "plan_caps": bool(definition["plan_caps"])}
    return {**out, "keep": True} if definition.get("keep") else out


def is_forked_reference(definition: Mapping[str, Any]) -> bool:
    """Whether an arm is a forked reference (:func:`_forked`): its decision point keeps the mixture in force."""
    return bool(definition.get("keep"))


@dataclass
class QualityPlan:
    """Arms trained from scratch for the whole run on every seed (paired by seed: init and data order)."""

    set_name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    shape: Shape = field(default_factory=Shape)
    domains: tuple[str, ...] = ()  # the set's domains when the units were run (default: SETS[set_name])
    #: names from :data:`ARMS` (default: all), or ``{name: definition}`` as read back from a store
    arms: Any = ()
    kind: ClassVar[str] = "quality"
    #: settings that may grow from call to call (the store checks the entries they share)
    extensible: ClassVar[tuple[str, ...]] = ("seeds", "arms")
    #: the table the arms are named from
    table: ClassVar[dict[str, dict[str, Any]]] = ARMS

    def __post_init__(self):
        if self.set_name not in SETS:
            raise ValueError(f"unknown domain set {self.set_name!r}; known: {sorted(SETS)}.")
        self.domains = tuple(self.domains or SETS[self.set_name])
        self.seeds = tuple(int(s) for s in self.seeds)
        if len(self.seeds) < 2:
            raise ValueError(f"seeds={self.seeds}: a paired difference needs >= 2 seeds (the protocol asks >= 3).")
        if isinstance(self.arms, Mapping):
            self.definitions = {name: dict(d) for name, d in self.arms.items()}
        else:
            names = tuple(self.arms) or tuple(self.table)
            unknown = [n for n in names if n not in self.table]
            if unknown:
                raise ValueError(f"unknown arm(s) {unknown}; known arms: {list(self.table)}.")
            self.definitions = {name: resolve(self.table[name], self.shape) for name in names}
        self.arms = tuple(self.definitions)

    def settings(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "set_name": self.set_name,
            "seeds": list(self.seeds),
            "shape": asdict(self.shape),
            "domains": list(self.domains),
            "arms": self.definitions,
        }

    def strategy(self, arm: str):
        """A fresh instance of ``arm``'s strategy with its settings."""
        from hf_datamix.strategies.registry import create_strategy

        definition = self.definitions[arm]
        return create_strategy(definition["strategy"], dict(definition["settings"]))

    def check(self) -> None:
        """Build every arm's strategy (nothing is trained): a bad setting fails here, naming the arm."""
        for arm, definition in self.definitions.items():
            try:
                self.strategy(arm)
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(
                    f"arm {arm!r} ({definition['strategy']} with settings {definition['settings']}) "
                    f"cannot run: {error}"
                ) from None

    def decision_steps(self, arm: str) -> list[int]:
        """The steps at which ``arm``'s strategy plans to decide in a pretraining run of this shape."""
        return planned_decisions(self.strategy(arm), self.shape.steps)

    def groups(self) -> list[tuple[str, ...]]:
        """The arms grouped by what they can share (:func:`shared_decision_groups`)."""
        return shared_decision_groups(self.definitions, self.shape)

    def cost(self, arms: str | tuple[str, ...]) -> float:
        """Estimated cost in training steps of one unit (orders the units, paces the budget): an arm alone, or arms
        sharing their warm-up and decision (the warm-up and the decision once, then a continuation each)."""
        arms = (arms,) if isinstance(arms, str) else tuple(arms)
        steps, decisions = self.shape.steps, self.decision_steps(arms[0])
        start = decisions[0] if decisions else 0
        simulated = not all(is_forked_reference(self.definitions[a]) for a in arms)  # references simulate nothing
        return start + steps * DECISION_COST * len(decisions) * simulated + len(arms) * (steps - start)

    def unit_keys(self) -> list[str]:
        """The ``arm/seed`` records the store holds when every unit is done."""
        return [f"{arm}/{seed}" for seed in self.seeds for arm in self.arms]

    def units(self, done: Container[str] = ()) -> list[tuple[str, float]]:
        """``[(key, cost)]`` of the work left when the records ``done`` are finished: per seed, each group of
        :meth:`groups` over its arms not done, keyed ``arm+arm/seed`` (an arm alone: ``arm/seed``)."""
        out, orphans = [], set(self.orphaned_references(done))
        for seed in self.seeds:
            for group in self.groups():
                todo = tuple(arm for arm in group if f"{arm}/{seed}" not in done and f"{arm}/{seed}" not in orphans)
                if todo:
                    out.append((f"{'+'.join(todo)}/{seed}", self.cost(todo)))
        return out

    def orphaned_references(self, done: Container[str]) -> list[str]:
        """The forked references left out of :meth:`units`: those whose group's deciding arms are all done on the
        seed without them (a call's deadline came between continuations).  Run alone, a reference would not
        fork from those arms' θ_D — it would be its warm-up mixture trained from scratch, a second ``uniform``
        run — so only the whole group run again (its arms' records removed from the store) can give it.  The
        groups are formed with the arms ``done`` holds on the seed as well as the plan's: a call asking for the
        reference alone must not run it apart from the arms it references."""
        if not any(is_forked_reference(d) for d in self.definitions.values()):
            return []
        out = []
        for seed in self.seeds:
            ran = {key.rsplit("/", 1)[0] for key in done if key.rsplit("/", 1)[-1] == str(seed)}
            definitions = {
                **{a: resolve(self.table[a], self.shape) for a in sorted(ran) if a in self.table},
                **self.definitions,
            }
            for group in shared_decision_groups(definitions, self.shape):
                deciding = [a for a in group if not is_forked_reference(definitions[a])]
                if deciding and all(f"{a}/{seed}" in done for a in deciding):
                    out += [
                        f"{a}/{seed}"
                        for a in group
                        if a in self.definitions and a not in deciding and f"{a}/{seed}" not in done
                    ]
        return out


# ---------------------------------------------------------------------------------- one worker
#: What a unit's ``decisions`` keep of each ``mixtures.json`` record (copied to the results file); the
#: decisions' full records (candidates, scores, law fit, proposal) go to ``decision_records``, in the store only.
_RECORD_KEYS = (
    "step",
    "kind",
    "weights",
    "seconds",
    "capped_for_horizon",
    "schedule",
    "domain",
    "sample",
    "epochs",
    "action",
)


def _decisions(history: list[dict]) -> list[dict]:
    """The mixtures in force over time: each record of the run, compacted (the proposal's prediction kept)."""
    out = []
    for record in history:
        entry = {k: record[k] for k in _RECORD_KEYS if k in record}
        proposal = record.get("proposal")
        if proposal:
            entry["proposal"] = {k: proposal.get(k) for k in ("predicted", "status", "fallback_reason")}
        out.append(entry)
    return out


def _epochs(trainer, steps: int, stream=None) -> dict[str, float]:
    """Epochs over each domain's training blocks drawn in ``steps`` steps of ``stream`` (default: the run's own
    stream, caps included)."""
    stream = stream or trainer.interleaver
    drawn = stream.drawn(steps * trainer.samples_per_step)
    return {
        name: drawn[name] / (trainer.sources[name].num_blocks * stream.segments_per_block) for name in stream.domains
    }


def new_trainer(plan: QualityPlan, arm: str, seed: int, folder: str, domains, tok, strategy):
    """The DataMixTrainer ``arm`` trains with on ``seed`` (the shape's model from the seed's init), under ``strategy``."""
    from hf_datamix import DataMixTrainer

    return DataMixTrainer(
        model=new_model(tok, plan.shape, seed),
        domains=domains,
        strategy=strategy,
        args=run_args(plan.shape, folder, seed, plan_caps=plan.definitions[arm]["plan_caps"]),
        processing_class=tok,
    )


def score_test(trainer) -> np.ndarray:
    """The test split's loss per domain of the trainer's model as it is (not counted: not the arm's compute)."""
    from hf_datamix.simulate.scoring import BlockLossScorer

    return BlockLossScorer(trainer.eval_blocks, 32, trainer.args.device)(trainer.model)


def unit_record(
    arm: str, seed: int, weights, test, seconds: float, train_loss, epochs, ledger: Mapping, history: list[dict]
) -> dict[str, Any]:
    """One ``arm/seed`` record of the store: its test losses, initial weights, compute (a ledger's ``to_dict()``),
    its run's ``mixtures.json`` records (``history``) compacted (:func:`_decisions`) and the decisions' in full,
    epochs and seconds."""
    from _common import decision_records  # benchmarks/ is on sys.path (runner puts it there)

    decisions = _decisions(history)
    return {
        "arm": arm,
        "seed": int(seed),
        "weights": weights,
        "test": np.asarray(test).tolist(),
        "test_mean": float(np.mean(test)),
        "seconds": seconds,
        "final_train_loss": train_loss,
        "epochs": epochs,
        "flops": ledger["by_kind"],
        "total_flops": ledger["total_flops"],
        "tokens": ledger["tokens_by_kind"],
        "decisions": decisions,
        # The run's folder is scratch on the device: without these, why a decision went where it did is lost.
        "decision_records": decision_records(history),
        "decision_seconds": sum(d.get("seconds") or 0.0 for d in decisions if d["kind"] in ("decision", "kept")),
    }


def run_worker(
    plan: QualityPlan,
    keys: list[str],
    work: str,
    out: WorkerFile,
    budget: Budget,
    data_dir: str = DATA_DIR,
    unpacked: str | None = None,
) -> None:
    """Run each unit in ``keys``: ``arm/seed`` trains the arm from its seed's init under its strategy and scores the
    test split; ``arm+arm/seed`` does so for arms sharing their warm-up and decision (:mod:`.shared_decision`)."""
    from .shared_decision import run_group

    tok = tokenizer()
    domains = domain_set(plan.set_name, unpacked or work, data_dir)
    for key in keys:
        names, seed = key.rsplit("/", 1)
        arms, seed = tuple(names.split("+")), int(seed)
        # A group needs only its warm-up, decision and first continuation to fit: it checks each further
        # continuation itself and leaves the arms it cannot finish to the next call.  A unit that does not fit
        # is skipped, not the end of the worker: a cheaper one after it may still fit (a 77-s natural run once
        # waited for the next call behind a 4-arm group with 133 s left).
        cost = plan.cost(arms[:1])
        if not budget.allows(cost):
            print(f"skip: {key} would not end before the deadline ({budget.left:.0f} s left)", flush=True)
            continue
        folder = os.path.join(work, "runs", key.replace("/", "-"))
        if len(arms) > 1 or is_forked_reference(plan.definitions[arms[0]]):
            run_group(plan, arms, seed, folder, out, budget, domains, tok)
            continue
        started = time.perf_counter()
        trainer = new_trainer(plan, names, seed, folder, domains, tok, plan.strategy(names))
        trainer.train()
        ledger = trainer.ledger.to_dict()  # before the test pass: scoring the benchmark is not the arm's compute
        test = score_test(trainer)
        seconds = time.perf_counter() - started
        record = unit_record(
            names,
            seed,
            trainer.interleaver.weights_at(0).to_dict(),
            test,
            seconds,
            trainer.state.log_history[-1].get("train_loss"),
            _epochs(trainer, plan.shape.steps),
            ledger,
            trainer.history,
        )
        out.add(key, record)
        budget.observe(cost, seconds)
        print(f"{key}: mean test loss {np.mean(test):.4f} in {seconds:.0f} s", flush=True)


def adopt_baselines(plan: QualityPlan, store, path: str) -> int:
    """Copy into ``store`` the units the baselines store at ``path`` (that of the same set and shape) already
    holds for this plan's ``natural_unplanned`` / ``uniform_unplanned`` arms; returns how many.

    ``mixbench baselines`` runs exactly those arms (same definition, shape, domains and seeds: checked), so a
    quality run that asks for them would train them again for nothing.  An adopted unit keeps its measurement
    and names the file it came from (``adopted_from``); the calls that measured it join this store's calls.
    Units are adopted only from a store whose every call records the training tokens per domain it trained on,
    the same in all of them and the same as this store's calls record (a set staged again can differ: five's
    ``man_de`` did); the staged data are then checked against them as against this store's own units.
    """
    from _common import read_json  # benchmarks/ is on sys.path (runner puts it there)

    from .baselines import ARMS as BASELINE_ARMS
    from .baselines import BaselinePlan

    data = read_json(path, default=None)
    if not data:
        return 0
    same = BaselinePlan(plan.set_name, seeds=data["settings"]["seeds"], shape=plan.shape, domains=plan.domains)
    if differences(as_stored(same.settings()), data["settings"], extensible=("seeds",)):
        return 0  # another set, shape or domains: not the same units
    candidates = {
        f"{arm}/{seed}": data["units"][f"{base}/{seed}"]
        for base, arm in BASELINE_ARMS.items()
        if arm in plan.definitions and plan.definitions[arm] == same.definitions[base]
        for seed in plan.seeds
        if f"{base}/{seed}" in data["units"] and f"{arm}/{seed}" not in store.units
    }
    if not candidates:
        return 0
    theirs = [call.get("training_tokens") for call in data["calls"]]
    mine = [call["training_tokens"] for call in store.calls if call.get("training_tokens")]
    if not theirs or None in theirs or any(t != theirs[0] for t in theirs) or (mine and mine[0] != theirs[0]):
        print(
            f"not adopting {len(candidates)} unit(s) from {os.path.basename(path)}: its calls do not all record the "
            "training tokens per domain they trained on, or record other data than this store's units",
            flush=True,
        )
        return 0
    for key, unit in candidates.items():
        store.units[key] = {**unit, "adopted_from": os.path.basename(path)}
    store.calls.extend(c for c in data["calls"] if c not in store.calls)
    return len(candidates)


# ---------------------------------------------------------------------------------- the two-stage design
#: A two-stage design, fixed in session 10 before the first stage was complete, because one run's noise
#: (``run_to_run_noise``: a paired difference's sd >= 0.0076 nats on skewed) makes 3 seeds resolve no less than
#: ~0.019 nats, more than the oracle headroom measured anywhere: every arm of :data:`SELECTION_ARMS` runs on
#: :data:`SELECTION_SEEDS`; the one with the lowest mean there (ties: table order) runs with natural and uniform on
#: :data:`CONFIRMATION_SEEDS`, and its ``confirmation`` verdicts are judged on those fresh seeds alone, so choosing
#: it on the first seeds does not bias them.  op_mix_natural is left out: its warm-up and prior are natural, which
#: with caps planned trails uniform by 0.11-0.14 nats on skewed, and its seed 0 kept natural (1.773).
SELECTION_ARMS = (
    "op_mix",
    "op_mix_prior",
    "op_mix_design",
    "op_mix_canonical",
    "op_mix_late",
    "op_mix_late_design",
    "op_mix_late_canonical",
    "op_mix_late_best",
)
SELECTION_SEEDS = (0, 1, 2)
#: Eight: at the noise floor 8 seeds resolve 0.0064 nats, 5 only 0.0095 (half the largest headroom: 0.0085).
#: Natural needs fewer (it trails uniform by > 0.1 nats): the report judges against whichever seeds each ran.
CONFIRMATION_SEEDS = tuple(range(3, 11))


#: Held-out domain sets (session 12, fixed after skewed's first stage chose op_mix_design and before any quality
#: run on these sets): the arm skewed's selection seeds chose is judged here on :data:`HELD_OUT_SEEDS`, beside
#: natural, uniform, op_mix as published and the arm's forked reference.  Its domains were not used to choose the
#: arm, so the verdicts are not biased by the choice.  Five seeds, read when all five are in (no early look):
#: at the same-mixture noise (sd 0.0103 of a difference on skewed) five seeds resolve ≈ 0.013 nats, three 0.026.
#: ``even`` joined 2026-12-05 by the replacement rule pre-registered 2026-12-04 (mixbench README): its planned sweep
#: measured headroom 0.78 % at 20 % (≥ 0.5 %), before any op_mix run on it; the same plan runs there unchanged.
HELD_OUT_SETS = ("five", "even")
HELD_OUT_ARM = "op_mix_design"
HELD_OUT_ARMS = ("natural", "uniform", "op_mix", HELD_OUT_ARM, "uniform_forked")
HELD_OUT_SEEDS = (0, 1, 2, 3, 4)
