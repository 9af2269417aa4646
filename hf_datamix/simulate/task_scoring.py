"""Scoring models on instruction tasks: task error from greedy generation, completion loss, answer NLL.

Three scores serve the mixers of instruction-tuned models (and OP-Mix candidates, scored inside
:meth:`~hf_datamix.simulate.lora_probes.LoRAProbeSimulator.interpolated`):

* :func:`task_errors`: ``1 - exact-match rate`` of greedily generated answers
  (:func:`hf_datamix.data.instruct_tasks.exact_match`), one batched generation pass for all domains;
* :func:`completion_losses`: token-weighted next-token cross-entropy on the completion tokens of
  batches made by TRL's ``DataCollatorForLanguageModeling`` (padded or padding-free);
* :func:`answer_nlls`: the negative log-likelihood of each gold answer given its prompt (summed over
  the answer's tokens, and per token), from :func:`answer_logprobs` on the same batches.

Exact match and answer NLL are reduced by the ``evaluate`` metrics of :mod:`hf_datamix.metrics`.

Compute is counted in a :class:`~hf_datamix.compute.ComputeLedger` with the library's formula,
2·N FLOPs per token through a forward pass (N = non-embedding parameters):

* generation with a KV cache: ``2*N*(prompt tokens + generated tokens up to and including eos)``
  per sequence; left padding and the padding of finished rows are not counted;
* completion loss and answer NLL: ``2*N*(non-pad input tokens)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..compute import ComputeLedger, non_embedding_parameters
from ..metrics import load_metric


if TYPE_CHECKING:
    import datasets

# Only these batch entries reach the model: TRL's padding-free extras (cu_seq_lens_*, max_length_*, seq_idx)
# and interleaver metadata are not forward() arguments of every model. Labels stay out too: the loss is
# computed here, token-weighted, so the model need not compute its own mean.
_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")
_IGNORE_INDEX = -100


@dataclass
class TaskEvalSet:
    """Held-out prompts (chat messages, TRL conversational prompt format: list of {"role","content"}) and gold answers of one task domain."""

    prompts: list[list[dict]]
    answers: list[str]

    def __post_init__(self):
        self.prompts, self.answers = list(self.prompts), [str(a) for a in self.answers]
        if len(self.prompts) != len(self.answers):
            raise ValueError(
                f"TaskEvalSet: {len(self.prompts)} prompts for {len(self.answers)} answers; "
                "give one gold answer per prompt."
            )

    def __len__(self) -> int:
        return len(self.prompts)


def _completion_text(completion) -> str:
    """The gold text of a TRL completion: the string itself, or the content of its assistant message(s)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):  # a single message rather than a list of them
        completion = [completion]
    return "\n".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant")


def task_eval_sets(eval_datasets: Mapping[str, datasets.Dataset], limit: int | None = None) -> dict[str, TaskEvalSet]:
    """One :class:`TaskEvalSet` per domain of TRL prompt-completion datasets (conversational prompts).

    The gold answer is the ``answer`` column when present (as in
    :func:`hf_datamix.data.instruct_tasks.build_task`), else the text of the ``completion`` (the
    content of its assistant message(s), or the completion string).  ``limit`` keeps the first
    ``limit`` rows of each domain.  Raises ``ValueError`` naming the domain and its columns when a
    ``prompt`` column, or both ``answer`` and ``completion``, are missing, when prompts are plain strings
    (generation renders them with the chat template), or when a domain has no rows.
    """
    if limit is not None and int(limit) < 1:
        raise ValueError(f"task_eval_sets: limit must be None or >= 1, got {limit!r}.")
    out: dict[str, TaskEvalSet] = {}
    for domain, dataset in eval_datasets.items():
        columns = list(dataset.column_names or [])
        if "prompt" not in columns:
            raise ValueError(
                f"task_eval_sets: domain {domain!r} has no 'prompt' column (columns: {columns}); "
                "task scoring needs TRL prompt-completion data."
            )
        answer_column = "answer" if "answer" in columns else "completion" if "completion" in columns else None
        if answer_column is None:
            raise ValueError(
                f"task_eval_sets: domain {domain!r} has neither an 'answer' nor a 'completion' "
                f"column (columns: {columns}); one of them gives the gold answers."
            )
        if limit is not None:
            dataset = (
                dataset.select(range(min(int(limit), len(dataset))))
                if hasattr(dataset, "select")
                else dataset.take(int(limit))
            )
        # Only the two needed columns are read: other columns (e.g. images) may be large.
        subset = dataset.select_columns(["prompt", answer_column])
        prompts, answers = [], []
        for row in subset:
            prompt = row["prompt"]
            if isinstance(prompt, str):  # a data-format problem, reported like the others: ValueError
                raise ValueError(  # noqa: TRY004
                    f"task_eval_sets: domain {domain!r} has plain-text prompts; task scoring needs "
                    "conversational prompts (a list of {'role', 'content'} messages)."
                )
            prompts.append(list(prompt))
            answers.append(str(row["answer"]) if answer_column == "answer" else _completion_text(row["completion"]))
        if not prompts:
            raise ValueError(f"task_eval_sets: domain {domain!r} has no rows.")
        out[domain] = TaskEvalSet(prompts, answers)
    return out


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    # Per module, not model.train(mode): a caller may keep some submodules in another mode on purpose.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _model_device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    return torch.device(device) if device is not None else next(model.parameters()).device


def _eos_ids(tokenizer, eos_token_id) -> list[int]:
    ids = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if ids is None:
        raise ValueError(
            "generate_answers: the tokenizer has no eos token; pass eos_token_id to say where answers end."
        )
    return [int(i) for i in ([ids] if isinstance(ids, int) else ids)]


def _render(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of one conversational prompt, rendered as TRL renders prompts."""
    # A prompt that ends with an assistant turn is a prefill: continue it rather than open a new turn.
    prefill = bool(messages) and messages[-1].get("role") == "assistant"
    ids = tokenizer.apply_chat_template(
        list(messages),
        tokenize=True,
        return_dict=False,
        add_generation_prompt=not prefill,
        continue_final_message=prefill,
    )
    if ids and isinstance(ids[0], list):  # some tokenizers return a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


def generate_answers(
    model,
    tokenizer,
    prompts: Sequence[list[dict]],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    ledger: ComputeLedger | None = None,
    num_parameters: int | None = None,
    kind: str = "generate",
    eos_token_id: int | Sequence[int] | None = None,
) -> list[str]:
    """Greedy answers of ``model`` to conversational ``prompts``, in the order of ``prompts``.

    Each prompt is rendered with ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``
    (a prompt ending with an assistant message is continued instead).  Prompts are sorted by length
    and generated ``batch_size`` at a time with left padding (the tokenizer's pad token, else eos;
    the tokenizer itself is not modified), by ``model.generate`` with ``do_sample=False`` and one beam.
    Decoding is plain argmax: the sampling, beam and repetition-penalty settings of the model's
    ``generation_config`` are overridden (other logits processors it sets still apply).

    An answer is the new tokens up to the first eos (``eos_token_id``, default the tokenizer's),
    decoded with ``skip_special_tokens=True`` and stripped; at most ``max_new_tokens`` tokens.  The
    model runs in eval mode under ``torch.no_grad`` on its own device; its modes are restored after.

    ``ledger`` (optional) gets ``2*N*(prompt tokens + generated tokens up to and including eos)``
    per prompt under ``kind``, with ``N = num_parameters`` or the model's non-embedding parameters.
    """
    from transformers import GenerationConfig
    from trl.trainer.utils import pad  # imported here: trl is slow to import and only generation needs it

    if int(max_new_tokens) < 1 or int(batch_size) < 1:
        raise ValueError(
            f"generate_answers: max_new_tokens and batch_size must be >= 1, got {max_new_tokens!r} and {batch_size!r}."
        )
    prompts = list(prompts)
    if not prompts:
        return []
    eos = _eos_ids(tokenizer, eos_token_id)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    encoded = [_render(tokenizer, p) for p in prompts]
    # Longest first: similar lengths share a batch (little padding), and an out-of-memory shows at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=int(max_new_tokens),
        eos_token_id=eos,
        pad_token_id=int(pad_id),
        # Set explicitly: unset (None) fields are filled from the model's generation_config, which may
        # ship a repetition penalty (Qwen does) and would then turn greedy decoding into something else.
        # Neutral sampling values keep generate() from warning about the model's (unused) temperature/top_p.
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
    )
    device = _model_device(model)
    answers: list[str] = [""] * len(prompts)
    tokens = 0
    with _eval_mode(model), torch.no_grad():
        for start in range(0, len(order), int(batch_size)):
            batch = order[start : start + int(batch_size)]
            # Left padding (TRL's pad, as distill.py's collator): the prompt's last token sits at the last
            # column of every row, so generated tokens append directly; generate() derives position ids
            # from the attention mask.
            ids = [torch.tensor(encoded[i], dtype=torch.long) for i in batch]
            input_ids = pad(ids, int(pad_id), padding_side="left")
            attention_mask = pad([torch.ones_like(t) for t in ids], 0, padding_side="left")
            width = input_ids.shape[1]
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
            )
            new_tokens = output[:, width:].tolist()
            for row, i in enumerate(batch):
                generated = new_tokens[row]
                # Rows that finished early are filled with pad after their eos: cut at the first eos.
                stop = next((k for k, t in enumerate(generated) if t in eos), None)
                answer_ids = generated if stop is None else generated[:stop]
                answers[i] = tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
                tokens += len(encoded[i]) + (len(generated) if stop is None else stop + 1)
    if ledger is not None:
        n_params = int(num_parameters) if num_parameters is not None else non_embedding_parameters(model)
        ledger.add_forward(kind, n_params, tokens)
    return answers


def task_errors(
    model,
    tokenizer,
    eval_sets: Mapping[str, TaskEvalSet],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    ledger: ComputeLedger | None = None,
    num_parameters: int | None = None,
    eos_token_id: int | Sequence[int] | None = None,
) -> dict[str, float]:
    """Task error (``1 - exact-match rate``, :func:`~hf_datamix.data.instruct_tasks.task_error`) per domain.

    The prompts of all domains go through one :func:`generate_answers` pass (so small domains share
    batches); arguments are passed on to it, and the ledger counts under ``generate``.
    """
    empty = [name for name, s in eval_sets.items() if len(s.prompts) == 0]
    if empty:
        raise ValueError(f"task_errors: domain(s) {empty} have no prompts; every domain needs at least one.")
    prompts = [p for s in eval_sets.values() for p in s.prompts]
    predictions = generate_answers(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        ledger=ledger,
        num_parameters=num_parameters,
        eos_token_id=eos_token_id,
    )
    metric = load_metric("exact_match")
    errors, start = {}, 0
    for name, eval_set in eval_sets.items():
        stop = start + len(eval_set.prompts)
        errors[name] = metric.compute(predictions=predictions[start:stop], references=eval_set.answers)["task_error"]
        start = stop
    return errors


def _real_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """Non-pad input tokens of a collated batch (those the ledger counts)."""
    if batch.get("attention_mask") is not None:
        return int(batch["attention_mask"].sum())
    input_ids, position_ids = batch["input_ids"], batch.get("position_ids")
    if position_ids is None:
        return int(input_ids.numel())
    # Padding-free rows are padded at the end with position id 0 (pad_to_multiple_of): a trailing run
    # of zeros is padding. A last one-token sequence also has position 0 and is not counted; it carries
    # no loss (the collator masks each sequence's first label), so only the ledger is off by that token.
    total = 0
    for row in position_ids.reshape(-1, position_ids.shape[-1]):
        nonzero = (row != 0).nonzero()
        total += int(nonzero[-1]) + 1 if len(nonzero) else 0
    return total


def _labelled_logprobs(
    model, batch: Mapping[str, torch.Tensor], device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log-probs, targets, example ids)`` of one batch's labelled positions (labels shifted by one).

    An example is a row, or with ``position_ids`` (padding-free, packed) a run starting at position 0.
    """
    inputs = {k: batch[k].to(device) for k in _MODEL_INPUTS if batch.get(k) is not None}
    logits = model(**inputs, use_cache=False).logits
    targets = batch["labels"].to(device)[:, 1:]
    mask = targets != _IGNORE_INDEX
    rows = torch.arange(targets.shape[0], device=device).unsqueeze(1).expand_as(targets)
    position_ids = batch.get("position_ids")
    if position_ids is not None:
        starts = (position_ids.to(device) == 0).long().cumsum(dim=1)[:, 1:]
        example = rows * (position_ids.shape[1] + 1) + starts
    else:
        example = rows
    # Only labelled positions are upcast: a (batch, length, vocab) float32 copy would dwarf the model.
    picked = logits[:, :-1][mask].float()
    logprobs = picked.gather(1, targets[mask].unsqueeze(1)).squeeze(1) - torch.logsumexp(picked, dim=-1)
    return logprobs, targets[mask], example[mask]


def _check_batch(batch, domain: str, caller: str) -> None:
    if "input_ids" not in batch or "labels" not in batch:
        raise ValueError(
            f"{caller}: batches of domain {domain!r} need 'input_ids' and 'labels', got keys {sorted(batch)}."
        )


def completion_losses(
    model,
    batches: Mapping[str, Iterable[Mapping[str, torch.Tensor]]],
    *,
    ledger: ComputeLedger | None = None,
    num_parameters: int | None = None,
    kind: str = "eval",
) -> dict[str, float]:
    """Mean next-token cross-entropy per domain over the positions whose label is not -100.

    ``batches`` maps each domain to batches as TRL's ``DataCollatorForLanguageModeling``
    (``trl.trainer.sft_trainer``) makes them: ``input_ids``, ``labels`` (-100 on prompt and padding),
    and ``attention_mask`` (padded) or ``position_ids`` (padding-free).  Labels are shifted by one as
    in the causal-LM loss, and the mean is token-weighted over the whole domain, not per batch.
    Only ``input_ids``, ``attention_mask`` and ``position_ids`` reach the model (on its device); it
    runs under ``torch.no_grad`` in eval mode, its modes restored after.

    ``ledger`` (optional) gets ``2*N*(non-pad input tokens)`` under ``kind``.  Raises ``ValueError``
    when a batch lacks ``input_ids`` or ``labels``, or a domain has no labelled token.
    """
    device = _model_device(model)
    losses: dict[str, float] = {}
    tokens = 0
    with _eval_mode(model), torch.no_grad():
        for domain, domain_batches in batches.items():
            total, count = 0.0, 0
            for batch in domain_batches:
                _check_batch(batch, domain, "completion_losses")
                logprobs, _, _ = _labelled_logprobs(model, batch, device)
                total -= float(logprobs.double().sum())
                count += int(logprobs.numel())
                tokens += _real_tokens(batch)
            if count == 0:
                raise ValueError(
                    f"completion_losses: domain {domain!r} has no labelled token (all labels are "
                    "-100, or no batches); its loss is undefined."
                )
            losses[domain] = total / count
    if ledger is not None:
        n_params = int(num_parameters) if num_parameters is not None else non_embedding_parameters(model)
        ledger.add_forward(kind, n_params, tokens)
    return losses


def answer_logprobs(
    model,
    batches: Mapping[str, Iterable[Mapping[str, torch.Tensor]]],
    *,
    eos_token_id: int | Sequence[int] | None = None,
    ledger: ComputeLedger | None = None,
    num_parameters: int | None = None,
    kind: str = "eval",
) -> dict[str, list[list[float]]]:
    """Per domain, per example, the log-probability of each gold-answer token given the prompt.

    ``batches`` as for :func:`completion_losses`; an example's answer is its labelled tokens (the
    completion as the chat template renders it) up to and including the first ``eos_token_id``, so
    what comes after the end of the answer (a template's trailing newline) is left out.  With
    ``eos_token_id=None`` every labelled token counts.  ``ledger`` as for :func:`completion_losses`.
    """
    device = _model_device(model)
    eos = (
        None
        if eos_token_id is None
        else torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=device)
    )
    out: dict[str, list[list[float]]] = {}
    tokens = 0
    with _eval_mode(model), torch.no_grad():
        for domain, domain_batches in batches.items():
            answers: list[list[float]] = []
            for batch in domain_batches:
                _check_batch(batch, domain, "answer_logprobs")
                logprobs, targets, example = _labelled_logprobs(model, batch, device)
                tokens += _real_tokens(batch)
                for ex in torch.unique_consecutive(example):
                    picked = example == ex
                    values, ids = logprobs[picked], targets[picked]
                    if eos is not None and (ends := torch.isin(ids, eos).nonzero()).numel():
                        values = values[: int(ends[0]) + 1]
                    answers.append(values.double().tolist())
            if not answers:
                raise ValueError(
                    f"answer_logprobs: domain {domain!r} has no labelled token (all labels are -100, or no batches)."
                )
            out[domain] = answers
    if ledger is not None:
        n_params = int(num_parameters) if num_parameters is not None else non_embedding_parameters(model)
        ledger.add_forward(kind, n_params, tokens)
    return out


def answer_nlls(model, batches: Mapping[str, Iterable[Mapping[str, torch.Tensor]]], **kwargs) -> dict[str, dict]:
    """Per domain, the ``answer_nll`` metric (:mod:`hf_datamix.metrics`) of :func:`answer_logprobs`:
    ``nll_per_answer`` (mean of ``-log p(answer | prompt)``, nats) and ``nll_per_token``, lower is better."""
    from ..metrics import load_metric

    metric = load_metric("answer_nll")
    return {
        domain: metric.compute(predictions=values)
        for domain, values in answer_logprobs(model, batches, **kwargs).items()
    }
