"""On-policy self-distillation, the learner of the ``on_policy_distill`` baseline (SDFT-style).

The student samples a completion for the plain prompt; the teacher is the same network conditioned on
the prompt *plus the gold demonstration*, kept as an exponential moving average of the student
(``teacher <- rate * student + (1 - rate) * teacher`` after every optimizer step, rate 0.01); the loss
is the per-token reverse KL(student || teacher) over the full vocabulary on the sampled completion.

Pieces:

* :class:`DistillConfig`: the knobs, validated.
* :func:`teacher_prompt` / :func:`add_distillation_columns`: the teacher's conversation and the
  tokenized ``prompt_ids`` / ``teacher_prompt_ids`` columns of a TRL conversational
  prompt-completion dataset.
* :class:`DistillationCollator`: left-padded batches of both prompts.
* :func:`reverse_kl_per_token`: TRL's SDFT full-vocabulary divergence with ``alpha=1.0``.
* :class:`OnPolicyDistiller`: rollouts, teacher and student passes, the loss, the EMA teacher
  (TRL's ``SyncRefModelCallback.sync_target_model``), token counts for the compute ledger, and
  teacher checkpoints (``distill_teacher.safetensors``); :meth:`~OnPolicyDistiller.demonstration_gain`
  measures the method's premise, that the teacher shown the gold answer knows it better than the student.

The trainer that uses this module owns the optimizer, gradient accumulation scaling, cross-process
reduction of the token counts, and saving only on the main process.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from accelerate.state import is_initialized as accelerate_is_initialized
from accelerate.utils import extract_model_from_parallel
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from trl.data_utils import is_conversational
from trl.trainer.callbacks import SyncRefModelCallback
from trl.trainer.utils import pad


with warnings.catch_warnings():
    # This module depends on the experimental SDFT loss on purpose (the divergence is the one the SDFT
    # trainer uses); the import-time "experimental API" notice would otherwise reach every user.
    warnings.filterwarnings("ignore", message=".*trl.experimental.*")
    from trl.experimental.sdft.loss_utils import (
        compute_full_logit_self_distillation_loss,
    )

from .compute import ComputeLedger


TEACHER_FILE = "distill_teacher.safetensors"
COUNT_KINDS = ("generate", "teacher", "train", "eval")
# The demonstration stands on its own line, so it tokenizes as the answer does after the assistant header
# ("answer: 42" gives the token " 42", the answer is "42"): a small model can only copy tokens it has seen.
DEFAULT_TEACHER_PROMPT_TEMPLATE = (
    "{prompt}\n\nAn example of a correct answer:\n{demonstration}\n\nNow answer the question yourself."
)


def _is_int(value) -> bool:
    # numpy integers count (counts and sizes often come from numpy); bools do not.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class DistillConfig:
    """Settings of on-policy self-distillation (see ``methods.md``, "On-policy distillation baseline").

    Args:
        teacher_update_rate: EMA rate of the teacher after every optimizer step,
            ``teacher <- rate * student + (1 - rate) * teacher``; in [0, 1] (0 keeps the initial teacher).
        max_new_tokens: length limit of each on-policy completion.
        temperature: sampling temperature of the student's rollouts; both models' logits are divided by
            it in the loss too (as TRL's SDFT trainer does), so the loss compares the distributions the
            rollouts are drawn from.
        top_k: sample from the ``top_k`` most likely tokens; 0 samples from the full vocabulary.
        teacher_prompt_template: the teacher's last user message; must contain ``{prompt}`` (the
            student's last user message) and ``{demonstration}`` (the gold completion's text).
        num_loss_tokens_to_skip: leave the first completion tokens out of the loss (SDFT uses this to
            suppress teacher-prompt artifacts); must be below ``max_new_tokens``.
        seed: ``None`` samples rollouts from the global torch RNG (which ``Trainer`` seeds and saves in
            checkpoints). An int samples each call from its own generator state derived from
            ``(seed, rank, call number)`` and leaves the global RNG stream untouched.
    """

    teacher_update_rate: float = 0.01
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    teacher_prompt_template: str = DEFAULT_TEACHER_PROMPT_TEMPLATE
    num_loss_tokens_to_skip: int = 0
    seed: int | None = None

    def __post_init__(self):
        rate = self.teacher_update_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"DistillConfig.teacher_update_rate must be a number in [0, 1], got {rate!r}; "
                "use 0.01 (the EMA rate of methods.md), or 0 for a teacher frozen at its initial weights."
            )
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(
                f"DistillConfig.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}; use e.g. 32."
            )
        temp = self.temperature
        if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not math.isfinite(temp) or temp <= 0:
            raise ValueError(
                f"DistillConfig.temperature must be a finite number > 0, got {temp!r}; "
                "use 1.0 to sample from the student's own distribution."
            )
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(
                f"DistillConfig.top_k must be an int >= 0, got {self.top_k!r}; use 0 for full-vocabulary sampling."
            )
        self._check_template(self.teacher_prompt_template)
        skip = self.num_loss_tokens_to_skip
        if not _is_int(skip) or skip < 0 or skip >= self.max_new_tokens:
            raise ValueError(
                f"DistillConfig.num_loss_tokens_to_skip must be an int in [0, max_new_tokens - 1] = "
                f"[0, {self.max_new_tokens - 1}], got {skip!r}; otherwise no completion token is ever trained. "
                "Use 0, or raise max_new_tokens."
            )
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(
                f"DistillConfig.seed must be None or an int >= 0, got {self.seed!r}; "
                "use None to sample from the global RNG."
            )

    @staticmethod
    def _check_template(template) -> None:
        fix = f"use e.g. {DEFAULT_TEACHER_PROMPT_TEMPLATE!r}."
        if not isinstance(template, str):
            raise TypeError(f"DistillConfig.teacher_prompt_template must be a str, got {template!r}; {fix}")
        missing = [name for name in ("{prompt}", "{demonstration}") if name not in template]
        if missing:
            raise ValueError(f"DistillConfig.teacher_prompt_template must contain {missing} (got {template!r}); {fix}")
        try:
            template.format(prompt="", demonstration="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"DistillConfig.teacher_prompt_template {template!r} cannot be formatted with only "
                f"{{prompt}} and {{demonstration}} ({type(err).__name__}: {err}); write literal braces as "
                f"'{{{{' and '}}}}'."
            ) from err


def _message_text(content) -> str:
    # Multimodal-style content is a list of parts; only the text parts carry the demonstration.
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return str(content)


def teacher_prompt(prompt: list[dict], completion: list[dict] | str, template: str) -> list[dict]:
    """The teacher's conversation: ``prompt`` with its last user message rewritten by ``template``.

    ``template`` is formatted with ``prompt`` = the last user message's text and ``demonstration`` = the
    completion's assistant text (assistant messages joined by newlines, or the string itself).  Other
    messages (system turns, earlier exchanges) are kept unchanged.

    Raises:
        ValueError: when the prompt is not a non-empty list of messages ending with a user turn, or the
            completion holds no assistant message.
    """
    if not isinstance(prompt, list) or not prompt or not all(isinstance(m, Mapping) for m in prompt):
        raise ValueError(
            f"teacher_prompt: prompt must be a non-empty list of chat messages, got {prompt!r}; "
            "use a TRL conversational prompt such as [{'role': 'user', 'content': '...'}]."
        )
    last = prompt[-1]
    if last.get("role") != "user":
        raise ValueError(
            f"teacher_prompt: the prompt must end with a user message, but its last message has role "
            f"{last.get('role')!r}; assistant prefills are not supported, end the prompt with the user's question."
        )
    if isinstance(completion, str):
        demonstration = completion
    else:
        parts = [_message_text(m.get("content", "")) for m in completion or [] if m.get("role") == "assistant"]
        if not parts:
            raise ValueError(
                f"teacher_prompt: the completion holds no assistant message, got {completion!r}; "
                "use [{'role': 'assistant', 'content': '<gold answer>'}] or a plain string."
            )
        demonstration = "\n".join(parts)
    content = template.format(prompt=_message_text(last.get("content", "")), demonstration=demonstration)
    return [dict(m) for m in prompt[:-1]] + [{**last, "content": content}]


def _chat_ids(tokenizer, conversation: list[dict]) -> list[int]:
    encoded = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def _gold_ids(tokenizer, prompt: list[dict], completion, prompt_ids: list[int]) -> list[int]:
    """The gold completion's tokens as the chat template renders them after the prompt, up to the first eos."""
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    full = tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True, return_dict=True)["input_ids"]
    gold = list(full[len(prompt_ids) :]) if list(full[: len(prompt_ids)]) == prompt_ids else list(full)
    eos = tokenizer.eos_token_id
    return gold[: gold.index(eos) + 1] if eos in gold else gold


def add_distillation_columns(
    dataset: datasets.Dataset, tokenizer, template: str, num_proc: int | None = None
) -> datasets.Dataset:
    """Add ``prompt_ids``, ``teacher_prompt_ids`` and ``gold_ids`` to a TRL conversational prompt-completion dataset.

    ``prompt_ids`` is ``tokenizer.apply_chat_template(prompt, add_generation_prompt=True)``;
    ``teacher_prompt_ids`` the same for :func:`teacher_prompt` ``(prompt, completion, template)``;
    ``gold_ids`` the gold completion's tokens after the prompt, up to and including the first eos (what
    :meth:`OnPolicyDistiller.demonstration_gain` scores; the loss never sees them).
    Every other column is kept.  An ``IterableDataset`` is mapped lazily (``num_proc`` ignored).

    Raises:
        ValueError: missing ``prompt``/``completion`` columns, a non-conversational dataset, a tokenizer
            without a chat template, or a bad template.
    """
    DistillConfig._check_template(template)
    columns = dataset.column_names
    if columns is not None:
        missing = [c for c in ("prompt", "completion") if c not in columns]
        if missing:
            raise ValueError(
                f"add_distillation_columns: the dataset lacks column(s) {missing} (it has {columns}); "
                "on-policy distillation needs a TRL conversational prompt-completion dataset "
                "with 'prompt' and 'completion' message lists."
            )
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "add_distillation_columns: the tokenizer has no chat template; set tokenizer.chat_template "
            "(the prompts are conversations)."
        )
    if isinstance(dataset, datasets.Dataset) and len(dataset) and not is_conversational(dataset[0]):
        raise ValueError(
            "add_distillation_columns: the dataset is not conversational (its 'prompt' is not a list of "
            f"messages, first row: {dataset[0]['prompt']!r}); convert prompts and completions to chat messages."
        )

    def tokenize(example):
        conversation = teacher_prompt(example["prompt"], example["completion"], template)
        prompt_ids = _chat_ids(tokenizer, example["prompt"])
        return {
            "prompt_ids": prompt_ids,
            "teacher_prompt_ids": _chat_ids(tokenizer, conversation),
            "gold_ids": _gold_ids(tokenizer, example["prompt"], example["completion"], prompt_ids),
        }

    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(tokenize)
    return dataset.map(tokenize, num_proc=num_proc, desc="Tokenizing distillation prompts")


@dataclass
class DistillationCollator:
    """Batches ``prompt_ids`` and ``teacher_prompt_ids``, left-padded (generation continues at the right).

    Returns LongTensors ``prompt_ids``, ``prompt_mask``, ``teacher_prompt_ids`` and
    ``teacher_prompt_mask`` (1 on tokens, 0 on padding), and when every example has them the
    right-padded ``gold_ids`` / ``gold_mask``; other keys of the examples are ignored.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("DistillationCollator: got an empty batch.")
        batch = {}
        for key, mask_key in (("prompt_ids", "prompt_mask"), ("teacher_prompt_ids", "teacher_prompt_mask")):
            if any(key not in example for example in examples):
                raise ValueError(
                    f"DistillationCollator: an example lacks {key!r} (keys: {sorted(examples[0])}); "
                    "run add_distillation_columns on the dataset and keep its columns "
                    "(remove_unused_columns=False)."
                )
            ids = [torch.as_tensor(example[key], dtype=torch.long) for example in examples]
            if any(t.ndim != 1 or t.numel() == 0 for t in ids):
                raise ValueError(f"DistillationCollator: every {key!r} must be a non-empty list of token ids.")
            masks = [torch.ones_like(t) for t in ids]
            batch[key] = pad(ids, self.pad_token_id, "left", self.pad_to_multiple_of)
            batch[mask_key] = pad(masks, 0, "left", self.pad_to_multiple_of)
        if all(example.get("gold_ids") is not None and len(example["gold_ids"]) for example in examples):
            # Continuations of the prompts: padded on the right.
            gold = [torch.as_tensor(example["gold_ids"], dtype=torch.long) for example in examples]
            batch["gold_ids"] = pad(gold, self.pad_token_id, "right")
            batch["gold_mask"] = pad([torch.ones_like(t) for t in gold], 0, "right")
        return batch


def reverse_kl_per_token(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(student || teacher) = sum_v p_s(v) (log p_s(v) - log p_t(v))`` at every position.

    (B, T, V) logits twice -> (B, T).  TRL's ``compute_full_logit_self_distillation_loss`` with
    ``distillation_alpha=1.0``: there ``F.kl_div(teacher_log_probs, student_log_probs, log_target=True)``
    weighs by the *student's* probabilities, i.e. the reverse KL.  Computed in float32, since bf16
    log-probabilities lose the small differences the loss is made of.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"reverse_kl_per_token: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape (same vocabulary and positions)."
        )
    return compute_full_logit_self_distillation_loss(
        student_logits.float(), teacher_logits.float(), distillation_alpha=1.0
    )


def _forward_kwarg_names(model) -> set[str]:
    # PEFT wrappers take **kwargs and forward them, so ask the underlying model what it accepts.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def _completion_mask(completion_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """1 on every completion token up to and including the first eos, 0 after it."""
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_token_ids), device=completion_ids.device))
    length = completion_ids.size(1)
    # argmax finds the first eos; rows without one keep every token.
    no_eos = torch.full((completion_ids.size(0),), length, dtype=torch.long, device=completion_ids.device)
    first_eos = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), no_eos)
    positions = torch.arange(length, device=completion_ids.device).unsqueeze(0)
    return (positions <= first_eos.unsqueeze(1)).long()


@contextmanager
def _isolated_rng(device: torch.device, seed: int):
    """Seed the CPU generator and ``device``'s generator for the block, then restore both."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


class OnPolicyDistiller:
    """Learner of the ``on_policy_distill`` baseline: student rollouts, EMA teacher, reverse-KL loss.

    Usage by a trainer: :meth:`setup` once with the model to train; :meth:`compute_loss` on each
    :class:`DistillationCollator` batch instead of the SFT loss; :meth:`update_teacher` after every
    optimizer step; :meth:`pop_token_counts` (or :meth:`add_to_ledger`) for the compute ledger;
    :meth:`save` / :meth:`load` with checkpoints.

    Args:
        config: the :class:`DistillConfig`.
        tokenizer: gives the eos and pad ids of the rollouts.
        num_parameters: non-embedding parameter count ``N`` of the model, for :meth:`add_to_ledger`.
    """

    def __init__(self, config: DistillConfig, tokenizer, num_parameters: int):
        if not isinstance(config, DistillConfig):
            raise TypeError(f"OnPolicyDistiller: config must be a DistillConfig, got {type(config).__name__}.")
        if not _is_int(num_parameters) or num_parameters < 1:
            raise ValueError(
                f"OnPolicyDistiller: num_parameters must be an int >= 1, got {num_parameters!r}; "
                "use hf_datamix.compute.non_embedding_parameters(model)."
            )
        if tokenizer.eos_token_id is None:
            raise ValueError("OnPolicyDistiller: the tokenizer has no eos token; rollouts could never end.")
        self.config = config
        self.tokenizer = tokenizer
        self.num_parameters = num_parameters
        self.teacher: torch.nn.Module | None = None
        self.token_counts: dict[str, int] = dict.fromkeys(COUNT_KINDS, 0)
        self._calls = 0  # rollouts sampled so far; part of the seed when config.seed is set

    @property
    def pad_token_id(self) -> int:
        """Padding id of the rollouts (the tokenizer's pad token, else its eos token)."""
        pad_id = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad_id is None else pad_id

    def eos_token_ids(self, model) -> list[int]:
        """Every id that ends a completion: the tokenizer's eos and the ones the model's generation config declares."""
        ids = [self.tokenizer.eos_token_id]
        declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for token in [declared] if _is_int(declared) else (declared or []):
            if token not in ids:
                ids.append(int(token))
        return ids

    # ------------------------------------------------------------------ teacher

    def setup(self, model) -> None:
        """Make the EMA teacher: a frozen, eval-mode deep copy of the current student, on its device."""
        student = extract_model_from_parallel(model)
        teacher = copy.deepcopy(student)
        teacher.requires_grad_(False)
        for param in teacher.parameters():
            param.grad = None  # deepcopy would carry a stale student gradient along
        self.teacher = teacher.eval()

    def _require_teacher(self, what: str) -> torch.nn.Module:
        if self.teacher is None:
            raise RuntimeError(f"OnPolicyDistiller.{what}: no teacher yet; call setup(model) first.")
        return self.teacher

    @torch.no_grad()
    def update_teacher(self, model) -> None:
        """EMA step ``teacher <- rate * student + (1 - rate) * teacher`` (TRL's ``sync_target_model``)."""
        teacher = self._require_teacher("update_teacher")
        student = extract_model_from_parallel(model)
        rate = self.config.teacher_update_rate
        if accelerate_is_initialized():
            # Gathers ZeRO-3 shards when DeepSpeed is active.
            SyncRefModelCallback.sync_target_model(student, teacher, rate)
        else:
            # sync_target_model asks AcceleratorState for DeepSpeed, which raises outside an Accelerator;
            # without one there is nothing to gather, so the plain update is the same thing.
            SyncRefModelCallback._sync_target_model(student, teacher, rate)

    def save(self, directory: str) -> None:
        """Write the teacher's weights to ``directory/distill_teacher.safetensors`` (tied weights handled)."""
        teacher = self._require_teacher("save")
        os.makedirs(directory, exist_ok=True)
        save_model(teacher, os.path.join(directory, TEACHER_FILE), metadata={"calls": str(self._calls)})

    def load(self, directory: str) -> None:
        """Load the teacher's weights saved by :meth:`save` (exact; the teacher keeps its device)."""
        teacher = self._require_teacher("load")
        path = os.path.join(directory, TEACHER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"OnPolicyDistiller.load: {path} does not exist; save(directory) writes it.")
        device = next(teacher.parameters()).device
        load_model(teacher, path, strict=True, device=str(device))  # strict: raises on any name mismatch
        with safe_open(path, framework="pt") as handle:
            self._calls = int((handle.metadata() or {}).get("calls", 0))

    # ------------------------------------------------------------------ loss

    def _rollout_seed(self) -> int:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        return int(np.random.SeedSequence([self.config.seed, rank, self._calls]).generate_state(1)[0])

    def generate(
        self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample one completion per left-padded prompt with the (unwrapped) student, in eval mode.

        Returns ``completion_ids`` (B, C) and ``completion_mask`` (B, C): 1 up to and including the first
        eos.  Sampling warpers the model's generation config might set (top-p, min-p, ...) are switched
        off so rollouts come from the temperature-scaled (top-k) distribution the loss compares.
        """
        student = extract_model_from_parallel(model)
        cfg = self.config
        was_training = student.training
        eos_ids = self.eos_token_ids(student)
        seed = self._rollout_seed() if cfg.seed is not None else None
        self._calls += 1
        student.eval()
        try:
            with torch.no_grad(), _isolated_rng(prompt_ids.device, seed) if seed is not None else nullcontext():
                sequences = student.generate(
                    input_ids=prompt_ids,
                    attention_mask=prompt_mask,
                    do_sample=True,
                    temperature=cfg.temperature,
                    top_k=cfg.top_k,
                    top_p=1.0,
                    min_p=None,
                    typical_p=1.0,
                    repetition_penalty=1.0,
                    max_new_tokens=cfg.max_new_tokens,
                    eos_token_id=eos_ids,
                    pad_token_id=self.pad_token_id,
                    use_cache=True,
                )
        finally:
            student.train(was_training)
        completion_ids = sequences[:, prompt_ids.size(1) :]
        return completion_ids, _completion_mask(completion_ids, eos_ids)

    def _completion_logits(self, model, accepted: set[str], ids, mask, num_completion: int) -> torch.Tensor:
        """Logits predicting each completion token, divided by the temperature: (B, C, V)."""
        kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
        if "position_ids" in accepted:
            # Same positions as generate() gives left-padded prompts, so scores match the sampling pass.
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if "logits_to_keep" in accepted:
            kwargs["logits_to_keep"] = num_completion + 1
        logits = model(**kwargs).logits
        return logits[:, -num_completion - 1 : -1, :] / self.config.temperature

    def compute_loss(self, model, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sample, score and return the mean reverse KL(student || teacher) over the completion tokens.

        ``inputs`` is a :class:`DistillationCollator` batch on the model's device.  ``model`` may be
        wrapped (DDP): rollouts use the unwrapped student, the gradient pass goes through ``model``
        itself so its hooks fire.  The loss is a plain mean over this batch's loss tokens (gradient
        accumulation scaling is the caller's).  Token counts are added to :attr:`token_counts`; with
        gradients disabled (evaluation) the student's tokens count as ``eval``, not ``train``.
        """
        teacher = self._require_teacher("compute_loss")
        student = extract_model_from_parallel(model)
        device = next(student.parameters()).device
        if next(teacher.parameters()).device != device:
            # The trainer may move the student after setup() (e.g. to its accelerator device).
            teacher.to(device)
        prompt_ids, prompt_mask = inputs["prompt_ids"].to(device), inputs["prompt_mask"].to(device)
        teacher_ids, teacher_mask = inputs["teacher_prompt_ids"].to(device), inputs["teacher_prompt_mask"].to(device)

        completion_ids, completion_mask = self.generate(model, prompt_ids, prompt_mask)
        num_completion = completion_ids.size(1)
        accepted = _forward_kwarg_names(student)

        with torch.no_grad():
            teacher_logits = self._completion_logits(
                teacher,
                _forward_kwarg_names(teacher),
                torch.cat([teacher_ids, completion_ids], dim=1),
                torch.cat([teacher_mask, completion_mask], dim=1),
                num_completion,
            )
        student_logits = self._completion_logits(
            model,
            accepted,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([prompt_mask, completion_mask], dim=1),
            num_completion,
        )

        loss_mask = completion_mask
        if self.config.num_loss_tokens_to_skip:
            positions = torch.arange(num_completion, device=device).unsqueeze(0)
            loss_mask = loss_mask * (positions >= self.config.num_loss_tokens_to_skip).long()
        per_token = reverse_kl_per_token(student_logits, teacher_logits)
        # clamp: when every completion ends within the skipped tokens the loss is a zero that is still
        # attached to the graph, so backward (and DDP's gradient sync) runs as on any other step.
        loss = (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1)

        prompt_tokens, generated = int(prompt_mask.sum()), int(completion_mask.sum())
        self.token_counts["generate"] += prompt_tokens + generated
        self.token_counts["teacher"] += int(teacher_mask.sum()) + generated
        self.token_counts["train" if torch.is_grad_enabled() else "eval"] += prompt_tokens + generated
        return loss

    @torch.no_grad()
    def demonstration_gain(self, model, inputs: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """What the teacher knows that the student does not, on a :class:`DistillationCollator` batch with gold ids.

        Returns ``student_nll`` (the gold completion's NLL given the plain prompt, under ``model``),
        ``teacher_nll`` (given the teacher's prompt with the demonstration, under the teacher), both in
        nats per answer at the sampling temperature, and ``gain = student_nll - teacher_nll``.  The
        distillation target carries information about the gold answer only through this gain: with a
        gain near 0 (a model that cannot use the demonstration in its context) the reverse KL pulls the
        student towards a teacher that does not know the answer either, and the loss falls to 0 as the
        EMA teacher follows the student, with nothing learnt.  Forward passes count as ``eval`` and
        ``teacher`` tokens.
        """
        teacher = self._require_teacher("demonstration_gain")
        if "gold_ids" not in inputs:
            raise ValueError(
                "OnPolicyDistiller.demonstration_gain: the batch has no 'gold_ids'; build the dataset with "
                "add_distillation_columns and batch it with DistillationCollator."
            )
        student = extract_model_from_parallel(model)
        device = next(student.parameters()).device
        gold, gold_mask = inputs["gold_ids"].to(device), inputs["gold_mask"].to(device)
        nll = {}
        for name, net, prefix in (("student_nll", student, "prompt"), ("teacher_nll", teacher, "teacher_prompt")):
            ids, mask = inputs[f"{prefix}_ids"].to(device), inputs[f"{prefix}_mask"].to(device)
            was_training = net.training
            net.eval()
            try:
                logits = self._completion_logits(
                    net,
                    _forward_kwarg_names(net),
                    torch.cat([ids, gold], dim=1),
                    torch.cat([mask, gold_mask], dim=1),
                    gold.size(1),
                )
            finally:
                net.train(was_training)
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
            nll[name] = float(-(logprobs * gold_mask).sum() / gold.size(0))
            self.token_counts["eval" if name == "student_nll" else "teacher"] += int(mask.sum() + gold_mask.sum())
        return {**nll, "gain": nll["student_nll"] - nll["teacher_nll"]}

    # ------------------------------------------------------------------ compute ledger

    def pop_token_counts(self) -> dict[str, int]:
        """This process's token counts since the last call, then reset them.

        Keys: ``generate`` (prompt + generated tokens of the rollouts), ``teacher`` (teacher prompt +
        completion), ``train`` (student prompt + completion, trained) and ``eval`` (the same, when
        :meth:`compute_loss` ran with gradients disabled).  Padding is never counted.
        """
        counts = dict(self.token_counts)
        self.token_counts = dict.fromkeys(COUNT_KINDS, 0)
        return counts

    def add_to_ledger(self, ledger: ComputeLedger, counts: Mapping[str, float]) -> None:
        """Add ``counts`` (already summed over processes) to ``ledger``: ``train`` as training tokens
        (6·N each), ``generate``, ``teacher`` and ``eval`` as forward-only tokens (2·N each)."""
        for kind, tokens in counts.items():
            if kind not in COUNT_KINDS:
                raise ValueError(
                    f"OnPolicyDistiller.add_to_ledger: unknown count {kind!r}; expected {list(COUNT_KINDS)}."
                )
            if not tokens:
                continue
            if kind == "train":
                ledger.add_training(kind, self.num_parameters, tokens)
            else:
                ledger.add_forward(kind, self.num_parameters, tokens)
