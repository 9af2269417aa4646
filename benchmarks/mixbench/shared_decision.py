"""One warm-up and one simulation for quality arms that differ only in how a decision's simulation becomes a mixture.

The arms of a group (:func:`shared_decision_groups`) train, on one seed, the same run up to their
one decision: same init, data order, warm-up mixture and simulator.  :func:`run_group` trains that warm-up
once; at the decision it simulates once (the simulator's ``shared``: the LoRA probes trained once, each arm's
candidate design scored on them, a design two arms share scored once); then for each arm it proposes from
that simulation (the strategy's ``propose``: its prior, law, trust region) and continues from the
decision-time model, optimizer state, LR schedule and data stream to the end of the run under the arm's
mixture (:class:`~hf_datamix.simulate.branches.TrainerBranches`; the mixture applies from where the run's
controller applies a decision, the step after next), and scores the test split: the run the arm trains alone.

Each arm's record is the one the arm alone stores (:func:`.quality.unit_record`): the warm-up's decision
records, its decision's and those of the domains that run dry in its continuation; its epochs; and, as its
compute and seconds, the warm-up, the shared simulation, its own design's scoring and proposal and its
continuation — what it costs alone, so arms compare fairly.  A forked reference of the group (``keep`` in its
definition, :func:`.quality.is_forked_reference`) simulates nothing: it continues the mixture in force (a ``kept``
record) and its record pays the warm-up and its continuation only; a group of references alone trains no probes.
``shared_decision_with`` names the arms that forked from the same decision-time model, ``group`` what the group's run did cost.  Every finished arm is
stored at once (with the group's fields of the arms finished so far), so a group cut short keeps them.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import Shape
from .runner import Budget, WorkerFile


if TYPE_CHECKING:  # pragma: no cover
    from .quality import QualityPlan


def planned_decisions(strategy, steps: int) -> list[int]:
    """The steps at which ``strategy`` plans to decide in a pretraining run of ``steps`` steps."""
    found = []
    nxt = strategy.next_decision_step(0, steps)
    while nxt is not None and nxt < steps:
        found.append(int(nxt))
        nxt = strategy.next_decision_step(nxt + 1, steps)
    return found


def shared_decision_groups(definitions: Mapping[str, Mapping[str, Any]], shape: Shape) -> list[tuple[str, ...]]:
    """The arms of ``definitions`` (``{name: resolved definition}``) grouped by what they can share in a run of ``shape``.

    Arms share their warm-up and their decision's simulation when each is op_mix deciding once (no
    ``redecide_every``: op_mix's pretraining decision simulates around the mixture in force, then proposes),
    trains with the same ``plan_caps``, and their settings agree but for the proposer's
    (``ProposerConfig.proposal_settings``: prior, law, trust region, ...) and the simulator's candidate design
    (its ``design_settings``): they then train the same warm-up (same seed, init and data order) and the same
    probes.  Every other arm is a group of its own.  Groups come in the order of their first arm.
    """
    from hf_datamix.proposer import ProposerConfig
    from hf_datamix.strategies.op_mix import OpMixStrategy
    from hf_datamix.strategies.registry import create_strategy

    groups: dict[Any, list[str]] = {}
    for name, definition in definitions.items():
        strategy = create_strategy(definition["strategy"], dict(definition["settings"]))
        key: Any = name
        if isinstance(strategy, OpMixStrategy) and len(planned_decisions(strategy, shape.steps)) == 1:
            free = {*ProposerConfig.proposal_settings(), *type(strategy.simulator).design_settings}
            fixed = {k: v for k, v in strategy.settings().items() if k not in free}
            key = (strategy.name, bool(definition["plan_caps"]), json.dumps(fixed, sort_keys=True, default=str))
        groups.setdefault(key, []).append(name)
    return [tuple(arms) for arms in groups.values()]


def _design(strategy) -> dict[str, Any]:
    """An arm's candidate design: the values of its simulator's ``design_settings``."""
    simulator = strategy.simulator
    return {name: getattr(simulator.config, name) for name in type(simulator).design_settings}


def _loss_sum(trainer) -> float | None:
    """The sum of the training losses of the steps done so far (Trainer's final ``train_loss`` is their mean);
    None where this transformers release keeps them elsewhere."""
    logged, pending = getattr(trainer, "_total_loss_scalar", None), getattr(trainer, "_tr_loss", None)
    return None if logged is None or pending is None else float(logged) + float(pending.item())


def _exhausted(trainer, stream, step: int, reported: int) -> list[dict]:
    """The ``exhausted`` records the run's controller writes on ``stream`` from step ``step`` to the end: after
    every step s, the domains that ran dry before sample (s + 1)·samples_per_step (``reported`` of them were)."""
    out, per_step = [], trainer.samples_per_step
    for s in range(step, trainer.state.max_steps + 1):
        events = stream.exhaustion_events((s + 1) * per_step)
        weights = stream.weights_at((s + 1) * per_step)
        out += [trainer.mixing.record(weights, s, "exhausted", **e.to_dict()) for e in events[reported:]]
        reported = len(events)
    return out


def _simulate(lead, designs: Mapping[str, Mapping[str, Any]], context):
    """One simulation per design (``{key: design settings}``) sharing what ``lead``'s simulator trains: the ledger
    and seconds of the shared part, and ``{key: (simulation, ledger of its scoring, seconds)}``."""
    trainer, out = context.trainer, {}
    before, started = trainer.ledger.state_dict(), time.perf_counter()
    # op_mix's pretraining decision simulates around the mixture in force
    with lead.simulator.shared(context, context.mixture) as simulate:
        shared = (trainer.ledger.since(before), time.perf_counter() - started)
        for key, design in designs.items():
            mark, design_started = trainer.ledger.state_dict(), time.perf_counter()
            simulation = simulate(**design)
            out[key] = (simulation, trainer.ledger.since(mark), time.perf_counter() - design_started)
    return shared, out


def run_group(
    plan: QualityPlan, arms: tuple[str, ...], seed: int, folder: str, out: WorkerFile, budget: Budget, domains, tok
) -> None:
    """Train ``arms``' common warm-up once on ``seed``, simulate once at their decision, and continue each arm from
    there under its own decision to the end of the run; store each arm's record as it finishes (module docstring)."""
    from transformers import TrainerCallback

    from hf_datamix import ComputeLedger, Strategy
    from hf_datamix.compute import write_json_atomic
    from hf_datamix.constants import MIXTURES_FILE
    from hf_datamix.simulate.branches import TrainerBranches

    from .quality import _epochs, is_forked_reference, new_trainer, score_test, unit_record

    started = time.perf_counter()
    strategies = {arm: plan.strategy(arm) for arm in arms}
    lead = strategies[arms[0]]
    # forked references keep the mixture in force at the decision: they need no simulation
    deciding = [arm for arm in arms if not is_forked_reference(plan.definitions[arm])]
    unit = f"{'+'.join(arms)}/{seed}"
    done: dict[str, dict] = {}

    def fork(context) -> None:
        trainer, step = context.trainer, context.step
        rest, from_sample = trainer.state.max_steps - step, (step + 1) * trainer.samples_per_step
        history = [dict(r) for r in context.history]  # the warm-up's records: every arm's
        warmup, warmup_loss = trainer.ledger.state_dict(), _loss_sum(trainer)
        warmup_seconds = time.perf_counter() - started
        # A training rate for the continuations' checks, on a fresh call too.  Timed from the end of the first
        # step: the trainer's setup and compilation before it once made a 1120-step continuation look twice
        # as long as it was, and a group that had paid for its decision stopped before its first arm.
        if first_step.at is not None and step > 1:
            budget.observe(step - 1, time.perf_counter() - first_step.at)
        else:
            budget.observe(step, warmup_seconds)
        designs = {arm: _design(strategies[arm]) for arm in deciding}
        keys = {arm: json.dumps(design, sort_keys=True) for arm, design in designs.items()}
        nothing = (ComputeLedger(), 0.0)
        (shared, shared_seconds), simulations = (
            _simulate(lead, {keys[a]: designs[a] for a in deciding}, context) if deciding else (nothing, {})
        )
        for arm in arms:
            if not budget.allows(rest):
                print(f"stop: {arm}/{seed}'s continuation would not end before the deadline", flush=True)
                return
            simulated = arm in keys
            simulation, scoring, scoring_seconds = simulations[keys[arm]] if simulated else (None, *nothing)
            own_shared, own_shared_seconds = (shared, shared_seconds) if simulated else nothing
            with TrainerBranches(trainer, kind="train") as branch:
                arm_started = time.perf_counter()
                decision = None if simulation is None else strategies[arm].propose(context, copy.deepcopy(simulation))
                seconds = own_shared_seconds + scoring_seconds + time.perf_counter() - arm_started
                mixture, record = trainer.mixing.decision_record(decision, context.mixture, step, from_sample, seconds)
                before = trainer.ledger.state_dict()
                continued = time.perf_counter()
                losses, _ = branch.train(mixture, rest, from_sample=from_sample)
                budget.observe(rest, time.perf_counter() - continued)
                continuation = trainer.ledger.since(before)
                test = score_test(trainer)
            stream = trainer.branch_stream(mixture, from_sample=from_sample)
            reported = sum(r["kind"] == "exhausted" for r in history)
            mine = [{**r, "settings": strategies[arm].settings()} if r["kind"] == "initial" else r for r in history]
            records = [*mine, record, *_exhausted(trainer, stream, step, reported)]
            # the full records (law fit, candidates, scores) stay in the run's folder, as an arm's own run keeps them
            write_json_atomic(os.path.join(folder, arm, MIXTURES_FILE), records)
            alone = ComputeLedger(**warmup).merge(own_shared).merge(scoring).merge(continuation)
            done[arm] = unit_record(
                arm,
                seed,
                trainer.interleaver.weights_at(0).to_dict(),
                test,
                warmup_seconds + own_shared_seconds + scoring_seconds + time.perf_counter() - arm_started,
                None if warmup_loss is None else (warmup_loss + sum(losses)) / trainer.state.max_steps,
                _epochs(trainer, trainer.state.max_steps, stream),
                alone.to_dict(),
                records,
            )
            group = {
                "unit": unit,
                "arms": list(done),
                "flops": dict(trainer.ledger.by_kind),
                "total_flops": trainer.ledger.total_flops,
                "tokens": dict(trainer.ledger.tokens_by_kind),
                "seconds": time.perf_counter() - started,
            }
            for name, entry in done.items():  # the arms finished so far forked from this one θ_D
                entry.update(shared_decision_with=[a for a in done if a != name], group=group)
                out.add(f"{name}/{seed}", entry)
            print(f"{arm}/{seed}: mean test loss {np.mean(test):.4f} (decision shared in {unit})", flush=True)

    class Fork(Strategy):
        """The arms' common schedule up to their decision, then :func:`fork` (the run stops there)."""

        name = lead.name

        def check(self, domains):
            for strategy in strategies.values():
                strategy.check(domains)

        def initial_mixture(self, context):
            # every arm's strategy starts as in its own run (op_mix's schedule mode); their warm-ups agree
            return [strategy.initial_mixture(context) for strategy in strategies.values()][0]

        def next_decision_step(self, step, max_steps):
            return lead.next_decision_step(step, max_steps)

        def runs_on_every_process(self, trainer):
            return lead.runs_on_every_process(trainer)

        def settings(self):
            return lead.settings()

        def decide(self, context):
            fork(context)
            context.trainer.control.should_training_stop = True  # every arm went on in its own branch
            return None

    class FirstStep(TrainerCallback):
        """Remembers when the first optimizer step ended (``at``, ``time.perf_counter()``)."""

        at: float | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.at = time.perf_counter()

    first_step = FirstStep()
    trainer = new_trainer(plan, arms[0], seed, folder, domains, tok, Fork())
    trainer.add_callback(first_step)
    trainer.train()
    if done:
        budget.observe(plan.cost(tuple(done)), time.perf_counter() - started)
