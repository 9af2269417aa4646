"""MixingController: decision points, the broadcast, the records and output files, and the mixing state.

The trainers (:class:`~hf_datamix.DataMixTrainer`, :class:`~hf_datamix.DataMixSFTTrainer`) provide
the data, evaluation and logging; this ``TrainerCallback`` runs the mixing: it asks the strategy for
the initial mixture and for decisions at the points it announces, broadcasts each decision so every
rank applies the same mixture, plans it over the horizon (repetition caps), records it in
``mixtures.json``, counts training in the compute ledger, and saves and restores the mixing state
(interleaver, strategy, history, ledger, a strategy's learner) with each checkpoint.

Timing of a decision: a decision taken after optimizer step ``t`` applies from the first sample of
step ``t + 2`` on every rank (step ``t + 1``'s first micro-batch is already loaded by accelerate's
one-batch look-ahead when step ``t`` ends).  A decision at step 0 applies from the first sample.
DataLoader workers are held at the decision point until the decision is published, so a
prefetched batch never carries stale weights.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from .checkpoints import check_resume
from .compute import ComputeLedger, non_embedding_parameters, write_json_atomic
from .constants import MIXTURE_FILE, MIXTURES_FILE, STATE_FILE
from .horizon import fit_to_horizon
from .mixture import Mixture
from .strategies.base import Decision, DecisionContext, Strategy
from .tracking import decision_scalars


if TYPE_CHECKING:  # pragma: no cover
    from .domains import DomainSet, DomainUpdate

logger = logging.getLogger(__name__)

#: Reads back the decision line each process logs (``--log_level_replica info``) in
#: :meth:`MixingController.run_decision`: rank, processes, stage, step and the mixture's repr.
DECISION_LOG = re.compile(r"Process (\d+)/(\d+), stage (\d+) step (\d+): new mixture (Mixture\(.*?\))")


class MixingController(TrainerCallback):
    """Runs a strategy inside a trainer's training loop (see the module docstring).

    Args:
        trainer: the trainer whose data, evaluation and logging it uses (a ``DataMixMixin`` subclass).
        args: the trainer's arguments (:class:`~hf_datamix.DataMixArguments`).
        strategy: the :class:`~hf_datamix.Strategy`.
        stage, update, previous_mixture: position in a continual run.
        history, ledger: shared across the stages of a continual run (new ones by default).
        step_offset: steps of earlier stages, so ``mixtures.json`` steps are global.
        init_mixture: a mixture to start from instead of the strategy's.
        save_total_limit: checkpoints kept; older ones are deleted once a new one is complete.
    """

    def __init__(
        self,
        trainer,
        args,
        strategy: Strategy,
        *,
        stage: int = 0,
        update: DomainUpdate | None = None,
        previous_mixture: Mixture | None = None,
        history: list | None = None,
        ledger: ComputeLedger | None = None,
        step_offset: int = 0,
        init_mixture: Mixture | None = None,
        save_total_limit: int | None = None,
    ):
        self.trainer, self.args, self.strategy = trainer, args, strategy
        self.stage, self.update, self.previous_mixture = stage, update, previous_mixture
        self.history = history if history is not None else []
        self.ledger = ledger if ledger is not None else ComputeLedger()
        self.step_offset, self.init_mixture, self.save_total_limit = step_offset, init_mixture, save_total_limit
        #: Where ``mixtures.json`` and ``compute.json`` are kept up to date (a continual run: its root folder).
        self.records_dir = args.output_dir
        self.pending: int | None = None
        self._reported_exhaustion = 0

    # -- the mixtures ------------------------------------------------------------------------------
    def initial_mixture(self, domains: DomainSet) -> Mixture:
        """The mixture the stream starts from: the init mixture, else the strategy's."""
        context = self.context(step=0, max_steps=self.args.max_steps, mixture=None, horizon=False)
        return Mixture(self.init_mixture or self.strategy.initial_mixture(context), domains=domains.names)

    def context(
        self, step: int, max_steps: int, mixture: Mixture | None, from_sample: int = 0, horizon: bool = True
    ) -> DecisionContext:
        """What the strategy sees when deciding after ``step`` (``horizon``: the run's batch geometry is known)."""
        trainer = self.trainer
        stream = getattr(trainer, "interleaver", None)
        drawn = stream.drawn(from_sample) if stream is not None and from_sample else {}
        per_unit = {
            name: source.num_tokens / max(1, source.num_blocks or 1)
            for name, source in trainer.sources.items()
            if source.num_tokens is not None
        }
        remaining = (
            (max(1, max_steps - step) * trainer.samples_per_step * trainer.tokens_per_sample) if horizon else None
        )
        return DecisionContext(
            drawn_tokens={name: int(drawn.get(name, 0) * per_unit.get(name, 0)) for name in trainer.sources},
            step=step,
            max_steps=max_steps,
            stage=self.stage,
            domains=trainer.domains,
            token_counts=dict(trainer.token_counts),
            mixture=mixture,
            previous_mixture=self.previous_mixture,
            update=self.update,
            history=self.history,
            trainer=trainer,
            ledger=self.ledger,
            max_repetitions=self.args.max_repetitions,
            remaining_tokens=remaining,
        )

    def plan_mixture(self, mixture: Mixture, from_sample: int) -> tuple[Mixture, dict[str, float]]:
        """``mixture`` as it is scheduled from global sample ``from_sample`` to the end of the run.

        With ``plan_caps`` (default) each domain's weight is lowered to what its remaining blocks sustain
        until the end, the excess shared out (:func:`hf_datamix.horizon.fit_to_horizon`); returns the
        mixture and ``{domain: requested weight}`` of the lowered domains.
        """
        trainer = self.trainer
        if not self.args.plan_caps or self.args.max_repetitions is None:
            return mixture, {}
        units = trainer.interleaver.segments_per_block
        horizon = (trainer.state.max_steps * trainer.samples_per_step - from_sample) * units
        return fit_to_horizon(mixture, trainer.interleaver.units_left(from_sample), horizon)

    def run_decision(self, step: int, from_sample: int) -> None:
        """Ask the strategy for a decision and schedule it from global sample ``from_sample``."""
        trainer = self.trainer
        current = trainer.interleaver.weights_at(from_sample)
        context = self.context(step, trainer.state.max_steps, current, from_sample)
        started, before = time.perf_counter(), self.ledger.state_dict()
        result = None
        everywhere = self.strategy.runs_on_every_process(trainer)
        if everywhere or trainer.args.world_size == 1 or trainer.is_world_process_zero():
            result = self.strategy.decide(context)
        if trainer.args.world_size > 1:
            # Also after a decision taken everywhere: the main process's result is the one applied,
            # so the ranks agree even if a solver differed in the last bits.
            from accelerate.utils import broadcast_object_list

            payload = [result]
            broadcast_object_list(payload, from_process=0)
            result = payload[0]
        decision = result if isinstance(result, Decision) or result is None else Decision(Mixture(result))
        seconds = time.perf_counter() - started
        spent = self.ledger.since(before).by_kind
        cost = f"took {seconds:.1f} s, {sum(spent.values()):.3g} FLOPs" + (
            f" ({', '.join(f'{k} {v:.3g}' for k, v in sorted(spent.items()))})" if spent else ""
        )
        where = (trainer.args.process_index, trainer.args.world_size, self.stage, step)
        mixture, record = self.decision_record(decision, current, step, from_sample, seconds)
        if decision is not None:
            trainer.interleaver.set_weights(mixture, from_sample)
        self._keep(record)
        # One line per decision, the default level of the recipes: what changed and what it cost.
        what = "kept mixture" if decision is None else "new mixture"
        logger.info("Process %d/%d, stage %d step %d: %s %s (%s)", *where, what, mixture, cost)

    def decision_record(
        self, decision: Decision | None, current: Mixture, step: int, from_sample: int, seconds: float
    ) -> tuple[Mixture, dict[str, Any]]:
        """The mixture trained from global sample ``from_sample`` after ``decision`` (planned over the horizon;
        ``current`` when there is none) and its ``mixtures.json`` record (``decision``, or ``kept``)."""
        if decision is None:
            return current, self.record(current, step, "kept", seconds=seconds)
        mixture, lowered = self.plan_mixture(
            Mixture(decision.mixture, domains=self.trainer.domains.names), from_sample
        )
        details = {**decision.details, **({"capped_for_horizon": lowered} if lowered else {})}
        return mixture, self.record(mixture, step, "decision", seconds=seconds, from_sample=from_sample, **details)

    # -- decision points ---------------------------------------------------------------------------
    def _schedule_next(self, after: int, max_steps: int) -> None:
        trainer = self.trainer
        nxt = self.strategy.next_decision_step(after, max_steps)
        if nxt is not None and nxt < after:
            raise ValueError(
                f"strategy {self.strategy.name!r}: next_decision_step({after}) returned {nxt}, which is in the past."
            )
        self.pending = nxt if nxt is not None and nxt < max_steps else None
        horizon = None if self.pending is None else (self.pending + 1) * trainer.samples_per_step
        trainer.interleaver.set_horizon(horizon)

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        trainer.num_params = non_embedding_parameters(trainer.model)
        # Asked once now so that a set-up the strategy cannot run on fails before the first step.
        self.strategy.runs_on_every_process(trainer)
        step = state.global_step
        trainer.interleaver.start_sample = step * trainer.samples_per_step
        if step == 0:
            # The initial mixture is planned over the whole run like every decision (plan_caps).
            initial, lowered = self.plan_mixture(trainer.interleaver.weights_at(0), 0)
            trainer.interleaver.set_weights(initial, 0)
            extra = {"capped_for_horizon": lowered} if lowered else {}
            self.record_mixture(initial, step=0, kind="initial", settings=self.strategy.settings(), **extra)
            if self.strategy.next_decision_step(0, state.max_steps) == 0:
                self.run_decision(step=0, from_sample=0)
            self._schedule_next(1, state.max_steps)
        else:
            self._schedule_next(step + 1, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        self.ledger.add_training("train", trainer.num_params, trainer.step_train_tokens())
        step = state.global_step
        if self.pending is not None and step == self.pending:
            self.run_decision(step=step, from_sample=(step + 1) * trainer.samples_per_step)
            self._schedule_next(step + 1, state.max_steps)
        self._report_exhaustion(step)

    def _report_exhaustion(self, step: int) -> None:
        events = self.trainer.interleaver.exhaustion_events((step + 1) * self.trainer.samples_per_step)
        for event in events[self._reported_exhaustion :]:
            logger.warning(
                "Step %d: domain %r ran dry (%.2f epochs, its repetition cap) at sample %d; on_exhausted=%r.",
                step,
                event.domain,
                event.epochs,
                event.sample,
                event.action,
            )
            self.record_event("exhausted", step, **event.to_dict())
        self._reported_exhaustion = len(events)

    # -- records -----------------------------------------------------------------------------------
    def record(self, mixture: Mixture, step: int, kind: str, **details: Any) -> dict[str, Any]:
        """A ``mixtures.json`` record of ``mixture`` at ``step`` of this stage (what :meth:`record_mixture` keeps)."""
        return {
            "step": self.step_offset + step,
            "stage_step": step,
            "stage": self.stage,
            "strategy": self.strategy.name,
            "kind": kind,
            "weights": mixture.to_dict(),
            **details,
        }

    def record_mixture(self, mixture: Mixture, step: int, kind: str, **details: Any) -> None:
        """Append a decision record (the ``mixtures.json`` schema), write the file, log a decision's summary."""
        self._keep(self.record(mixture, step, kind, **details))

    def _keep(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the history, write ``mixtures.json``, and log a decision's summary to the trackers."""
        trainer, kind = self.trainer, record["kind"]
        self.history.append(record)
        if trainer.is_world_process_zero():
            write_json_atomic(os.path.join(self.records_dir, MIXTURES_FILE), self.history)
        if kind in ("decision", "kept"):  # to every report_to tracker, at this step
            # Trainer.log clears control.should_log: a decision logged from on_step_end must not
            # swallow the step's own training log.
            should_log = trainer.control.should_log
            trainer.log(decision_scalars(self.history[-1]))
            trainer.control.should_log = should_log

    def record_event(self, kind: str, step: int, **details: Any) -> None:
        """Record a non-decision event (a domain running dry) in ``mixtures.json``."""
        trainer = self.trainer
        current = trainer.interleaver.weights_at((step + 1) * trainer.samples_per_step)
        self.record_mixture(current, step, kind=kind, **details)

    def write_outputs(self, final: bool = False) -> None:
        """Write ``mixtures.json`` and ``compute.json`` to ``records_dir`` (and at the end ``mixture.json`` and the
        plots to ``output_dir``)."""
        trainer = self.trainer
        out = trainer.args.output_dir
        write_json_atomic(os.path.join(self.records_dir, MIXTURES_FILE), self.history)
        self.ledger.save(self.records_dir)
        if not final:
            return
        # The mixture in force at the end, loadable with Mixture.from_pretrained(output_dir).
        trainer.interleaver.weights_at(trainer.state.max_steps * trainer.samples_per_step).save(
            os.path.join(out, MIXTURE_FILE), strategy=self.strategy.name, stage=self.stage
        )
        if not trainer.args.write_plots:
            return
        try:
            from .plots import plot_candidates, plot_law_fit, plot_weights

            end = self.step_offset + trainer.state.max_steps
            plot_weights(self.history, os.path.join(out, "weights.png"), end_step=end)
            plot_law_fit(self.history, os.path.join(out, "law_fit.png"))
            plot_candidates(self.history, os.path.join(out, "candidates.png"))
        except ImportError as error:
            logger.warning("No weights plot (%s); pip install matplotlib to get one.", error)

    # -- state in checkpoints ----------------------------------------------------------------------
    def state_payload(self, consumed: int) -> dict[str, Any]:
        """The mixing state written to each checkpoint's ``datamix_state.json``."""
        trainer = self.trainer
        return {
            "stage": self.stage,
            "consumed_samples": consumed,
            "samples_per_step": trainer.samples_per_step,
            "interleaver": trainer.interleaver.state_dict(),
            "strategy": {"name": self.strategy.name, "state": self.strategy.state_dict()},
            "history": self.history,
            "ledger": self.ledger.state_dict(),
        }

    def write_state(self, checkpoint: str, consumed: int) -> None:
        write_json_atomic(os.path.join(checkpoint, STATE_FILE), self.state_payload(consumed))

    def restore(self, state: Mapping[str, Any], checkpoint: str | None = None) -> None:
        """Restore the mixing state of a checkpoint (and a learner's, saved next to it)."""
        trainer = self.trainer
        check_resume(state, self.strategy.name, trainer.samples_per_step, checkpoint)
        trainer.interleaver.load_state_dict(state["interleaver"])
        self.strategy.load_state_dict(state["strategy"]["state"])
        self.history[:] = state["history"]
        self.ledger.load_state_dict(state["ledger"])
        learner = getattr(trainer, "learner", None)
        if learner is not None and checkpoint is not None:
            learner.load(checkpoint)

    def on_save(self, args, state, control, **kwargs):
        trainer = self.trainer
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if trainer.is_world_process_zero() and os.path.isdir(checkpoint):
            learner = getattr(trainer, "learner", None)
            if learner is not None:
                learner.save(checkpoint)
            # Written last: a checkpoint without it is a save cut short (hf_datamix.checkpoints).
            self.write_state(checkpoint, consumed=state.global_step * trainer.samples_per_step)
        if args.should_save and self.save_total_limit:
            # Only now that the new checkpoint is complete may older ones go (Trainer, which would
            # rotate them before this state is written, is given no limit: see DataMixMixin).
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(args.output_dir, self.save_total_limit, state.best_model_checkpoint, use_mtime=True)
        if trainer.is_world_process_zero():
            self.write_outputs()

    def on_train_end(self, args, state, control, **kwargs):
        if self.trainer.is_world_process_zero():
            self.write_outputs(final=True)
