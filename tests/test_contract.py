"""The strategy contract, for every registered strategy (a plugin installed in the environment included).

Each strategy trains 3 steps on a tiny model, its ``state_dict`` survives a JSON round trip into a fresh
instance, and a run resumed from its step-1 checkpoint ends bit-identical to the uninterrupted run
(weights and ``mixtures.json``).  A strategy with a learner (``on_policy_distill``) runs on
:class:`~hf_datamix.sft.DataMixSFTTrainer`, the trainer that supports learners; the others on
:class:`~hf_datamix.DataMixTrainer`.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer, Strategy, available_strategies, create_strategy, get_strategy_class


#: Small settings of the built-ins that need some (plugins run with their defaults).
SETTINGS = {
    "op_mix": {"probe_steps": 2, "eval_blocks": 2, "law_starts": 5, "probe_batch_size": 2, "num_candidates": 5},
    "olmix_reuse": {"swarm_size": 4, "proxy_steps": 1, "proxy_batch_size": 2, "proxy_eval_blocks": 2, "law_starts": 5},
    "fixed": {"weights": {"alpha": 0.5, "beta": 0.3, "gamma": 0.2}},
    # Seeded rollouts: from the global RNG (the default) a resumed run differs (also before the redesign).
    "on_policy_distill": {"max_new_tokens": 2, "rollout_seed": 0},
}


def has_learner(name: str) -> bool:
    return get_strategy_class(name).learner is not Strategy.learner


def run(name, path, tokenizer, chat_tokenizer, resume=None):
    torch.manual_seed(0)
    strategy = create_strategy(name, SETTINGS.get(name))
    if has_learner(name):
        from test_sft import sft_args, task_domains

        from hf_datamix.sft import DataMixSFTTrainer

        args = sft_args(
            path, max_steps=3, save_strategy="steps", save_steps=1, task_eval_examples=0, per_device_train_batch_size=2
        )
        trainer = DataMixSFTTrainer(
            model=tiny_llama(len(chat_tokenizer)),
            args=args,
            domains=task_domains(),
            strategy=strategy,
            processing_class=chat_tokenizer,
        )
    else:
        args = datamix_args(path, max_steps=3, save_steps=1, max_eval_blocks=2, decision_blocks=2)
        trainer = DataMixTrainer(
            model=tiny_llama(len(tokenizer)),
            args=args,
            domains=make_domain_set(),
            strategy=strategy,
            processing_class=tokenizer,
        )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.fixture(scope="module")
def chat_tokenizer():
    from hf_datamix.data.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


def check_contract(name, tmp_path, tokenizer, chat_tokenizer):
    """3 steps, a JSON round trip of the state, and a resume from step 1 that ends bit-identical."""
    whole = run(name, tmp_path / "whole", tokenizer, chat_tokenizer)
    assert whole.state.global_step == 3 and any("loss" in entry for entry in whole.state.log_history)
    history = json.loads((tmp_path / "whole" / "mixtures.json").read_text())
    assert history[0]["kind"] == "initial" and all(abs(sum(r["weights"].values()) - 1) < 1e-9 for r in history)

    state = json.loads(json.dumps(whole.strategy.state_dict()))  # JSON-serialisable, as checkpoints need
    fresh = create_strategy(name, SETTINGS.get(name))
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state and fresh.settings() == whole.strategy.settings()

    resumed = run(name, tmp_path / "whole", tokenizer, chat_tokenizer, resume=str(tmp_path / "whole" / "checkpoint-1"))
    assert resumed.history == history
    for (key, expected), actual in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(expected, actual), f"{name}: {key} differs after resuming"


@pytest.mark.parametrize("name", available_strategies())
def test_strategy_trains_round_trips_its_state_and_resumes_bit_identically(name, tmp_path, tokenizer, chat_tokenizer):
    check_contract(name, tmp_path, tokenizer, chat_tokenizer)
