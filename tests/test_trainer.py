"""DataMixTrainer end to end on CPU: logging, outputs, decisions, exact resume, workers, bad inputs."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import pytest
import torch
from conftest import datamix_args, make_domain_set, tiny_llama
from transformers.utils import logging as hf_logging

from hf_datamix import DataMixTrainer, Mixture, Strategy, StrategyConfig
from hf_datamix.domains import DomainSet, DomainSpec


@dataclass
class SwitchConfig(StrategyConfig):
    at: int = 3
    to: str = "gamma"


class SwitchStrategy(Strategy):
    """Test strategy: uniform, then everything on one domain after step `at`."""

    name = "switch_test"
    description = "test"
    config_class = SwitchConfig

    def next_decision_step(self, step, max_steps):
        return self.config.at if step <= self.config.at else None

    def decide(self, context):
        names = context.domains.names
        return Mixture({n: (1.0 if n == self.config.to else 0.0) for n in names})


class RecordingTrainer(DataMixTrainer):
    """Records every micro-batch's input ids and every step's loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[list[int]] = []
        self.step_losses: list[float] = []

    def training_step(self, model, inputs, *args, **kwargs):
        self.seen.append([int(x) for x in inputs["input_ids"].flatten()])
        loss = super().training_step(model, inputs, *args, **kwargs)
        self.step_losses.append(float(loss))
        return loss


def make_args(tmp_path, **overrides):
    return datamix_args(tmp_path, **{"gradient_accumulation_steps": 2, "save_steps": 5, "seed": 7, **overrides})


def run(tmp_path, tokenizer, strategy=None, resume=None, model_seed=0, **overrides):
    trainer = RecordingTrainer(
        model=tiny_llama(len(tokenizer), seed=model_seed),
        args=make_args(tmp_path, **overrides),
        domains=make_domain_set(),
        strategy=strategy or SwitchStrategy(at=3),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_training_logs_mixture_and_writes_outputs(tmp_path, tokenizer):
    trainer = run(tmp_path, tokenizer, eval_strategy="steps", eval_steps=5)
    logs = trainer.state.log_history
    train_logs = [log for log in logs if "loss" in log]
    assert train_logs and all(f"mix/{d}" in log for log in train_logs for d in ("alpha", "beta", "gamma"))
    assert train_logs[0]["mix/alpha"] == pytest.approx(1 / 3)
    assert train_logs[-1]["mix/gamma"] == 1.0
    evals = [log for log in logs if "eval_alpha_loss" in log]
    assert evals and all(0 < log["eval_alpha_loss"] < 20 for log in evals)
    assert any("eval_avg_ppl" in log for log in logs)
    history = json.load(open(tmp_path / "mixtures.json"))
    assert [r["kind"] for r in history] == ["initial", "decision"]
    assert history[1]["step"] == 3 and history[1]["weights"]["gamma"] == 1.0
    assert history[1]["from_sample"] == 4 * trainer.samples_per_step
    assert all(abs(sum(r["weights"].values()) - 1) < 1e-9 for r in history)
    compute = json.load(open(tmp_path / "compute.json"))
    assert compute["by_kind"]["train"] == pytest.approx(6 * trainer.num_params * 10 * 4 * 32)
    assert compute["by_kind"]["eval"] > 0
    assert os.path.getsize(tmp_path / "weights.png") > 1000
    assert Mixture.from_pretrained(tmp_path).to_dict() == {"alpha": 0.0, "beta": 0.0, "gamma": 1.0}
    assert os.path.isfile(tmp_path / "checkpoint-5" / "datamix_state.json")


def test_decision_applies_from_the_step_after_next(tmp_path, tokenizer, domain_set):
    trainer = run(tmp_path, tokenizer)
    # Step 3's decision applies from step 5 (1-based): micro-batches 8.. are all gamma.
    domains = trainer.interleaver.domain_sequence(0, 40)
    per_micro = [[domains[i * 2 + j][0] for j in range(2)] for i in range(20)]
    assert all(d == "gamma" for batch in per_micro[8:] for d in batch)
    assert len(trainer.seen) == 20


def test_exact_resume_is_bit_identical(tmp_path, tokenizer):
    full = run(tmp_path / "full", tokenizer)
    # A new process (different init, the checkpoint overrides it) resumes from checkpoint-5;
    # the decision at step 3 is behind it.
    resumed = run(tmp_path / "part", tokenizer, resume=str(tmp_path / "full" / "checkpoint-5"), model_seed=123)
    assert resumed.seen == full.seen[10:]
    assert resumed.step_losses == full.step_losses[10:]
    full_history = json.load(open(tmp_path / "full" / "mixtures.json"))
    resumed_history = json.load(open(tmp_path / "part" / "mixtures.json"))
    assert resumed_history == full_history


def test_resume_with_another_global_batch_is_refused_with_the_numbers(tmp_path, tokenizer):
    run(tmp_path / "full", tokenizer, max_steps=5)
    with pytest.raises(ValueError, match=r"used 4 samples per optimizer step, this run uses 2.*gradient_accumulation"):
        run(
            tmp_path / "part", tokenizer, resume=str(tmp_path / "full" / "checkpoint-5"), gradient_accumulation_steps=1
        )


def test_resume_across_a_pending_weight_change(tmp_path, tokenizer):
    """Checkpoint at step 2, decision at step 3: the resumed run must take the decision itself."""
    full = run(tmp_path / "full", tokenizer, save_steps=2, max_steps=8)
    resumed = run(
        tmp_path / "full2", tokenizer, save_steps=2, max_steps=8, resume=str(tmp_path / "full" / "checkpoint-2")
    )
    assert resumed.seen == full.seen[4:]
    assert resumed.step_losses == full.step_losses[4:]


def test_weight_change_reaches_dataloader_workers(tmp_path, tokenizer):
    plain = run(tmp_path / "w0", tokenizer, dataloader_num_workers=0)
    workers = run(tmp_path / "w2", tokenizer, dataloader_num_workers=2, dataloader_prefetch_factor=4)
    assert workers.seen == plain.seen


def test_single_process_reads_batches_without_dispatching(tmp_path, tokenizer):
    direct = run(tmp_path / "direct", tokenizer, max_steps=4)
    assert direct.args.accelerator_config.dispatch_batches is False
    assert type(direct.get_train_dataloader()).__name__ != "DataLoaderDispatcher"
    dispatched = run(tmp_path / "dispatch", tokenizer, max_steps=4, accelerator_config={"dispatch_batches": True})
    assert type(dispatched.get_train_dataloader()).__name__ == "DataLoaderDispatcher"
    assert direct.seen == dispatched.seen  # the same stream either way


def test_natural_uses_token_counts(tmp_path, tokenizer):
    trainer = run(tmp_path, tokenizer, strategy="natural", max_steps=2)
    total = sum(trainer.token_counts.values())
    weights = json.load(open(tmp_path / "mixtures.json"))[0]["weights"]
    for name, tokens in trainer.token_counts.items():
        assert weights[name] == pytest.approx(tokens / total)


def test_init_mixture_seeds_the_run(tmp_path, tokenizer):
    Mixture({"alpha": 0.5, "beta": 0.5, "gamma": 0.0}).save(tmp_path / "seed.json")
    trainer = run(
        tmp_path / "out", tokenizer, strategy="uniform", max_steps=2, init_mixture=str(tmp_path / "seed.json")
    )
    assert trainer.interleaver.weights_at(0)["gamma"] == 0.0


def test_bad_inputs_fail_before_training(tmp_path, tokenizer):
    model = tiny_llama(len(tokenizer))
    args = make_args(tmp_path)
    with pytest.raises(ValueError, match="Unknown strategy 'unifrom'.*uniform"):
        DataMixTrainer(
            model=model, args=args, domains=make_domain_set(), strategy="unifrom", processing_class=tokenizer
        )
    with pytest.raises(ValueError, match="DataMixArguments"):
        DataMixTrainer(model=model, args=object(), domains=make_domain_set(), processing_class=tokenizer)
    import datasets

    tiny = DomainSpec(
        "tiny",
        train=datasets.Dataset.from_dict({"text": ["two words"]}),
        eval=datasets.Dataset.from_dict({"text": ["x " * 100]}),
    )
    with pytest.raises(ValueError, match="'tiny' has .* fewer than one block of 32"):
        DataMixTrainer(model=model, args=args, domains=DomainSet([tiny]), processing_class=tokenizer)
    with pytest.raises(ValueError, match="no eval split"):
        DomainSpec("noeval", train=datasets.Dataset.from_dict({"text": ["x"]}))
    with pytest.raises(ValueError, match="max_steps"):
        DataMixTrainer(
            model=model, args=make_args(tmp_path, max_steps=-1), domains=make_domain_set(), processing_class=tokenizer
        )
    with pytest.raises(ValueError, match="tokenizer"):
        DataMixTrainer(model=model, args=args, domains=make_domain_set())


def test_resume_with_other_batch_geometry_is_refused(tmp_path, tokenizer):
    run(tmp_path, tokenizer, max_steps=5, save_steps=5)
    with pytest.raises(ValueError, match="samples per optimizer step"):
        run(tmp_path, tokenizer, resume=str(tmp_path / "checkpoint-5"), per_device_train_batch_size=4)


def test_training_changes_every_parameter(tmp_path, tokenizer):
    torch.manual_seed(0)
    trainer = RecordingTrainer(
        model=tiny_llama(len(tokenizer)),
        args=make_args(tmp_path, max_steps=3, save_strategy="no"),
        domains=make_domain_set(),
        strategy="uniform",
        processing_class=tokenizer,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(before[name], param), f"{name} did not change"


def test_init_mixture_from_another_domain_set(tmp_path, tokenizer, caplog):
    Mixture({"alpha": 0.25, "beta": 0.75}).save(tmp_path / "two.json")
    with caplog.at_level("WARNING"):
        trainer = run(
            tmp_path / "a", tokenizer, strategy="uniform", max_steps=1, init_mixture=str(tmp_path / "two.json")
        )
    assert trainer.interleaver.weights_at(0).to_dict() == {"alpha": 0.25, "beta": 0.75, "gamma": 0.0}
    assert "'gamma'" in caplog.text or "gamma" in caplog.text
    Mixture({"alpha": 0.5, "zeta": 0.5}).save(tmp_path / "other.json")
    with pytest.raises(ValueError, match=r"domains \['zeta'\] that this run does not have"):
        run(tmp_path / "b", tokenizer, strategy="uniform", max_steps=1, init_mixture=str(tmp_path / "other.json"))


def test_model_for_next_trainer_saves_a_loadable_model(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    trainer = run(tmp_path, tokenizer, max_steps=2)
    handed = trainer.model_for_next_trainer(str(tmp_path / "final"))
    assert handed is trainer.model  # one process, no FSDP / DeepSpeed: the same object goes on
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    for (name, mine), (_, theirs) in zip(handed.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(mine.cpu(), theirs), name
    assert os.path.isfile(tmp_path / "final" / "tokenizer_config.json")


def test_hf_datamix_logger_takes_trainers_process_log_level(tmp_path, tokenizer):
    logger, verbosity = logging.getLogger("hf_datamix"), hf_logging.get_verbosity()
    try:
        for level, expected in (("info", logging.INFO), ("error", logging.ERROR)):
            DataMixTrainer(
                model=tiny_llama(len(tokenizer)),
                args=datamix_args(tmp_path, log_level=level),
                domains=make_domain_set(),
                processing_class=tokenizer,
            )
            assert logger.level == expected, level
        logger.setLevel(logging.DEBUG)  # "passive" (the default) leaves a level set by the user's own set-up
        DataMixTrainer(
            model=tiny_llama(len(tokenizer)),
            args=datamix_args(tmp_path),
            domains=make_domain_set(),
            processing_class=tokenizer,
        )
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(logging.NOTSET)
        hf_logging.set_verbosity(verbosity)
