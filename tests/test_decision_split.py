"""Decisions never see the test blocks: every token a strategy's decision forwards is checked against them."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from conftest import datamix_args, make_docs, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer, DomainSet, DomainSpec, create_strategy
from hf_datamix.data.blocks import pack_domains


STRATEGIES = {
    "op_mix": dict(probe_steps=2, law_starts=10, eval_blocks=3, probe_batch_size=2),
    "olmix_reuse": dict(swarm_size=4, proxy_steps=2, proxy_batch_size=2, proxy_eval_blocks=2, law_starts=10),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_test_block_reaches_a_decision(name, tmp_path, tokenizer, monkeypatch):
    strategy = create_strategy(name, **STRATEGIES[name])
    seen: list[torch.Tensor] = []
    deciding = [False]
    forward = torch.nn.Embedding.forward

    def recording(module, ids):  # every model's token embedding: probes, candidates and proxies alike
        if deciding[0]:
            seen.append(ids.detach().reshape(-1, ids.shape[-1]).cpu())
        return forward(module, ids)

    decide = type(strategy).decide

    def watched(self, context):
        deciding[0] = True
        try:
            return decide(self, context)
        finally:
            deciding[0] = False

    monkeypatch.setattr(torch.nn.Embedding, "forward", recording)
    monkeypatch.setattr(type(strategy), "decide", watched)
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        args=datamix_args(tmp_path, max_steps=5, max_eval_blocks=4),
        domains=make_domain_set(),
        strategy=strategy,
        processing_class=tokenizer,
    )
    trainer.train()
    assert seen, "the decision forwarded nothing"
    rows = {row.numpy().astype(np.int64).tobytes() for batch in seen for row in batch if row.shape[0] == 32}
    test = {b.astype(np.int64).tobytes() for blocks in trainer.eval_blocks.values() for b in blocks}
    decision = {b.astype(np.int64).tobytes() for blocks in trainer.decision_blocks.values() for b in blocks}
    assert not rows & test
    assert rows & decision  # what the decision scored on


def _domain(name, eval_docs, **extra):
    return DomainSpec(
        name,
        train=datasets.Dataset.from_dict({"text": make_docs(name, 30, seed=1)}),
        eval=datasets.Dataset.from_dict({"text": make_docs(name, eval_docs, seed=2)}),
        **extra,
    )


def test_decision_blocks_are_carved_from_eval_at_most_half(tmp_path, tokenizer):
    domains = DomainSet([_domain("alpha", 30)])
    whole = pack_domains(domains, tokenizer, datamix_args(tmp_path, decision_blocks=0))
    n = len(whole.eval_blocks["alpha"])
    assert n >= 10
    np.testing.assert_array_equal(whole.decision_blocks["alpha"], whole.eval_blocks["alpha"])  # 0: shared (leaks)
    carved = pack_domains(domains, tokenizer, datamix_args(tmp_path, decision_blocks=3, max_eval_blocks=2))
    np.testing.assert_array_equal(carved.decision_blocks["alpha"], whole.eval_blocks["alpha"][:3])
    np.testing.assert_array_equal(carved.eval_blocks["alpha"], whole.eval_blocks["alpha"][3:5])
    half = pack_domains(domains, tokenizer, datamix_args(tmp_path, decision_blocks=10_000))
    assert len(half.decision_blocks["alpha"]) == n // 2 and len(half.eval_blocks["alpha"]) == n - n // 2


def test_explicit_decision_data_leave_eval_whole(tmp_path, tokenizer):
    decision = datasets.Dataset.from_dict({"text": make_docs("alpha", 4, seed=7)})
    with_explicit = DomainSet([_domain("alpha", 8, decision=decision)])
    packed = pack_domains(with_explicit, tokenizer, datamix_args(tmp_path))
    whole = pack_domains(DomainSet([_domain("alpha", 8)]), tokenizer, datamix_args(tmp_path, decision_blocks=0))
    np.testing.assert_array_equal(packed.eval_blocks["alpha"], whole.eval_blocks["alpha"])
    assert not {b.tobytes() for b in packed.decision_blocks["alpha"]} & {
        b.tobytes() for b in whole.eval_blocks["alpha"]
    }


def test_too_little_eval_data_and_bad_settings_are_named(tmp_path, tokenizer):
    tiny_eval = DomainSpec(
        "alpha",
        train=datasets.Dataset.from_dict({"text": make_docs("alpha", 30)}),
        eval=datasets.Dataset.from_dict({"text": ["apple " * 20]}),
    )
    with pytest.raises(ValueError, match="'alpha'.*too few to keep decision blocks apart.*decision_blocks=0"):
        pack_domains(DomainSet([tiny_eval]), tokenizer, datamix_args(tmp_path))
    with pytest.raises(ValueError, match="decision_blocks=-1"):
        datamix_args(tmp_path, decision_blocks=-1)
