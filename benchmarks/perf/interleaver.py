"""Part 1: blocks/s of the Interleaver vs ``datasets.interleave_datasets`` on identical blocks."""

from __future__ import annotations

from .common import (
    Context,
    load_benchmark,
)


def part_interleaver(ctx: Context) -> dict:
    bench = load_benchmark("interleaver")
    samples, block = (2000, 128) if ctx.quick else (ctx.opts.interleaver_samples, 512)
    result = bench.bench_data(samples, block)
    result["tokens_note"] = (
        f"tokens/s = blocks/s x {block}; the cost per block hardly depends on its length, so "
        "at the GPU runs' 1024-token blocks the interleaver's tokens/s is about twice this"
    )
    result["method"] = (
        "benchmarks/interleaver.py bench_data: 6 synthetic domains x 4000 pre-tokenised blocks, "
        "weights 1..6, one process; the same blocks as datasets.Dataset (map-style and "
        "to_iterable_dataset) through datasets.interleave_datasets(probabilities=same weights, "
        "stopping_strategy='all_exhausted').with_format('torch'); first `samples` samples timed"
    )
    # gpu ratio fields are (re)computed in finish() from part 5's measurement when it ran
    result.pop("ratio_to_gpu_20m_consumption", None)
    result.pop("gpu_20m_tokens_per_s_reference", None)
    return result
