"""DataMixSFTTrainer: TRL's ``SFTTrainer`` whose training examples come from the mixing interleaver.

Everything of :class:`~hf_datamix.trainer.DataMixTrainer` (strategies and decisions, ``mix/<domain>``
logs, per-domain eval, resume, the compute ledger, Hub pushes) comes from the shared
:class:`~hf_datamix.trainer.DataMixMixin`; what differs is the data:

* each domain is prepared **on its own** by TRL (``SFTTrainer._prepare_dataset``: chat template,
  tokenising, completion-only labels, optional BFD packing), so a packed sequence never holds two
  domains; every prepared row keeps a ``domain`` column;
* the interleaver draws whole prepared examples (:class:`~hf_datamix.data.examples.ExampleSource`)
  and TRL's collator pads them (or, with packing, flattens them padding-free);
* evaluation reports, per domain, the completion loss (``eval_<domain>_loss``), the task error of
  greedy generations against the gold answers (``eval_<domain>_error``, exact match) and the gold
  answers' negative log-likelihood given the prompt (``eval_<domain>_answer_nll`` nats per answer,
  ``eval_<domain>_answer_token_nll`` per token); op_mix scores candidates by the task error by
  default, or by ``score="answer_logprob"`` (the answer NLL, which moves before exact match does);
* a strategy may bring a *learner* that replaces the SFT loss (``on_policy_distill``).

Packing across domains is not offered: with ``packing=False, padding_free=True`` TRL's collator puts
a micro-batch's examples (of any domains) into one row, which is the opt-in to mixing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from trl import SFTConfig, SFTTrainer

from .compute import ComputeLedger
from .config import DataMixArguments
from .data.examples import ExampleSource
from .domains import DomainSet, DomainUpdate
from .mixture import Mixture
from .strategies.base import Strategy
from .trainer import DataMixMixin


logger = logging.getLogger(__name__)

DOMAIN_COLUMN = "domain"
# Prepared (tokenised, labelled, packed) domains of this process, reused by later stages and runs:
# continual runs build a trainer per stage over mostly the same domains, and in-memory datasets are
# not cached on disk by `datasets`.  Keyed by everything the preparation depends on.
_PREPARED: dict[tuple, datasets.Dataset] = {}
_PREPARED_MAX = 64
# Columns a learner may need from the examples, kept by Trainer's unused-column removal.
_EXTRA_COLUMNS = ("prompt_ids", "teacher_prompt_ids", "gold_ids")
# What op_mix may score candidates by under SFT (lower is better for each): greedy task error, completion loss
# per token, and answer_logprob = the gold answer's NLL given the prompt, per answer.
SCORES = ("task_error", "loss", "answer_logprob")


@dataclass
class DataMixSFTConfig(DataMixArguments, SFTConfig):
    """Arguments of :class:`DataMixSFTTrainer`: every ``trl.SFTConfig`` field, the mixing fields of
    :class:`~hf_datamix.DataMixArguments` (``block_size``/``segments_per_block`` do not apply: SFT uses
    ``max_length`` and whole examples; ``max_eval_blocks`` caps eval *examples* per domain), plus:

    Parameters:
        task_eval_examples: held-out prompts per domain scored by generation in ``evaluate`` (0: none).
        task_max_new_tokens: tokens generated per answer when scoring tasks.
        task_eval_batch_size: prompts per generation batch.
    """

    task_eval_examples: int = field(
        default=64, metadata={"help": "Held-out prompts per domain scored by generation at eval (0: no task error)."}
    )
    task_max_new_tokens: int = field(default=16, metadata={"help": "Tokens generated per answer when scoring tasks."})
    task_eval_batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch when scoring."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("task_eval_examples", "task_max_new_tokens", "task_eval_batch_size"):
            value = getattr(self, name)
            minimum = 0 if name == "task_eval_examples" else 1
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r}; use an integer >= {minimum}.")
        if self.segments_per_block != 1:
            raise ValueError(
                f"segments_per_block={self.segments_per_block}: SFT examples are drawn whole; use 1 (and packing "
                "for dense batches)."
            )


class DataMixSFTTrainer(DataMixMixin, SFTTrainer):
    """An ``SFTTrainer`` that trains on a mixture of task domains chosen by a strategy.

    Args:
        model: the causal LM (or a model id / path, as for ``SFTTrainer``).
        args: :class:`DataMixSFTConfig`.
        domains: the :class:`~hf_datamix.DomainSet` of task domains; each domain's data are in a
            format ``SFTTrainer`` accepts (prompt-completion, messages or text); prompt-completion data
            with an ``answer`` column (or a short completion) are scored by exact match.
        strategy: a :class:`~hf_datamix.Strategy` or a registered name (default: ``args.strategy``).
        processing_class: the tokenizer (with a chat template for conversational data).
        stage, update, previous_mixture, history, ledger, step_offset: as for
            :class:`~hf_datamix.DataMixTrainer` (continual runs).
        **kwargs: passed to ``trl.SFTTrainer`` (callbacks, peft_config, ...).
    """

    default_score = "task_error"
    args_class = DataMixSFTConfig
    fixed_shape_batches = False  # padded to each batch's longest example
    _tag_names = [*SFTTrainer._tag_names, *DataMixMixin._tag_names]  # TRL's tags stay on the model and card

    def __init__(
        self,
        model=None,
        args: DataMixSFTConfig | None = None,
        domains: DomainSet | None = None,
        strategy: Strategy | str | None = None,
        processing_class=None,
        *,
        stage: int = 0,
        update: DomainUpdate | None = None,
        previous_mixture: Mixture | None = None,
        history: list | None = None,
        ledger: ComputeLedger | None = None,
        step_offset: int = 0,
        **kwargs: Any,
    ):
        self._setup_mixing(
            model,
            args,
            domains,
            strategy,
            processing_class,
            stage,
            update,
            previous_mixture,
            history,
            ledger,
            step_offset,
            kwargs,
        )
        raw = {spec.name: spec.load() for spec in domains}
        for name, (train, _) in raw.items():
            if not isinstance(train, datasets.Dataset):
                raise ValueError(
                    f"domain {name!r}: DataMixSFTTrainer needs map-style datasets (streaming=False), got "
                    f"{type(train).__name__}."
                )
        self._raw_train = {name: pair[0] for name, pair in raw.items()}
        self._raw_eval, self._raw_decision = {}, {}
        for spec in domains:
            self._raw_eval[spec.name], self._raw_decision[spec.name] = _split_held_out(spec, raw[spec.name][1], args)
        self.decision_datasets: dict[str, datasets.Dataset] = {}  # prepared with the eval sets, below
        self._preparing_train = True
        self.learner = self.strategy.learner(self)
        if self.learner is not None:
            self.learner.check_args(args)
        self._step_tokens = 0
        # SFTTrainer prepares train_dataset and each eval set through self._prepare_dataset, after it has
        # resolved the chat template, completion-only loss and collator; the override below builds the
        # per-domain sources and the interleaver at that point.  A raw domain stands in for train_dataset.
        first = next(iter(self._raw_train.values()))
        super().__init__(
            model=model,
            args=args,
            train_dataset=first,
            eval_dataset=dict(self._raw_eval),
            processing_class=processing_class,
            **kwargs,
        )
        self.eval_token_counts = {name: _token_count(ds) for name, ds in self.eval_dataset.items()}
        self.eval_loss_weights = {name: _token_count(ds, labelled=True) for name, ds in self.eval_dataset.items()}
        from .simulate.task_scoring import task_eval_sets

        limit = args.task_eval_examples
        self.task_eval_sets = task_eval_sets(self._raw_eval, limit=limit) if limit else {}
        self.task_decision_sets = task_eval_sets(self._raw_decision, limit=limit) if limit else {}
        if self.learner is not None:
            self.learner.attach(self)
        self._attach_mixing_callback()

    # -- data ---------------------------------------------------------------------------------
    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if dataset_name == "train" and getattr(self, "_preparing_train", False):
            self._preparing_train = False
            return self._build_train_stream(processing_class, args, packing, formatting_func)
        prepared = self._prepare_cached(dataset, processing_class, args, packing, formatting_func, dataset_name)
        if dataset_name in getattr(self, "_raw_eval", {}):
            prepared = _with_domain(prepared, dataset_name)
            # The domain's decision examples, prepared exactly as its eval set (candidates score on them).
            decision = self._prepare_cached(
                self._raw_decision[dataset_name],
                processing_class,
                args,
                packing,
                formatting_func,
                f"{dataset_name} decision",
            )
            self.decision_datasets[dataset_name] = _with_domain(decision, dataset_name)
        return prepared

    def _build_train_stream(self, processing_class, args, packing, formatting_func):
        sources = {}
        for name, raw in self._raw_train.items():
            if self.learner is not None:
                raw = self.learner.prepare_domain(raw, processing_class)
            prepared = self._prepare_cached(raw, processing_class, args, packing, formatting_func, f"{name} train")
            prepared = _with_domain(prepared, name)
            columns = ("input_ids", "labels", "seq_lengths", *_EXTRA_COLUMNS)
            sources[name] = ExampleSource(name, prepared, columns=columns)
        self.train_examples = sources
        return self._make_interleaver(args, sources)

    def _prepare_cached(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """TRL's preparation, memoised per process for datasets with a fingerprint (formatting functions are not)."""
        fingerprint = getattr(dataset, "_fingerprint", None)
        if fingerprint is None or formatting_func is not None:
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        key = (
            fingerprint,
            id(processing_class),
            processing_class.chat_template,
            self.chat_template,
            self.completion_only_loss,
            packing,
            args.packing_strategy,
            args.max_length,
            args.truncation_mode,
            args.assistant_only_loss,
            args.dataset_text_field,
            args.shuffle_dataset,
            args.seed,
        )
        if key not in _PREPARED:
            if len(_PREPARED) >= _PREPARED_MAX:
                _PREPARED.pop(next(iter(_PREPARED)))
            _PREPARED[key] = super()._prepare_dataset(
                dataset, processing_class, args, packing, formatting_func, dataset_name
            )
        return _PREPARED[key]

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = [c for c in (DOMAIN_COLUMN, *_EXTRA_COLUMNS) if c not in self._signature_columns]
        self._signature_columns = list(self._signature_columns) + extra

    @property
    def tokens_per_sample(self) -> int:
        """Mean tokens per training example over all domains (SFT examples vary in length)."""
        tokens = sum(source.num_tokens for source in self.sources.values())
        examples = sum(source.num_blocks for source in self.sources.values())
        return max(1, round(tokens / examples))

    # -- loss and the ledger -------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.learner is not None and model.training:
            loss = self.learner.compute_loss(model, inputs)
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                # Trainer then skips its division by the accumulation steps; the learner's loss is a mean.
                loss = loss / self.current_gradient_accumulation_steps
            return (loss, None) if return_outputs else loss
        if model.training:
            mask = inputs.get("attention_mask")
            self._step_tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def step_train_tokens(self) -> int:
        """Tokens of the last optimizer step summed over ranks (a learner adds its own passes to the ledger)."""
        counts = {"train": self._step_tokens}
        self._step_tokens = 0
        if self.learner is not None:
            counts.update(self.learner.pop_token_counts())
        keys = sorted(counts)
        totals = torch.tensor([float(counts[k]) for k in keys], device=self.args.device)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        totals = dict(zip(keys, totals.tolist()))
        for kind, tokens in totals.items():
            if kind != "train" and tokens:
                self.ledger.add_forward(kind, self.num_params, tokens)
        return int(totals["train"])

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if eval_dataset is None and self.task_eval_sets:
            errors = self.task_errors()
            scores = {f"{metric_key_prefix}_{name}_error": value for name, value in errors.items()}
            scores[f"{metric_key_prefix}_avg_error"] = float(np.mean(list(errors.values())))
            nlls = self.answer_nlls(limit=self.args.task_eval_examples, split="eval")
            for name, value in nlls.items():
                scores[f"{metric_key_prefix}_{name}_answer_nll"] = value["nll_per_answer"]
                scores[f"{metric_key_prefix}_{name}_answer_token_nll"] = value["nll_per_token"]
            scores[f"{metric_key_prefix}_avg_answer_nll"] = float(
                np.mean([v["nll_per_answer"] for v in nlls.values()])
            )
            self.log(scores)
            metrics.update(scores)
        return metrics

    def answer_nlls(
        self,
        model=None,
        limit: int | None = None,
        split: str = "eval",
        batch_size: int | None = None,
        batches: dict | None = None,
    ) -> dict[str, dict]:
        """Per domain, the NLL of the gold answers given their prompts (``nll_per_answer``, nats per answer, and
        ``nll_per_token``) on the first ``limit`` examples of ``split`` (``"eval"`` or ``"decision"``)."""
        from .simulate.task_scoring import answer_nlls

        if batches is None:
            size = batch_size or self.args.per_device_eval_batch_size
            batches = {name: self._eval_batches(name, limit, size, split) for name in self.domains.names}
        return answer_nlls(
            model if model is not None else self.accelerator.unwrap_model(self.model),
            batches,
            eos_token_id=self.processing_class.eos_token_id,
            ledger=self.ledger,
            num_parameters=self.num_params,
        )

    def task_errors(self, model=None, limit: int | None = None, split: str = "eval") -> dict[str, float]:
        """Task error (1 - exact match of greedy answers) per domain on the held-out prompts of ``split``
        (``"eval"``: the test prompts evaluation reports; ``"decision"``: those decisions score on)."""
        from .simulate.task_scoring import TaskEvalSet, task_errors

        held_out = {"eval": self.task_eval_sets, "decision": self.task_decision_sets}[split]
        sets = {
            name: TaskEvalSet(s.prompts[:limit], s.answers[:limit]) if limit else s for name, s in held_out.items()
        }
        return task_errors(
            model if model is not None else self.accelerator.unwrap_model(self.model),
            self.processing_class,
            sets,
            max_new_tokens=self.args.task_max_new_tokens,
            batch_size=self.args.task_eval_batch_size,
            ledger=self.ledger,
            num_parameters=self.num_params,
        )

    def decision_scorer(
        self,
        metric: str = "task_error",
        limit: int | None = 64,
        batch_size: int = 16,
        collective: bool = False,
        bf16: bool = False,
    ) -> _DecisionScorer:
        """Task error (greedy generation), completion loss (per token) or answer NLL (``answer_logprob``:
        ``-log p(gold answer | prompt)`` per answer, averaged) on the first ``limit`` decision examples per domain."""
        if metric not in SCORES:
            raise ValueError(f"score={metric!r}; DataMixSFTTrainer scores by one of {list(SCORES)}.")
        if metric == "task_error" and not self.task_decision_sets:
            raise ValueError("score='task_error' needs task_eval_examples > 0 (held-out prompts to generate on).")
        # collective: every process scores every example itself (its copy of the model is whole).
        return _DecisionScorer(self, metric, limit, batch_size)

    def _eval_batches(self, name: str, limit: int | None, batch_size: int, split: str = "decision") -> list[dict]:
        dataset = (self.decision_datasets if split == "decision" else self.eval_dataset)[name]
        rows = [dataset[i] for i in range(len(dataset) if limit is None else min(limit, len(dataset)))]
        keep = ("input_ids", "labels", "seq_lengths")
        rows = [{k: r[k] for k in keep if k in r} for r in rows]
        return [self.data_collator(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


class _DecisionScorer:
    """``model -> score per domain`` on the decision examples (see :meth:`DataMixSFTTrainer.decision_scorer`)."""

    def __init__(self, trainer: DataMixSFTTrainer, metric: str, limit: int | None, batch_size: int):
        from .simulate.task_scoring import completion_losses

        self.trainer, self.metric, self.limit = trainer, metric, limit
        self.targets = trainer.domains.names
        self._losses = completion_losses
        self._batches = (
            {name: trainer._eval_batches(name, limit, batch_size) for name in self.targets}
            if metric in ("loss", "answer_logprob")
            else None
        )

    def __call__(self, model) -> np.ndarray:
        trainer = self.trainer
        if self.metric == "task_error":
            scores = trainer.task_errors(model, limit=self.limit, split="decision")
        elif self.metric == "answer_logprob":
            scores = {
                name: value["nll_per_answer"]
                for name, value in trainer.answer_nlls(model, batches=self._batches).items()
            }
        else:
            scores = self._losses(model, self._batches, ledger=trainer.ledger, num_parameters=trainer.num_params)
        return np.array([scores[name] for name in self.targets], dtype=float)


def _split_held_out(spec, evaluation, args) -> tuple:
    """``(eval examples, decision examples)`` of one domain: its ``DomainSpec.decision`` data, else the first
    ``args.decision_blocks`` eval examples (at most half, as for packed blocks); ``max_eval_blocks`` caps eval."""
    from .data.packing import decision_share

    decision = spec.load_decision()
    if decision is None and args.decision_blocks > 0:
        reserved = decision_share(len(evaluation), args.decision_blocks, args.max_eval_blocks)
        if reserved == 0:
            raise ValueError(
                f"Domain {spec.name!r}: its eval split has {len(evaluation)} example(s), too few to keep decision "
                "examples apart from test examples; give it more eval data, DomainSpec.decision, or set "
                "decision_blocks=0."
            )
        decision, evaluation = evaluation.select(range(reserved)), evaluation.select(range(reserved, len(evaluation)))
    elif decision is None:
        decision = evaluation
    cap = args.max_eval_blocks  # SFT has examples, not blocks: it caps eval examples per domain
    if cap and len(evaluation) > cap:
        evaluation = evaluation.select(range(cap))
    return evaluation, decision


def _with_domain(dataset, name: str):
    """``dataset`` with a ``domain`` column (TRL's packing keeps only token columns)."""
    if isinstance(dataset, datasets.Dataset) and DOMAIN_COLUMN not in dataset.column_names:
        return dataset.add_column(DOMAIN_COLUMN, [name] * len(dataset))
    return dataset


def _token_count(dataset, labelled: bool = False) -> int:
    """Tokens of an eval set (forwarded: the ledger), or those with a label (the domain's loss weight)."""
    column = "labels" if labelled else "input_ids"
    if not (isinstance(dataset, datasets.Dataset) and column in dataset.column_names):
        return 1
    values = dataset.data.column(column).combine_chunks().values.to_numpy(zero_copy_only=False)
    return max(1, int((values != -100).sum()) if labelled else int(values.size))
