"""DataMixSFTTrainer: TRL preparation per domain, whole examples through the interleaver, task scoring."""

from __future__ import annotations

import json
import random

import datasets
import numpy as np
import pytest
import torch
from conftest import WORDS, tiny_llama
from huggingface_hub import ModelCard

from hf_datamix import DomainSet, DomainSpec, create_strategy
from hf_datamix.continual import Stage, plan_stages, run_continual
from hf_datamix.data.embedded import load_embedded_tokenizer
from hf_datamix.sft import DataMixSFTConfig, DataMixSFTTrainer


TAGS = ("<|user|>", "<|assistant|>", "<|endoftext|>")


def task_rows(domain: str, n: int, seed: int) -> dict:
    """Prompt-completion rows whose words all come from ``domain``'s vocabulary."""
    rng = random.Random(f"{domain}-{seed}")
    words = WORDS[domain]
    rows = {"prompt": [], "completion": [], "answer": []}
    for _ in range(n):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
        answer = rng.choice(words)
        rows["prompt"].append([{"role": "user", "content": question}])
        rows["completion"].append([{"role": "assistant", "content": answer}])
        rows["answer"].append(answer)
    return rows


def task_domains(names=("alpha", "beta", "gamma")) -> DomainSet:
    return DomainSet(
        [
            DomainSpec(
                name,
                train=datasets.Dataset.from_dict(task_rows(name, 40, 1)),
                eval=datasets.Dataset.from_dict(task_rows(name, 6, 2)),
            )
            for name in names
        ]
    )


@pytest.fixture(scope="module")
def chat_tokenizer():
    return load_embedded_tokenizer()


def sft_args(output_dir, **overrides) -> DataMixSFTConfig:
    values = dict(
        output_dir=str(output_dir),
        max_steps=4,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        max_length=64,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        gradient_checkpointing=False,
        save_strategy="no",
        task_eval_examples=4,
        task_max_new_tokens=4,
    )
    values.update(overrides)
    return DataMixSFTConfig(**values)


def make_trainer(tmp_path, tokenizer, strategy="uniform", domains=None, **overrides):
    return DataMixSFTTrainer(
        model=tiny_llama(len(tokenizer)),
        args=sft_args(tmp_path, **overrides),
        domains=domains or task_domains(),
        strategy=strategy,
        processing_class=tokenizer,
    )


def words_of(tokenizer, ids) -> set[str]:
    text = tokenizer.decode([int(i) for i in ids])
    for tag in TAGS:
        text = text.replace(tag, " ")
    return set(text.split())


@pytest.mark.parametrize("packing", [False, True])
def test_domain_column_survives_preparation_and_packing_keeps_domains_apart(tmp_path, chat_tokenizer, packing):
    trainer = make_trainer(tmp_path, chat_tokenizer, packing=packing)
    for name, dataset in trainer.eval_dataset.items():
        assert set(dataset["domain"]) == {name}
    seen = set()
    for index in range(60):
        sample = trainer.interleaver.sample(index)
        seen.add(sample["domain"])
        # Every word of the (packed) example comes from its own domain's vocabulary.
        assert words_of(chat_tokenizer, sample["input_ids"]) <= set(WORDS[sample["domain"]])
        if packing:
            assert "seq_lengths" in sample and sum(sample["seq_lengths"]) == len(sample["input_ids"])
            assert len(sample["seq_lengths"]) > 1  # several examples per packed row
    assert seen == {"alpha", "beta", "gamma"}
    # Rows drawn by the interleaver are the domain's prepared rows, in full.
    source = trainer.train_examples["beta"]
    assert source.num_tokens == int(source.lengths.sum()) and source.num_blocks > 0


def test_completion_only_loss_masks_the_prompt(tmp_path, chat_tokenizer):
    trainer = make_trainer(tmp_path, chat_tokenizer)
    raw = trainer._raw_train["alpha"]
    for index in range(5):
        sample = trainer.train_examples["alpha"].block(index)
        labels, ids = np.asarray(sample["labels"]), np.asarray(sample["input_ids"])
        masked = int((labels == -100).sum())
        assert masked > 0 and (labels[:masked] == -100).all() and (labels[masked:] == ids[masked:]).all()
        # The unmasked part is exactly the completion of one of the domain's examples.
        completion = chat_tokenizer.decode(ids[masked:].tolist()).replace("<|endoftext|>", "").strip()
        assert completion in set(raw["answer"])
        prompt = chat_tokenizer.decode(ids[:masked].tolist())
        assert prompt.endswith("<|assistant|>\n") and completion not in prompt.split("<|user|>\n", 1)[0]


def test_sft_run_logs_mixture_task_error_and_counts_tokens(tmp_path, chat_tokenizer):
    trainer = make_trainer(tmp_path, chat_tokenizer, strategy="uniform", max_steps=3)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(entry["mix/alpha"] == pytest.approx(1 / 3) for entry in logged)
    # Training tokens in the ledger: exactly the examples the interleaver drew.
    drawn = trainer.interleaver.domain_sequence(0, 3 * trainer.samples_per_step)
    expected = sum(int(trainer.train_examples[d].lengths[i]) for d, i in drawn)
    assert trainer.ledger.tokens_by_kind["train"] == expected
    metrics = trainer.evaluate()
    for name in ("alpha", "beta", "gamma"):
        assert 0.0 <= metrics[f"eval_{name}_error"] <= 1.0
        assert np.isfinite(metrics[f"eval_{name}_loss"])
    assert metrics["eval_avg_error"] == pytest.approx(
        np.mean([metrics[f"eval_{n}_error"] for n in ("alpha", "beta", "gamma")])
    )
    assert trainer.ledger.tokens_by_kind["generate"] > 0
    history = json.loads((tmp_path / "mixtures.json").read_text())
    assert history[0]["kind"] == "initial"
    # push_to_hub's card: TRL's (its tags, quick start, framework versions), then the mixing.
    trainer.create_model_card(model_name="tiny-sft")
    card = ModelCard.load(tmp_path / "README.md")
    assert {"trl", "sft", "hf_datamix", "data-mixing", "uniform"} <= set(card.data.tags)
    assert "## Quick start" in card.text and "### Framework versions" in card.text
    assert "## Data mixing (hf_datamix)" in card.text and "| alpha | 0.3333 |" in card.text


def test_sft_resume_is_exact(tmp_path, chat_tokenizer):
    full = make_trainer(tmp_path / "full", chat_tokenizer, max_steps=6, task_eval_examples=0)
    full.train()
    first = make_trainer(
        tmp_path / "cut", chat_tokenizer, max_steps=6, task_eval_examples=0, save_strategy="steps", save_steps=3
    )
    first.train()
    resumed = make_trainer(tmp_path / "cut", chat_tokenizer, max_steps=6, task_eval_examples=0)
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-3"))
    losses = lambda t: [e["loss"] for e in t.state.log_history if "loss" in e]  # noqa: E731
    assert losses(resumed)[-3:] == pytest.approx(losses(full)[-3:], rel=1e-5)


def test_bad_sft_inputs_fail_before_training(tmp_path, chat_tokenizer):
    with pytest.raises(ValueError, match="segments_per_block"):
        sft_args(tmp_path, segments_per_block=2)
    with pytest.raises(ValueError, match="task_eval_examples"):
        sft_args(tmp_path, task_eval_examples=-1)
    with pytest.raises(ValueError, match="packing=False"):
        make_trainer(tmp_path, chat_tokenizer, strategy="on_policy_distill", packing=True)
    from hf_datamix import DataMixArguments, DataMixTrainer

    with pytest.raises(ValueError, match="DataMixSFTConfig"):
        DataMixSFTTrainer(
            model=tiny_llama(len(chat_tokenizer)),
            args=DataMixArguments(output_dir=str(tmp_path), max_steps=2),
            domains=task_domains(),
            processing_class=chat_tokenizer,
        )
    with pytest.raises(ValueError, match="only DataMixSFTTrainer"):
        from conftest import datamix_args, make_domain_set

        DataMixTrainer(
            model=tiny_llama(len(chat_tokenizer)),
            args=datamix_args(tmp_path),
            domains=make_domain_set(),
            strategy="on_policy_distill",
            processing_class=chat_tokenizer,
        )


def test_dispatching_padded_batches_over_processes_is_refused(tmp_path, chat_tokenizer, monkeypatch):
    monkeypatch.setattr(DataMixSFTConfig, "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match="dispatch_batches=True: DataMixSFTTrainer pads each batch"):
        make_trainer(tmp_path, chat_tokenizer, accelerator_config={"dispatch_batches": True})


STRATEGY_SETTINGS = {
    "op_mix": {"probe_steps": 2, "alpha_points": 3, "eval_blocks": 3, "law_starts": 8},
    "on_policy_distill": {"max_new_tokens": 4},
    "sequential": {},
    "replay": {},
    "retrain": {},
}


@pytest.mark.parametrize("name", sorted(STRATEGY_SETTINGS))
def test_each_strategy_runs_continual_instruction_tuning(tmp_path, chat_tokenizer, name):
    domains = task_domains(("alpha", "beta"))
    stages = [Stage(0, domains.select(["alpha"]), None, 3), *plan_stages(domains, ["alpha"], [["beta"]], 3)]
    strategy = create_strategy(name, STRATEGY_SETTINGS[name])
    torch.manual_seed(0)
    results = run_continual(
        tiny_llama(len(chat_tokenizer)),
        chat_tokenizer,
        sft_args(tmp_path, max_steps=1, task_eval_examples=3),
        stages,
        strategy,
        report=lambda text: None,
        trainer_class=DataMixSFTTrainer,
    )
    last = results["stages"][-1]
    assert set(last["eval_error"]) == {"alpha", "beta"} and last["eval_avg_error"] is not None
    kinds = results["compute"]["by_kind"]
    assert kinds["train"] > 0 and kinds["generate"] > 0
    history = results["history"]
    if name == "op_mix":
        decision = [r for r in history if r["kind"] == "decision"]
        assert len(decision) == 1 and decision[0]["schedule"] == "continual" and kinds["probe"] > 0
        scores = np.asarray(decision[0]["observed"])
        assert scores.shape == (3, 2) and ((scores >= 0) & (scores <= 1)).all()  # task errors, not losses
    if name == "on_policy_distill":
        assert kinds["teacher"] > 0
        assert last["mixture"] == {"alpha": 0.0, "beta": 1.0}
    if name == "sequential":
        assert last["mixture"] == {"alpha": 0.0, "beta": 1.0}
    if name == "retrain":
        assert results["compute"]["tokens_by_kind"]["train"] > 0
        assert [r["stage_step"] for r in history if r["kind"] == "initial"] == [0, 0]


def test_op_mix_scores_candidates_by_answer_logprob(tmp_path, chat_tokenizer):
    domains = task_domains(("alpha", "beta"))
    stages = [Stage(0, domains.select(["alpha"]), None, 2), *plan_stages(domains, ["alpha"], [["beta"]], 2)]
    strategy = create_strategy("op_mix", {**STRATEGY_SETTINGS["op_mix"], "score": "answer_logprob"})
    torch.manual_seed(0)
    results = run_continual(
        tiny_llama(len(chat_tokenizer)),
        chat_tokenizer,
        sft_args(tmp_path, max_steps=1, task_eval_examples=3),
        stages,
        strategy,
        report=lambda text: None,
        trainer_class=DataMixSFTTrainer,
    )
    decision = [r for r in results["history"] if r["kind"] == "decision"]
    assert len(decision) == 1
    scores = np.asarray(decision[0]["observed"])
    # Answer NLLs in nats per answer (an answer is a few tokens of a 4096-token vocabulary), not task errors.
    assert scores.shape == (3, 2) and (scores > 1).all() and np.isfinite(scores).all()
    last = results["stages"][-1]
    assert set(last["eval_answer_nll"]) == {"alpha", "beta"} and last["eval_avg_answer_nll"] > 0


def test_unknown_sft_score_names_the_choices(tmp_path, chat_tokenizer):
    trainer = make_trainer(tmp_path, chat_tokenizer)
    with pytest.raises(ValueError, match="answer_logprob"):
        trainer.decision_scorer("perplexity")
