"""Benchmark: the Interleaver against datasets.interleave_datasets, and DataMixTrainer against Trainer.

    python benchmarks/interleaver.py [--samples 20000] [--steps 60]

Both data paths read the *same* pre-tokenised blocks with the same weights, in one process.
Writes benchmarks/results/interleaver.json (command, device, commit, every number).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import datasets
import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

from hf_datamix import DataMixArguments, DataMixTrainer, DomainSet, DomainSpec, Interleaver, Mixture
from hf_datamix.data.embedded import embedded_corpus_files, load_embedded_tokenizer
from hf_datamix.data.packing import PackedBlocks
from hf_datamix.models import llama_config


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import provenance  # noqa: E402


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "interleaver.json")


def synthetic_blocks(num_domains: int, blocks_per_domain: int, block_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        f"d{i}": PackedBlocks(f"d{i}", rng.integers(0, 4096, size=(blocks_per_domain, block_size), dtype=np.uint16))
        for i in range(num_domains)
    }


def time_iteration(iterable, samples: int) -> float:
    start = time.perf_counter()
    for count, _ in enumerate(iterable, start=1):
        if count >= samples:
            break
    return time.perf_counter() - start


def bench_data(samples: int, block_size: int, num_domains: int = 6) -> dict:
    sources = synthetic_blocks(num_domains, 4000, block_size)
    weights = Mixture({name: float(i + 1) for i, name in enumerate(sources)})
    ours = Interleaver(sources, weights, seed=0, max_repetitions=None)
    ours_s = time_iteration(ours, samples)
    per_domain = [
        datasets.Dataset.from_dict({"input_ids": src.blocks.astype(np.int64).tolist()}) for src in sources.values()
    ]
    probabilities = weights.to_array(list(sources)).tolist()
    mapped = datasets.interleave_datasets(
        per_domain, probabilities=probabilities, seed=0, stopping_strategy="all_exhausted"
    ).with_format("torch")
    mapped_s = time_iteration(iter(mapped), samples)
    streamed = datasets.interleave_datasets(
        [d.to_iterable_dataset() for d in per_domain],
        probabilities=probabilities,
        seed=0,
        stopping_strategy="all_exhausted",
    ).with_format("torch")
    streamed_s = time_iteration(iter(streamed), samples)
    result = {
        "samples": samples,
        "block_size": block_size,
        "domains": num_domains,
        "interleaver_blocks_per_s": samples / ours_s,
        "interleaver_tokens_per_s": samples * block_size / ours_s,
        "interleave_datasets_map_blocks_per_s": samples / mapped_s,
        "interleave_datasets_iterable_blocks_per_s": samples / streamed_s,
    }
    result["speedup_vs_map"] = result["interleaver_blocks_per_s"] / result["interleave_datasets_map_blocks_per_s"]
    result["speedup_vs_iterable"] = (
        result["interleaver_blocks_per_s"] / result["interleave_datasets_iterable_blocks_per_s"]
    )
    result["gpu_20m_tokens_per_s_reference"] = 0.86e6
    result["ratio_to_gpu_20m_consumption"] = result["interleaver_tokens_per_s"] / 0.86e6
    return result


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def bench_trainer(steps: int, block_size: int, out: str) -> dict:
    tokenizer = load_embedded_tokenizer()
    files = embedded_corpus_files()
    domains = DomainSet([DomainSpec(n, train=f["train"], eval=f["eval"]) for n, f in files.items()])
    common = dict(
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10_000,
        report_to=[],
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
    )
    torch.manual_seed(0)
    model = llama_config("tiny", vocab_size=len(tokenizer))
    from transformers import LlamaForCausalLM

    timer = StepTimer()
    mix = DataMixTrainer(
        model=LlamaForCausalLM(model),
        args=DataMixArguments(
            output_dir=os.path.join(out, "mix"), block_size=block_size, strategy="uniform", **common
        ),
        domains=domains,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    mix.train()
    # The plain Trainer gets the same packed blocks, concatenated in the same uniform proportions.
    blocks = np.concatenate([np.asarray(src.blocks) for src in mix.sources.values()])
    plain_data = datasets.Dataset.from_dict({"input_ids": blocks.astype(np.int64).tolist()})
    plain_data = plain_data.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    torch.manual_seed(0)
    plain_timer = StepTimer()
    plain = Trainer(
        model=LlamaForCausalLM(model),
        args=TrainingArguments(output_dir=os.path.join(out, "plain"), **common),
        train_dataset=plain_data,
        data_collator=default_data_collator,
        callbacks=[plain_timer],
    )
    plain.train()
    warm = max(1, steps // 6)
    ours, base = statistics.median(timer.times[warm:]), statistics.median(plain_timer.times[warm:])
    return {
        "steps": steps,
        "model": "tiny Llama (hf_datamix.models 'tiny')",
        "datamix_uniform_median_step_s": ours,
        "plain_trainer_median_step_s": base,
        "overhead_ratio": ours / base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--out", default=RESULTS)
    opts = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result = {**provenance("interleaver"), "data": bench_data(opts.samples, opts.block_size)}
    with tempfile.TemporaryDirectory() as tmp:
        result["trainer"] = bench_trainer(opts.steps, 128, tmp)
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    with open(opts.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
