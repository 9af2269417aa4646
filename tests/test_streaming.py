"""Streaming domains: read forward once, spilled to blocks, shared by readers, training and resume."""

from __future__ import annotations

import json
import os

import datasets
import numpy as np
import pytest
from conftest import datamix_args, make_docs, tiny_llama

from hf_datamix import DataMixTrainer, DomainSet, DomainSpec, Mixture
from hf_datamix.data.interleaver import Interleaver
from hf_datamix.data.packing import pack_dataset
from hf_datamix.data.streaming import StreamingBlocks


BLOCK = 32


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({"text": doc}) + "\n")
    return str(path)


def stream(path):
    return datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)


@pytest.fixture
def counted(tokenizer, monkeypatch):
    """Counts the training documents the tokenizer sees (texts in ``counted.watch``)."""
    calls = {"docs": 0, "watch": set()}
    original = type(tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        texts = text if isinstance(text, list) else [text]
        calls["docs"] += sum(1 for t in texts if t in calls["watch"])
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", counting)
    calls["original"] = original
    return calls


def docs_needed(tokenizer, original, docs, blocks):
    """Fewest leading documents whose tokens (+ EOS each) fill ``blocks`` blocks."""
    lengths = np.cumsum([len(ids) + 1 for ids in original(tokenizer, docs, add_special_tokens=False)["input_ids"]])
    return int(np.searchsorted(lengths, blocks * BLOCK) + 1)


def test_blocks_equal_map_style_packing_in_any_order_and_read_once(tmp_path, tokenizer, counted):
    docs = make_docs("alpha", 300, seed=1)
    counted["watch"].update(docs)
    path = write_jsonl(tmp_path / "a.jsonl", docs)
    expected = pack_dataset(datasets.Dataset.from_dict({"text": docs}), tokenizer, BLOCK, use_cache=False).blocks
    counted["docs"] = 0
    first = StreamingBlocks(stream(path), tokenizer, BLOCK, name="a", num_tokens=expected.size)
    second = StreamingBlocks(stream(path), tokenizer, BLOCK, name="a")  # another process, or a resumed run
    assert first.num_blocks == len(expected) and first.sequential
    for index in (5, 0, 40, 12, 41, 100, 99):  # out of order, alternating readers
        reader = first if index % 2 else second
        np.testing.assert_array_equal(reader.block(index), expected[index])
    assert counted["docs"] <= docs_needed(tokenizer, counted["original"], docs, 101) + 1
    assert first.spilled() >= 101


def test_a_stream_that_ends_early_names_num_tokens(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "a.jsonl", make_docs("alpha", 5, seed=1))
    source = StreamingBlocks(stream(path), tokenizer, BLOCK, name="short", num_tokens=10**6)
    with pytest.raises(IndexError, match=r"'short' ended after \d+ blocks.*num_tokens"):
        source.block(10**4)


def test_interleaver_reads_a_stream_in_order_in_its_first_epoch(tmp_path, tokenizer, counted):
    docs = make_docs("beta", 200, seed=1)
    counted["watch"].update(docs)
    source = StreamingBlocks(
        stream(write_jsonl(tmp_path / "b.jsonl", docs)), tokenizer, BLOCK, name="b", num_tokens=60 * BLOCK
    )
    interleaver = Interleaver({"b": source}, Mixture({"b": 1.0}), seed=0)
    assert [i for _, i in interleaver.domain_sequence(0, 60)] == list(range(60))
    later = [i for _, i in interleaver.domain_sequence(60, 120)]
    assert sorted(later) == list(range(60)) and later != list(range(60))  # the second epoch is shuffled


def streaming_domains(tmp_path, tokenizer, n_docs=1500):
    specs, watch, counts = [], {}, {}
    for name in ("alpha", "beta"):
        docs = make_docs(name, n_docs, seed=1)
        watch[name] = docs
        ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
        counts[name] = sum(len(row) + 1 for row in ids)
        specs.append(
            DomainSpec(
                name,
                train=write_jsonl(tmp_path / f"{name}.jsonl", docs),
                streaming=True,
                eval=datasets.Dataset.from_dict({"text": make_docs(name, 4, seed=2)}),
                num_tokens=counts[name],
            )
        )
    return DomainSet(specs), watch


def blocks_drawn(trainer, samples):
    """Blocks of each domain the run's first ``samples`` samples take (the first epoch: 0..N-1)."""
    drawn = {}
    for domain, index in trainer.interleaver.domain_sequence(0, samples):
        drawn[domain] = max(drawn.get(domain, 0), index + 1)
    return drawn


def test_training_on_streams_tokenises_what_the_blocks_need_also_after_resume(tmp_path, tokenizer, counted):
    domains, watch = streaming_domains(tmp_path, tokenizer)
    for docs in watch.values():
        counted["watch"].update(docs)

    def train(steps, resume=None):
        args = datamix_args(
            tmp_path / "run",
            max_steps=steps,
            per_device_train_batch_size=8,
            save_steps=40,
            logging_steps=10,
            block_size=BLOCK,
            max_eval_blocks=2,
        )
        trainer = DataMixTrainer(
            model=tiny_llama(len(tokenizer)),
            args=args,
            domains=domains,
            strategy="uniform",
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    counted["docs"] = 0
    trainer = train(80)
    assert all(np.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)
    need = {
        d: docs_needed(tokenizer, counted["original"], watch[d], n) for d, n in blocks_drawn(trainer, 80 * 8).items()
    }
    assert min(need.values()) > 20
    assert counted["docs"] <= 1.05 * sum(need.values()), (counted["docs"], need)
    # A new trainer resumed from step 40 to step 120 reads the spill, and the stream from where it stopped.
    trainer = train(120, resume=str(tmp_path / "run" / "checkpoint-40"))
    need = {
        d: docs_needed(tokenizer, counted["original"], watch[d], n) for d, n in blocks_drawn(trainer, 120 * 8).items()
    }
    assert counted["docs"] <= 1.05 * sum(need.values()), (counted["docs"], need)
    assert os.path.isdir(tmp_path / "run" / "checkpoint-120")


def test_a_writer_killed_mid_extension_leaves_a_spill_the_next_reader_repairs(tmp_path, tokenizer):
    docs = make_docs("gamma", 100, seed=1)
    path = write_jsonl(tmp_path / "g.jsonl", docs)
    expected = pack_dataset(datasets.Dataset.from_dict({"text": docs}), tokenizer, BLOCK, use_cache=False).blocks
    first = StreamingBlocks(stream(path), tokenizer, BLOCK, name="g")
    first.prefetch(10)
    recorded = first.spilled()
    with open(first.path + ".bin", "ab") as handle:  # a block and a half that were never recorded
        handle.write(b"\xff" * (BLOCK * 2 + BLOCK + 7))
    second = StreamingBlocks(stream(path), tokenizer, BLOCK, name="g")
    got = [second.block(i) for i in range(recorded + 5)]
    np.testing.assert_array_equal(np.stack(got), expected[: recorded + 5])


def test_dataloader_workers_share_one_spill_and_deliver_the_main_process_sequence(tmp_path, tokenizer):
    from torch.utils.data import DataLoader

    def interleaver(spill_dir):
        sources = {
            name: StreamingBlocks(
                stream(write_jsonl(tmp_path / f"{name}.jsonl", make_docs(name, 200, seed=1))),
                tokenizer,
                BLOCK,
                name=name,
                spill_dir=str(spill_dir),
            )
            for name in ("alpha", "beta")
        }
        return Interleaver(sources, Mixture({"alpha": 0.7, "beta": 0.3}), seed=3)

    reference = iter(interleaver(tmp_path / "alone"))
    expected = [next(reference)["input_ids"].tolist() for _ in range(64)]
    inter = interleaver(tmp_path / "shared")  # both workers extend one empty spill
    inter.chunk_size = 4
    got = []
    for batch in DataLoader(inter, batch_size=4, num_workers=2):
        got += batch["input_ids"].tolist()
        if len(got) >= 64:
            break
    assert got[:64] == expected
