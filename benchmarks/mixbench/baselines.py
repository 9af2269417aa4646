"""natural vs uniform end to end over seeds: the paired difference and the noise floor (protocol rule 1)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import stats
from .common import DATA_DIR, SETS, Shape, domain_set, epochs_per_domain, new_model, run_args, tokenizer
from .runner import Budget, WorkerFile

ARMS = ("natural", "uniform")


@dataclass
class BaselinePlan:
    """natural and uniform, each trained from scratch for the whole run, on every seed (paired by seed)."""

    set_name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    shape: Shape = field(default_factory=Shape)
    domains: tuple[str, ...] = ()  # the set's domains when the units were run (default: SETS[set_name])

    def __post_init__(self):
        if self.set_name not in SETS:
            raise ValueError(f"unknown domain set {self.set_name!r}; known: {sorted(SETS)}.")
        self.domains = tuple(self.domains or SETS[self.set_name])
        self.seeds = tuple(int(s) for s in self.seeds)
        if len(self.seeds) < 2:
            raise ValueError(f"seeds={self.seeds}: a paired difference needs >= 2 seeds (the protocol asks >= 3).")

    def settings(self) -> dict[str, Any]:
        return {"kind": "baselines", **asdict(self)}

    def units(self) -> list[tuple[str, float]]:
        return [(f"{arm}/{seed}", self.shape.steps) for seed in self.seeds for arm in ARMS]


def run_worker(plan: BaselinePlan, keys: list[str], work: str, out: WorkerFile, budget: Budget,
               data_dir: str = DATA_DIR, unpacked: str | None = None) -> None:
    """Train each ``arm/seed`` run in ``keys`` from its seed's init, score it on the test split."""
    from hf_datamix import DataMixTrainer
    from hf_datamix.simulate.scoring import BlockLossScorer

    tok = tokenizer()
    domains = domain_set(plan.set_name, unpacked or work, data_dir)
    for key in keys:
        if not budget.allows(plan.shape.steps):
            print(f"stop: {key} would not end before the deadline ({budget.left:.0f} s left)", flush=True)
            return
        arm, seed = key.split("/")
        started = time.perf_counter()
        trainer = DataMixTrainer(model=new_model(tok, plan.shape, int(seed)), domains=domains, strategy=arm,
                                 args=run_args(plan.shape, os.path.join(work, "runs", key.replace("/", "-")), int(seed)),
                                 processing_class=tok)
        trainer.train()
        test = BlockLossScorer(trainer.eval_blocks, 32, trainer.args.device)(trainer.model)
        weights = trainer.interleaver.weights_at(0).to_dict()
        seconds = time.perf_counter() - started
        out.add(key, {"arm": arm, "seed": int(seed), "weights": weights, "test": test.tolist(),
                      "test_mean": float(np.mean(test)), "seconds": seconds,
                      "final_train_loss": trainer.state.log_history[-1].get("train_loss"),
                      "epochs": epochs_per_domain(trainer, [(0, weights)], plan.shape.steps)})
        budget.observe(plan.shape.steps, seconds)
        print(f"{key}: mean test loss {np.mean(test):.4f} in {seconds:.0f} s", flush=True)


def report(plans_and_units: list[tuple[BaselinePlan, dict[str, Any], dict[str, list]]]) -> dict[str, Any]:
    """The ``mixbench_baselines.json`` body: per set, each arm's per-seed results and natural − uniform."""
    out: dict[str, Any] = {"domain_sets": {}, "complete": bool(plans_and_units)}
    for plan, units, _ in plans_and_units:
        arms = {arm: [units.get(f"{arm}/{seed}") for seed in plan.seeds] for arm in ARMS}
        complete = all(all(runs) for runs in arms.values())
        out["complete"] &= complete
        entry: dict[str, Any] = {"seeds": list(plan.seeds), "settings": plan.settings(), "complete": complete,
                                 "domains": list(plan.domains), "arms": {}}
        for arm, runs in arms.items():
            done = [r for r in runs if r]
            entry["arms"][arm] = {
                "mean_test_loss": [r["test_mean"] for r in done], "test": [r["test"] for r in done],
                "seeds": [r["seed"] for r in done], "weights": done[0]["weights"] if done else None,
                "epochs": [r["epochs"] for r in done], "seconds": [r["seconds"] for r in done],
                "seed_std": float(np.std([r["test_mean"] for r in done], ddof=1)) if len(done) > 1 else None,
            }
        if complete:
            natural, uniform = (entry["arms"][a]["mean_test_loss"] for a in ARMS)
            entry["natural_minus_uniform"] = stats.paired_difference(natural, uniform, seed=0)
        out["domain_sets"][plan.set_name] = entry
    return out
