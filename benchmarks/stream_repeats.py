"""How often the embedded corpus's sample stream draws one block twice inside one global batch.

multigpu.py counts blocks that two ranks train on in the same step; with the ~1M-token embedded
corpus a small domain is re-read many times, so the global stream itself can hold a block twice in
one batch, independent of how many processes share it.  This counts those repeats in the stream
alone (no model, no processes), at multigpu.py's two shapes, with uniform weights.

    python benchmarks/stream_repeats.py --commit $(git rev-parse HEAD)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
import tempfile

import numpy as np


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import provenance  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))


def count_repeats(block: int, batch: int, steps: int, preset: str = "20m") -> dict:
    from hf_datamix import DataMixArguments, Mixture
    from hf_datamix.data.blocks import pack_domains
    from hf_datamix.data.interleaver import Interleaver
    from hf_datamix.recipe_args import RunArguments, load_domains, load_tokenizer

    run = RunArguments(model_preset=preset)
    tokenizer, domains = load_tokenizer(run), load_domains(run)
    args = DataMixArguments(output_dir=tempfile.mkdtemp(), block_size=block, report_to=[], use_cpu=True)
    packed = pack_domains(domains, tokenizer, args)
    sources, tokens = packed.sources, packed.token_counts
    stream = Interleaver(sources, Mixture(dict.fromkeys(domains.names, 1.0)), seed=0)
    stream.chunk_size = batch
    samples, repeats = iter(stream), 0
    for _ in range(steps):
        seen = collections.Counter(
            hashlib.sha1(np.asarray(next(samples)["input_ids"]).tobytes()).hexdigest() for _ in range(batch)
        )
        repeats += sum(1 for n in seen.values() if n > 1)
    return {
        "block_size": block,
        "global_batch": batch,
        "steps": steps,
        "train_blocks_per_domain": {k: v // block for k, v in tokens.items()},
        "blocks_twice_in_one_global_batch": repeats,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--commit", default=None, help="commit measured (default: git rev-parse HEAD)")
    opts = parser.parse_args(argv)
    result = {
        **provenance("stream_repeats", opts.commit, argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "weights": "uniform",
        "seed": 0,
        "shapes": [count_repeats(256, 128, 120), count_repeats(1024, 64, 120)],
    }
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "stream_repeats.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    print(json.dumps(result["shapes"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
