"""MixingCallback: decision points, the compute ledger and the mixing state in checkpoints.

Timing of a decision: a decision taken after optimizer step ``t`` applies from the first sample of
step ``t + 2`` on every rank (step ``t + 1``'s first micro-batch is already loaded by accelerate's
one-batch look-ahead when step ``t`` ends).  A decision at step 0 applies from the first sample.
DataLoader workers are held at the decision point until the decision is published, so a
prefetched batch never carries stale weights.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from transformers import TrainerCallback

from .compute import non_embedding_parameters

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import DataMixTrainer

logger = logging.getLogger(__name__)


class MixingCallback(TrainerCallback):
    """Runs the strategy at its decision points and keeps the ledger and mixing state (internal)."""

    def __init__(self, trainer: "DataMixTrainer"):
        self.trainer = trainer
        self.pending: int | None = None
        self._reported_exhaustion = 0

    # -- decision points ------------------------------------------------------------------------
    def _schedule_next(self, after: int, max_steps: int) -> None:
        trainer = self.trainer
        nxt = trainer.strategy.next_decision_step(after, max_steps)
        if nxt is not None and nxt < after:
            raise ValueError(
                f"strategy {trainer.strategy.name!r}: next_decision_step({after}) returned {nxt}, which is in the past."
            )
        self.pending = nxt if nxt is not None and nxt < max_steps else None
        horizon = None if self.pending is None else (self.pending + 1) * trainer.samples_per_step
        trainer.interleaver.set_horizon(horizon)

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        trainer.num_params = non_embedding_parameters(trainer.model)
        # Asked once now so that a set-up the strategy cannot run on fails before the first step.
        trainer.strategy.runs_on_every_process(trainer)
        step = state.global_step
        trainer.interleaver.start_sample = step * trainer.samples_per_step
        if step == 0:
            # The initial mixture is planned over the whole run like every decision (plan_caps).
            initial, lowered = trainer.plan_mixture(trainer.interleaver.weights_at(0), 0)
            trainer.interleaver.set_weights(initial, 0)
            extra = {"capped_for_horizon": lowered} if lowered else {}
            trainer.record_mixture(initial, step=0, kind="initial", settings=trainer.strategy.settings(), **extra)
            if trainer.strategy.next_decision_step(0, state.max_steps) == 0:
                trainer.run_decision(step=0, from_sample=0)
            self._schedule_next(1, state.max_steps)
        else:
            self._schedule_next(step + 1, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        trainer.ledger.add_training("train", trainer.num_params, trainer.step_train_tokens())
        step = state.global_step
        if self.pending is not None and step == self.pending:
            trainer.run_decision(step=step, from_sample=(step + 1) * trainer.samples_per_step)
            self._schedule_next(step + 1, state.max_steps)
        self._report_exhaustion(step)

    def _report_exhaustion(self, step: int) -> None:
        events = self.trainer.interleaver.exhaustion_events((step + 1) * self.trainer.samples_per_step)
        for event in events[self._reported_exhaustion :]:
            logger.warning(
                "Step %d: domain %r ran dry (%.2f epochs, its repetition cap) at sample %d; on_exhausted=%r.",
                step, event.domain, event.epochs, event.sample, event.action,
            )
            self.trainer.record_event("exhausted", step, **event.to_dict())
        self._reported_exhaustion = len(events)

    # -- persistence ----------------------------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        trainer = self.trainer
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if trainer.is_world_process_zero() and os.path.isdir(checkpoint):
            # Written last: a checkpoint without it is a save cut short (hf_datamix.checkpoints).
            trainer.write_state(checkpoint, consumed=state.global_step * trainer.samples_per_step)
        if args.should_save and trainer.save_total_limit:
            # Only now that the new checkpoint is complete may older ones go (Trainer, which would
            # rotate them before this state is written, is given no limit: see DataMixMixin).
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(args.output_dir, trainer.save_total_limit, state.best_model_checkpoint, use_mtime=True)
        if trainer.is_world_process_zero():
            trainer.write_outputs()

    def on_train_end(self, args, state, control, **kwargs):
        if self.trainer.is_world_process_zero():
            self.trainer.write_outputs(final=True)
