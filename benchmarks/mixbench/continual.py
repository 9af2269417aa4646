"""Continual midtraining quality (issue 18, second measurement): a base, then stages that each add a domain.

The set's stage plan (:data:`STAGE_PLANS`, the one place that names the base domains, the base mixture and
the order of the added ones) makes stage 0 (the base) and stages 1..K.  Per seed one **base** is trained
from that seed's init for the shape's whole run (``Shape.steps``: >= 5 tokens per parameter at the gpu
shape) on the base domains, then every **arm** (:data:`ARMS`, the one table of arms) continues from it
through the K stages of ``stage_steps`` steps each with ``hf_datamix.continual.run_continual``, its
strategy choosing each stage's mixture.  Seeds are paired: within a seed every arm starts from the same base
weights and uses the same data seed.

Arms (their definitions are recorded in the store and the results, so an arm can be changed later by
editing :data:`ARMS`; a changed definition is refused with its old units, as in ``quality``):

* ``op_mix``: the library's op_mix with its continual schedule (LoRA probes at each stage's start on the
  line between 90 % old and 90 % new, ``alpha_points`` interpolations), ``prior_space="coordinates"``,
  the reference code's continual KL prior (half the previous mixture, half the new domain), and the trust
  region (from that prior towards the law's proposal as far as the law's held-out Spearman allows);
* ``retrain``: the reference retrains from the base on all domains so far at every stage (the library's
  ``retrain`` strategy: uniform over them, for the steps of every stage so far).  Only its last stage
  bears on the final loss, so the benchmark trains that one run (from the base, on all K + 1 stage-K
  domains, for K × ``stage_steps`` steps, the learning-rate schedule as ``run_continual`` gives the
  library's retrain at stage K) and counts as its FLOPs those of every stage's retrain, Σ_k k ×
  ``stage_steps`` steps: the measured FLOPs × (K + 1) / 2 (``measured_flops`` keeps what was run);
* ``replay``: the reference definition, the library's ``replay`` (90 % new, the old 10 % split equally);
* ``sequential``: 100 % new data at each stage;
* ``fixed_50_50``: half new, half old split equally (``replay`` with ``new_share=0.5``).

Every arm trains with the library's default ``plan_caps`` (each mixture fitted to what the domains'
repetition caps sustain until the stage ends).  Test losses are the trainer's evaluation on the test split
after every stage (``run_continual``'s), over the stage's domains; that scoring is the benchmark's, not the
arm's, so its FLOPs are kept out of the arm's ledger (``scoring_flops``).  The base's FLOPs are shared by
all arms and reported apart (``base``).

Units: ``base/<seed>`` and ``<arm>/<seed>``.  An arm needs its seed's base weights, kept under the scratch
folder (``continual-bases/``); workers share the units through a :class:`~.runner.Board`.  On a machine
without them (a later call on a fresh machine) the base is trained again from the same init and data order
before its arms; the new base's test losses go to the store's replicates (run-to-run noise) and every arm
unit records the test losses of the base it started from, so a report can tell which base each arm had.

The report (``opmix_quality_continual.json``, :mod:`.continual_report`) defines forgetting and the verdicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from .common import DATA_DIR, SETS, domain_set, new_model, run_args, tokenizer
from .continual_report import plot, report  # noqa: F401  (this kind's report)
from .quality import QualityPlan, _arm, _decisions
from .runner import Board, Budget, WorkerFile, run_ready


@dataclass(frozen=True)
class StagePlan:
    """The base domains and the mixture the base trains on, then the domain each stage adds, in order."""

    base: tuple[str, ...]
    added: tuple[str, ...]
    base_strategy: str = "natural"


#: The stage plan of every continual set (the domains: ``common.SETS``).  The base trains on the natural mix
#: so that neither base domain exceeds its repetition cap (uniform would take python_stdlib past 4 epochs);
#: scripture, the scarce domain, comes in the middle so that two later stages can make it forgotten.
STAGE_PLANS: dict[str, StagePlan] = {
    "continual": StagePlan(
        base=("python_stdlib", "gcide"), added=("wordnet", "man_de", "scripture", "arithmetic", "python_docs")
    ),
}
#: Steps per stage by shape name (the issue asks >= 600 on the GPU).
STAGE_STEPS = {"gpu": 600, "tiny": 4}

#: The arms: strategy, settings, ``plan_caps`` (module docstring).
ARMS: dict[str, dict[str, Any]] = {
    # The trust region is the part of op_mix_design (the arm the pretraining benchmark's two stages selected and
    # confirmed on skewed, session 15) that applies on a continual stage's old-new line: there the coordinates
    # already identify the data mixture, so law_space="data" and the covering design change nothing.  Set before
    # any continual run on the GPU.
    "op_mix": _arm("op_mix", prior_space="coordinates", trust_region=True),
    "retrain": _arm("retrain"),
    "replay": _arm("replay", new_share=0.9, old_split="equal"),
    "sequential": _arm("sequential"),
    "fixed_50_50": _arm("replay", new_share=0.5, old_split="equal"),
}
#: What a retrain arm is trained and counted as (recorded in the store and the results).
RETRAIN_RULE = (
    "one run from the base on every domain of the last stage for K x stage_steps steps (the library's retrain at "
    "stage K); FLOPs = those of the retrains of every stage, sum_k k x stage_steps steps = the measured run's "
    "FLOPs x (K + 1) / 2"
)
#: A decision's LoRA-probe step costs about this many compiled training steps (eager, adapters; as quality's).
PROBE_STEP_COST = 2.5
#: Assumed for the dry run's GPU estimate: a compiled 20M step on an H200, the overhead of one trainer
#: (build, compile, save, test pass) and of one unit (model build, data).
SECONDS_PER_STEP, SECONDS_PER_TRAINER, SECONDS_PER_UNIT = 0.055, 15.0, 20.0
POLL_S = 2.0


@dataclass
class ContinualPlan(QualityPlan):
    """Every arm from its seed's base through the set's stages, on paired seeds (arms: :data:`ARMS`)."""

    stage_steps: int = STAGE_STEPS["gpu"]
    kind: ClassVar[str] = "continual"
    table: ClassVar[dict[str, dict[str, Any]]] = ARMS

    def __post_init__(self):
        if self.set_name not in STAGE_PLANS:
            raise ValueError(
                f"--set {self.set_name}: no continual stage plan; sets with one: {sorted(STAGE_PLANS)} "
                "(add one to continual.STAGE_PLANS)."
            )
        self.stage_plan = STAGE_PLANS[self.set_name]
        order = list(self.stage_plan.base) + list(self.stage_plan.added)
        if sorted(order) != sorted(SETS[self.set_name]) or len(set(order)) != len(order):
            raise ValueError(
                f"continual.STAGE_PLANS[{self.set_name!r}] names {order}, but the set's domains are "
                f"{list(SETS[self.set_name])}: name each domain once, in the base or as an added one."
            )
        self.domains = tuple(self.domains or order)
        if len({int(s) for s in self.seeds}) != len(tuple(self.seeds)):
            raise ValueError(f"--seeds {','.join(map(str, self.seeds))}: give distinct seeds, e.g. --seeds 0,1,2.")
        if not isinstance(self.stage_steps, int) or self.stage_steps < 1:
            raise ValueError(f"stage_steps={self.stage_steps!r}: give >= 1 step per stage (the issue asks >= 600).")
        super().__post_init__()

    @property
    def stages(self) -> int:
        return len(self.stage_plan.added)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "stage_steps": self.stage_steps,
            "stage_plan": asdict(self.stage_plan),
            "retrain": RETRAIN_RULE,
        }

    def restarts(self, arm: str) -> bool:
        """True for a strategy that retrains from the base at every stage (``retrain``)."""
        return bool(getattr(self.strategy(arm), "restart_from_base", False))

    def check(self) -> None:
        """Build every arm's strategy and the base's (nothing is trained): a bad setting fails here, naming it."""
        from hf_datamix.strategies.registry import create_strategy

        super().check()
        create_strategy(self.stage_plan.base_strategy, {})

    # -- costs (steps of the shape's model) ------------------------------------------------------
    def cost(self, key: str) -> float:
        name = key.rsplit("/", 1)[0]
        if name == "base":
            return float(self.shape.steps)
        steps = self.stages * self.stage_steps
        if self.definitions[name]["strategy"] == "op_mix":  # two probes of 25 % of a stage at every stage
            steps += self.stages * 2 * max(1, round(0.25 * self.stage_steps)) * PROBE_STEP_COST
        return float(steps)

    def base_keys(self) -> list[str]:
        return [f"base/{seed}" for seed in self.seeds]

    def unit_keys(self) -> list[str]:
        return self.base_keys() + [f"{arm}/{seed}" for seed in self.seeds for arm in self.arms]

    def units(self) -> list[tuple[str, float]]:
        return [(key, self.cost(key)) for key in self.unit_keys()]

    def estimate(self, pending: list[str] | None = None) -> dict[str, Any]:
        """GPU seconds of the ``pending`` units (default: all): their steps at :data:`SECONDS_PER_STEP`, plus the
        overheads per trainer and unit; a call on a fresh machine also trains again the base of each seed whose
        arms it goes on with (``rebase_s_per_call``: at most, every seed whose arms remain)."""
        keys = self.unit_keys() if pending is None else pending
        steps = sum(self.cost(k) for k in keys)
        trainers = sum(1 if k.startswith("base/") or self.restarts(k.rsplit("/", 1)[0]) else self.stages for k in keys)
        seeds_left = {k.rsplit("/", 1)[1] for k in keys if not k.startswith("base/")}
        return {
            "units": len(keys),
            "steps": steps,
            "gpu_seconds": steps * SECONDS_PER_STEP + trainers * SECONDS_PER_TRAINER + len(keys) * SECONDS_PER_UNIT,
            "rebase_s_per_call": len(seeds_left) * (self.shape.steps * SECONDS_PER_STEP + SECONDS_PER_UNIT),
            "assumed": {
                "seconds_per_step": SECONDS_PER_STEP,
                "seconds_per_trainer": SECONDS_PER_TRAINER,
                "seconds_per_unit": SECONDS_PER_UNIT,
                "probe_step_cost": PROBE_STEP_COST,
            },
        }


# ---------------------------------------------------------------------------------- one worker
#: main hands a worker of this kind every pending unit and the store's finished ones (arms need their base).
DEPENDENT_UNITS = True


def _scored_trainer(scoring):
    """A DataMixTrainer whose evaluation (the benchmark's test pass) adds its FLOPs to ``scoring``, not to the
    run's ledger (the arm's compute)."""
    from hf_datamix import DataMixTrainer

    class Scored(DataMixTrainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            if eval_dataset is not None:  # one domain of the outer call
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            before = self.ledger.state_dict()
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            for kind, flops in self.ledger.by_kind.items():
                tokens = self.ledger.tokens_by_kind.get(kind, 0.0) - before["tokens_by_kind"].get(kind, 0.0)
                if flops > before["by_kind"].get(kind, 0.0):
                    scoring.add(kind, flops - before["by_kind"].get(kind, 0.0), tokens)
            self.ledger.load_state_dict(before)
            return metrics

    return Scored


class Worker:
    """The set's domains, the stages, and the units' work on them."""

    def __init__(self, plan: ContinualPlan, work: str, data_dir: str, unpacked: str | None):
        from hf_datamix.continual import plan_stages

        self.plan, self.work, self.tok = plan, work, tokenizer()
        self.domains = domain_set(plan.set_name, unpacked or work, data_dir)
        sp = plan.stage_plan
        self.stages = plan_stages(self.domains, list(sp.base), [[d] for d in sp.added], plan.stage_steps)
        # Keyed by the base's settings: weights of another shape or plan in the same scratch are not used.
        described = json.dumps([asdict(plan.shape), asdict(sp)], sort_keys=True).encode()
        tag = f"{plan.set_name}-{hashlib.sha1(described).hexdigest()[:12]}"
        self.bases = os.path.join(unpacked or work, "continual-bases", tag)

    def check(self) -> None:
        """``hf_datamix.continual.check_plan`` for every arm on the real stages (files, strategies' settings)."""
        from hf_datamix.continual import check_plan

        for arm in self.plan.arms:
            try:
                check_plan(self.stages, self.plan.strategy(arm))
            except ValueError as error:
                raise ValueError(f"arm {arm!r} cannot run the stage plan: {error}") from None

    def weights(self, seed: int) -> str:
        return os.path.join(self.bases, str(seed))

    def has_weights(self, seed: int) -> bool:
        return os.path.isfile(os.path.join(self.weights(seed), "base.json"))

    def base_unit(self, seed: int) -> dict[str, Any]:
        """Train seed's base from its init on the base domains (the base mixture); save it; its test losses."""
        from hf_datamix import DataMixTrainer
        from hf_datamix.strategies.registry import create_strategy

        plan, started = self.plan, time.perf_counter()
        folder = os.path.join(self.work, "runs", f"base-{seed}")
        trainer = DataMixTrainer(
            model=new_model(self.tok, plan.shape, seed),
            domains=self.domains.select(list(plan.stage_plan.base)),
            strategy=create_strategy(plan.stage_plan.base_strategy, {}),
            args=run_args(plan.shape, folder, seed, plan_caps=True),
            processing_class=self.tok,
        )
        trainer.train()
        ledger = trainer.ledger.to_dict()
        metrics = trainer.evaluate()
        test = {d: float(metrics[f"eval_{d}_loss"]) for d in plan.stage_plan.base}
        value = {
            "seed": seed,
            "domains": list(plan.stage_plan.base),
            "strategy": plan.stage_plan.base_strategy,
            "mixture": trainer.interleaver.weights_at(0).to_dict(),
            "test": test,
            "test_mean": float(np.mean(list(test.values()))),
            "flops": ledger["by_kind"],
            "total_flops": ledger["total_flops"],
            "tokens": ledger["tokens_by_kind"],
            "decisions": _decisions(trainer.history),
        }
        tmp = self.weights(seed) + f".tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.model_for_next_trainer(tmp)
        with open(os.path.join(tmp, "base.json"), "w", encoding="utf-8") as handle:
            json.dump({"test": test, "test_mean": value["test_mean"]}, handle)
        shutil.rmtree(self.weights(seed), ignore_errors=True)
        os.makedirs(self.bases, exist_ok=True)
        os.replace(tmp, self.weights(seed))
        shutil.rmtree(folder, ignore_errors=True)
        return {**value, "seconds": time.perf_counter() - started}

    def arm_unit(self, arm: str, seed: int) -> dict[str, Any]:
        """``arm`` from seed's base through the stages; per stage its mixture and test losses; FLOPs by kind."""
        from _common import decision_records  # benchmarks/ is on sys.path (runner puts it there)
        from transformers import AutoModelForCausalLM

        from hf_datamix import ComputeLedger
        from hf_datamix.continual import Stage, run_continual

        plan, shape, started = self.plan, self.plan.shape, time.perf_counter()
        with open(os.path.join(self.weights(seed), "base.json"), encoding="utf-8") as handle:
            base = json.load(handle)
        model = AutoModelForCausalLM.from_pretrained(self.weights(seed))
        folder = os.path.join(self.work, "runs", f"{arm}-{seed}")
        shutil.rmtree(folder, ignore_errors=True)
        args = run_args(
            shape,
            folder,
            seed,
            max_steps=plan.stage_steps,
            lr_scheduler_kwargs={
                "num_decay_steps": int(round(shape.decay_fraction * plan.stage_steps)),
                "decay_type": "linear",
            },
            logging_steps=max(1, plan.stage_steps // 20),
            plan_caps=plan.definitions[arm]["plan_caps"],
        )
        stages, factor = self.stages, 1.0
        if plan.restarts(arm):  # retrain: its last stage only (RETRAIN_RULE)
            last, k = self.stages[-1], len(self.stages)
            stages = [Stage(last.index, last.domains, last.update, k * plan.stage_steps)]
            factor = (k + 1) / 2
        scoring = ComputeLedger()
        out = run_continual(
            model,
            self.tok,
            args,
            stages,
            plan.strategy(arm),
            report=lambda text: None,
            trainer_class=_scored_trainer(scoring),
        )
        measured = out["compute"]
        per_stage = [
            {
                "stage": s["stage"],
                "domains": s["domains"],
                "added": s["update"]["affected"] if s.get("update") else [],
                "mixture": s["mixture"],
                "test": s["eval_loss"],
                "test_mean": float(np.mean(list(s["eval_loss"].values()))),
                "flops_so_far": s["compute"]["total_flops"],
            }
            for s in out["stages"]
        ]
        final = per_stage[-1]["test"]
        decisions = _decisions(out["history"])
        shutil.rmtree(folder, ignore_errors=True)
        return {
            "arm": arm,
            "seed": seed,
            "stages": per_stage,
            "test": {d: float(final[d]) for d in plan.domains},
            "test_mean": float(np.mean([final[d] for d in plan.domains])),
            "flops": {k: v * factor for k, v in measured["by_kind"].items()},
            "total_flops": measured["total_flops"] * factor,
            "tokens": {k: v * factor for k, v in measured["tokens_by_kind"].items()},
            "measured_flops": measured["total_flops"],
            "flops_factor": factor,
            "scoring_flops": scoring.to_dict()["total_flops"],
            "decisions": decisions,
            # the run's folder is removed below: the decisions' full records stay in the store only
            "decision_records": decision_records(out["history"]),
            "decision_seconds": sum(d.get("seconds") or 0.0 for d in decisions if d["kind"] in ("decision", "kept")),
            "base": base,
            "seconds": time.perf_counter() - started,
        }


def _ready(plan: ContinualPlan, worker: Worker, wanted: set[str], results: dict[str, Any]) -> list[tuple]:
    """``[(key, cost, job, claim)]`` of the units whose inputs are here, seed by seed: a seed's arms once its base
    weights are on this machine, else its base (a base whose unit is done but whose weights this machine lacks is
    trained again, claimed as ``weights/<seed>``).  A seed's arms come before the next seed's base: a call on a
    fresh machine trains again the base of every seed it touches (a 1400-step run: 77 s on the H200), so a worker
    finishes a seed before it starts another; a second worker, finding a seed's arms busy, takes the next base."""
    ready = []
    for seed in plan.seeds:
        key = f"base/{seed}"
        needed = [f"{arm}/{seed}" for arm in plan.arms if f"{arm}/{seed}" in wanted and f"{arm}/{seed}" not in results]
        if key in wanted and key not in results:
            ready.append((key, plan.cost(key), lambda seed=seed: worker.base_unit(seed), key))
        elif needed and not worker.has_weights(seed):
            ready.append((key, plan.cost(key), lambda seed=seed: worker.base_unit(seed), f"weights/{seed}"))
        elif needed:
            ready += [
                (k, plan.cost(k), lambda k=k: worker.arm_unit(k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1])), k)
                for k in needed
            ]
    return ready


def run_worker(
    plan: ContinualPlan,
    keys: list[str],
    work: str,
    out: WorkerFile,
    budget: Budget,
    data_dir: str = DATA_DIR,
    unpacked: str | None = None,
    done: dict | None = None,
) -> None:
    """Take ready units until every one of ``keys`` is done or none fits the budget (units: module docstring)."""
    worker = Worker(plan, work, data_dir, unpacked)
    wanted = set(keys)
    run_ready(
        Board(os.path.dirname(out.path), done),
        lambda results: _ready(plan, worker, wanted, results),
        out,
        budget,
        lambda key, value: f"mean test loss {value['test_mean']:.4f}",
        POLL_S,
    )


def prepare(plan: ContinualPlan, scratch: str, data_dir: str) -> None:
    """Check the stage plan for every arm on the staged data (before any step is trained)."""
    try:
        Worker(plan, os.path.join(scratch, "prepare-continual"), data_dir, scratch).check()
    except ValueError as error:
        raise SystemExit(f"mixbench continual: {error}") from None
