"""``on_policy_distill``: the on-policy self-distillation baseline of continual instruction tuning.

Not a mixer (design.md): each stage trains on its new task domains only, as ``sequential`` does, but
the model learns by SDFT-style on-policy self-distillation instead of supervised fine-tuning
(methods.md): the student samples a completion for the plain prompt; the teacher is the same model
conditioned on the prompt plus the gold demonstration, kept as an EMA of the student; the loss is
the per-token reverse KL(student ‖ teacher) over the vocabulary.  The method presumes that the
model can use the demonstration in its context; at the start of every stage the learner measures
that (:meth:`~hf_datamix.distill.OnPolicyDistiller.demonstration_gain`, logged as
``distill/gain``, ``distill/student_nll``, ``distill/teacher_nll``) and warns when the teacher
knows no more than the student.  The mechanics live in
:mod:`hf_datamix.distill` (built on TRL's self-distillation pieces); this module plugs them into
:class:`~hf_datamix.sft.DataMixSFTTrainer` as the strategy's *learner*.  Generation and teacher
passes are counted in the ledger (kinds ``generate`` and ``teacher``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from ..distill import (
    DEFAULT_TEACHER_PROMPT_TEMPLATE,
    DistillationCollator,
    DistillConfig,
    OnPolicyDistiller,
    add_distillation_columns,
)
from .base import StrategyConfig
from .baselines import SequentialStrategy


logger = logging.getLogger(__name__)
# Below this many nats per answer the teacher hardly knows more than the student (see demonstration_gain).
MIN_DEMONSTRATION_GAIN = 0.1
GAIN_EXAMPLES = 16  # training examples per domain the gain is measured on, at the start of every stage


@dataclass
class OnPolicyDistillConfig(StrategyConfig):
    """Settings of ``on_policy_distill``: those of :class:`~hf_datamix.distill.DistillConfig` (``seed`` is
    ``rollout_seed`` here, ``seed`` being the run's)."""

    teacher_update_rate: float = field(
        default=0.01,
        metadata={
            "help": "EMA rate of the teacher after every optimizer step, in [0, 1] (0 keeps the initial teacher)."
        },
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Length limit of each on-policy completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the student's rollouts, > 0."})
    top_k: int = field(
        default=0, metadata={"help": "Sample from the top_k most likely tokens; 0: the full vocabulary."}
    )
    teacher_prompt_template: str = field(
        default=DEFAULT_TEACHER_PROMPT_TEMPLATE,
        metadata={"help": "The teacher's last user message; must contain {prompt} and {demonstration}."},
    )
    num_loss_tokens_to_skip: int = field(
        default=0, metadata={"help": "Leave the first completion tokens out of the loss; below max_new_tokens."}
    )
    rollout_seed: int | None = field(
        default=None,
        metadata={
            "help": "null: rollouts from the global torch RNG (saved in checkpoints); an int >= 0: each call from its own "
            "generator derived from (rollout_seed, rank, call number)."
        },
    )

    def __post_init__(self):
        self.distill_config()  # DistillConfig checks every value

    def distill_config(self) -> DistillConfig:
        return DistillConfig(
            self.teacher_update_rate,
            self.max_new_tokens,
            self.temperature,
            self.top_k,
            self.teacher_prompt_template,
            self.num_loss_tokens_to_skip,
            self.rollout_seed,
        )


class OnPolicyDistillStrategy(SequentialStrategy):
    """Each stage trains on its new domains by on-policy self-distillation (an EMA teacher that sees the answer)."""

    name = "on_policy_distill"
    description = (
        "Continual baseline: SDFT-style on-policy self-distillation on the new domains (EMA teacher, reverse KL)."
    )
    config_class = OnPolicyDistillConfig

    def learner(self, trainer) -> DistillLearner:
        return DistillLearner(self.config.distill_config())


class DistillLearner:
    """Binds an :class:`~hf_datamix.distill.OnPolicyDistiller` to a DataMixSFTTrainer (internal)."""

    def __init__(self, config: DistillConfig):
        self.config = config
        self.distiller: OnPolicyDistiller | None = None
        self.gain_rows: list[dict] = []  # a few training rows per domain, for the demonstration gain
        self.demonstration_gain: dict[str, float] | None = None

    def check_args(self, args) -> None:
        if args.packing:
            raise ValueError(
                "strategy 'on_policy_distill' samples a completion per prompt, so examples cannot be packed: "
                "set packing=False."
            )

    def prepare_domain(self, dataset, tokenizer):
        """Add the student's and the teacher's tokenised prompts to a domain's raw examples."""
        prepared = add_distillation_columns(dataset, tokenizer, self.config.teacher_prompt_template)
        self.gain_rows += [prepared[i] for i in range(min(GAIN_EXAMPLES, len(prepared)))]
        return prepared

    def attach(self, trainer) -> None:
        """Start the EMA teacher from the current model and route training batches through the learner."""
        tokenizer = trainer.processing_class
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.distiller = OnPolicyDistiller(self.config, tokenizer, trainer.num_params)
        self.distiller.setup(trainer.accelerator.unwrap_model(trainer.model))
        if self.gain_rows:
            self.check_premise(trainer, DistillationCollator(pad_token_id=pad)(self.gain_rows))
        trainer.data_collator = _WithPrompts(trainer.data_collator, DistillationCollator(pad_token_id=pad))
        trainer.add_callback(_TeacherUpdate(self, trainer))

    def check_premise(self, trainer, batch) -> None:
        """Measure the demonstration gain at the stage's start; warn when the teacher knows no more than the student."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.demonstration_gain = gain = self.distiller.demonstration_gain(model, batch)
        if gain["gain"] < MIN_DEMONSTRATION_GAIN:
            logger.warning(
                "on_policy_distill: the teacher (the model shown the gold answer) is barely better at the gold answers "
                "than the student (NLL %.3f vs %.3f nats per answer, gain %.3f < %.1f): the model cannot use the "
                "demonstration in its context, so self-distillation has nothing to learn (its loss will fall to 0 as "
                "the EMA teacher follows the student). Start from a model that follows instructions and reads "
                "in-context examples, or use a supervised strategy.",
                gain["teacher_nll"],
                gain["student_nll"],
                gain["gain"],
                MIN_DEMONSTRATION_GAIN,
            )

    def compute_loss(self, model, inputs) -> Any:
        return self.distiller.compute_loss(model, inputs)

    def pop_token_counts(self) -> dict[str, int]:
        return self.distiller.pop_token_counts()

    def save(self, checkpoint: str) -> None:
        self.distiller.save(checkpoint)

    def load(self, checkpoint: str) -> None:
        self.distiller.load(checkpoint)


class _WithPrompts:
    """TRL's collator plus, for training examples that carry them, the padded student/teacher prompts."""

    def __init__(self, collator, prompts: DistillationCollator):
        self.collator, self.prompts = collator, prompts

    def __call__(self, examples):
        batch = self.collator(examples)
        if "prompt_ids" in examples[0]:
            batch.update(self.prompts(examples))
        return batch


class _TeacherUpdate(TrainerCallback):
    """EMA teacher update after every optimizer step."""

    def __init__(self, learner: DistillLearner, trainer):
        self.learner, self.trainer = learner, trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.learner.distiller.update_teacher(self.trainer.accelerator.unwrap_model(self.trainer.model))

    def on_log(self, args, state, control, logs=None, **kwargs):
        gain = self.learner.demonstration_gain
        if logs is not None and gain is not None and "loss" in logs:
            logs.update({f"distill/{key}": value for key, value in gain.items()})
