"""Shared pieces of mixbench: the domain sets and their staged data, the run shape, the model, the stores.

Data (``stage``): from a corpus written by ``hf-datamix corpus build``, each domain's documents in the
corpus's order, train text up to a token cap, and an eval split of the corpus's eval documents topped
up from the end of train (never more than 15 % of the domain) until it fills the decision and test
blocks, compressed with xz into ``benchmarks/mixbench/data/<set>/`` (git-ignored; the GPU run carries
it) with a ``manifest.json`` of documents, bytes and tokens per split.
"""

from __future__ import annotations

import functools
import json
import lzma
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Any


HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")

#: domain -> cap on train tokens (None: all the corpus has).  Every domain's text is the same on every
#: machine (Debian packages, the interpreter's standard library, generated text), so a set staged again in
#: a later session gives the same tokens (the stores check it).  python_code (site-packages too) is not.
SETS: dict[str, dict[str, int | None]] = {
    # The developers' 5-domain set, with the standard library for python_code. At >= 5 tokens/parameter
    # its small domains run dry under uniform (scripture ~1.0 M tokens, python_docs ~2.8 M): caps bind.
    "five": {"python_stdlib": 12_000_000, "python_docs": None, "scripture": None, "wordnet": None, "man_de": None},
    # Four domains of >= 10 M tokens each: no cap binds at any oracle mixture (largest share 0.5).
    "even": {"python_stdlib": 12_000_000, "gcide": 12_000_000, "wordnet": None, "arithmetic": 12_000_000},
    # Rule 7 of the protocol as written: domains of very different sizes where caps bind, so that natural !=
    # uniform and neither is good.  `five` has binding caps but natural was the best of its oracle mixtures at
    # both decision points (headroom 0) and `even` has no binding cap; here natural puts about half the run on
    # generated arithmetic (all of it: its test loss barely moves with its share, see `even`'s tilts) while
    # uniform asks for 20 % of scripture (~1.0 M tokens: its 4-epoch cap allows ~4 % of the run).
    "skewed": {
        "arithmetic": None,
        "gcide": 12_000_000,
        "python_stdlib": 12_000_000,
        "wordnet": None,
        "scripture": None,
    },
    # Continual midtraining (issue 18, second measurement; the stage plan in continual.STAGE_PLANS): a base of
    # python_stdlib + gcide (23.7 M tokens: 1400 steps of the natural mix stay under 4 epochs), then 5 stages
    # each adding one domain.  A 600-step stage is 39 M tokens: wordnet and arithmetic (>= 10 M) stay under 4
    # epochs even at 100 %, scripture (~1.0 M tokens) is the scarce one (its cap binds above a ~10 % share),
    # and man_de / python_docs bind too at the high new shares of sequential and replay.
    "continual": {
        "python_stdlib": 12_000_000,
        "gcide": 13_000_000,
        "wordnet": None,
        "man_de": None,
        "scripture": None,
        "arithmetic": 12_000_000,
        "python_docs": None,
    },
    # Olmix's setting at 16+ domains (issue 19): 20 leaves cut from real sources by document key
    # (hf_datamix.data.corpus_build.LEAF_RULES), the update sequence over them in updates.SEQUENCES.
    "leaves": {
        "stdlib_test": 6_000_000,
        "stdlib_modules": None,
        "stdlib_packages": None,
        "stdlib_tools": None,
        "docs_library": None,
        "docs_guides": None,
        "docs_capi": None,
        "gcide": 6_000_000,
        "wordnet": 6_000_000,
        "jargon": None,
        "foldoc": None,
        "man_en": None,
        "man_de": 6_000_000,
        "man_fr": 6_000_000,
        "man_es": 6_000_000,
        "kjv_ot": None,
        "kjv_nt": None,
        "headers_glibc": None,
        "headers_linux": None,
        "arithmetic": 6_000_000,
    },
}
EVAL_MAX_SHARE = 0.15


@functools.cache
def flops_per_token(preset: str, block_size: int) -> float:
    """Training FLOPs per token of ``preset`` (the embedded tokenizer's vocabulary) at ``block_size``: see
    :attr:`Shape.flops_per_step` (the model is built on the meta device: no memory, no weights)."""
    import torch
    from transformers import LlamaForCausalLM

    from hf_datamix.models import llama_config

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(preset, vocab_size=len(tokenizer())))
    config = model.config
    head = config.vocab_size * config.hidden_size
    attention = 12 * config.num_hidden_layers * config.hidden_size * block_size
    return float(6 * (model.num_parameters(exclude_embeddings=True) + head) + attention)


@dataclass(frozen=True)
class Shape:
    """The size of one benchmark run (every arm, branch and seed of a benchmark uses the same)."""

    preset: str = "20m"
    block_size: int = 1024
    batch_size: int = 64
    steps: int = 1400  # 91.8 M tokens: 5.2 tokens per non-embedding parameter of the 20m preset
    learning_rate: float = 1e-3
    warmup_steps: int = 28
    decay_fraction: float = 0.2  # WSD: the last 20 % decays, so decision points fall in the stable phase
    decision_blocks: int = 64
    test_blocks: int = 256
    max_repetitions: float = 4.0

    @property
    def tokens_per_step(self) -> int:
        return self.block_size * self.batch_size

    @property
    def flops_per_step(self) -> float:
        """One training step's FLOPs by the formula perf.json keeps beside its counted figure: 6·(N + V·d) per
        token (non-embedding parameters and the tied head's matmul) plus 12·L·d·T for attention.  Only the ratio
        between shapes is used: to pace a shape's first call from another shape's measured seconds."""
        return self.tokens_per_step * flops_per_token(self.preset, self.block_size)

    def step_at(self, fraction: float) -> int:
        return int(round(fraction * self.steps))


SHAPES = {
    "gpu": Shape(),
    # Issue 18's 60M check: the 60m preset on the gpu run's tokens (1.7 per non-embedding parameter, not 5: at
    # 5, 273 M tokens, the skewed set's 63 M training tokens would all pass their 4-epoch caps).
    "60m": Shape(preset="60m"),
    # A CPU check of the whole pipeline (tests): tiny model, tiny data, a few steps.
    "tiny": Shape(
        preset="tiny",
        block_size=32,
        batch_size=4,
        steps=10,
        learning_rate=3e-3,
        warmup_steps=1,
        decision_blocks=4,
        test_blocks=6,
    ),
}


# ---------------------------------------------------------------------------------- staging
def _documents(path: str):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)["text"]


def _write_xz(path: str, texts: list[str]) -> int:
    tmp = path + ".tmp"
    with lzma.open(tmp, "wt", encoding="utf-8", preset=9) as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return os.path.getsize(path)


def stage(corpus: str, set_name: str, shape: Shape, out_dir: str = DATA_DIR) -> dict[str, Any]:
    """Stage ``set_name``'s domains from ``corpus`` into ``out_dir/<set>/`` (see the module docstring)."""
    from hf_datamix.data.embedded import load_embedded_tokenizer

    tokenizer = load_embedded_tokenizer()
    target = dict(SETS[set_name])
    eval_tokens = (shape.decision_blocks + shape.test_blocks) * shape.block_size
    folder = os.path.join(out_dir, set_name)
    os.makedirs(folder, exist_ok=True)
    manifest = {"corpus": os.path.abspath(corpus), "shape": asdict(shape), "domains": {}}

    def count(texts):
        return sum(len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0

    for name, cap in target.items():
        train = list(_documents(os.path.join(corpus, name, "train.jsonl")))
        held = list(_documents(os.path.join(corpus, name, "eval.jsonl")))
        lengths = [count([t]) for t in train]
        total = sum(lengths) + count(held)
        have, moved = count(held), 0
        while have < eval_tokens and train and (have + lengths[-1]) <= EVAL_MAX_SHARE * total:
            held.append(train.pop())
            have += lengths.pop()
            moved += 1
        kept, tokens = [], 0
        for text, n in zip(train, lengths):
            if cap is not None and tokens + n > cap:
                break
            kept.append(text)
            tokens += n
        entry = {
            "train": {
                "docs": len(kept),
                "tokens": tokens,
                "bytes": sum(len(t.encode()) for t in kept),
                "cap_tokens": cap,
            },
            "eval": {
                "docs": len(held),
                "tokens": have,
                "moved_from_train": moved,
                "bytes": sum(len(t.encode()) for t in held),
            },
        }
        entry["train"]["xz_bytes"] = _write_xz(os.path.join(folder, f"{name}.train.jsonl.xz"), kept)
        entry["eval"]["xz_bytes"] = _write_xz(os.path.join(folder, f"{name}.eval.jsonl.xz"), held)
        manifest["domains"][name] = entry
        print(name, entry, flush=True)
    info = os.path.join(corpus, "corpus.json")
    if os.path.isfile(info):
        with open(info, encoding="utf-8") as handle:
            described = json.load(handle)["domains"]
        for name in target:
            manifest["domains"][name].update({k: described.get(name, {}).get(k) for k in ("description", "licence")})
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    return manifest


def manifest(set_name: str, data_dir: str = DATA_DIR) -> dict[str, Any]:
    with open(os.path.join(data_dir, set_name, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def domain_set(set_name: str, work: str, data_dir: str = DATA_DIR):
    """The set's DomainSet over files unpacked into ``work`` (once)."""
    from hf_datamix import DomainSet, DomainSpec

    specs = []
    for name in SETS[set_name]:
        paths = {}
        for split in ("train", "eval"):
            target = os.path.join(work, "data", set_name, name, f"{split}.jsonl")
            if not os.path.isfile(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.tmp{os.getpid()}"
                with (
                    lzma.open(os.path.join(data_dir, set_name, f"{name}.{split}.jsonl.xz"), "rb") as src,
                    open(tmp, "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, target)
            paths[split] = target
        specs.append(DomainSpec(name, train=paths["train"], eval=paths["eval"]))
    return DomainSet(specs)


# ---------------------------------------------------------------------------------- model and run
def tokenizer():
    from hf_datamix.data.embedded import load_embedded_tokenizer

    tok = load_embedded_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def new_model(tok, shape: Shape, seed: int):
    import torch
    from transformers import LlamaForCausalLM

    from hf_datamix.models import llama_config

    torch.manual_seed(seed)
    config = llama_config(
        shape.preset,
        vocab_size=len(tok),
        max_position_embeddings=max(2048, shape.block_size),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def run_args(shape: Shape, output_dir: str, seed: int, **overrides):
    """DataMixArguments of one run: WSD schedule, caps k, the decision/test split, bf16 + compile on a GPU."""
    import torch

    from hf_datamix import DataMixArguments

    cuda = torch.cuda.is_available()
    values = dict(
        output_dir=output_dir,
        max_steps=shape.steps,
        per_device_train_batch_size=shape.batch_size,
        per_device_eval_batch_size=64,
        block_size=shape.block_size,
        learning_rate=shape.learning_rate,
        lr_scheduler_type="warmup_stable_decay",
        warmup_steps=shape.warmup_steps,
        lr_scheduler_kwargs={
            "num_decay_steps": int(round(shape.decay_fraction * shape.steps)),
            "decay_type": "linear",
        },
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=cuda,
        use_cpu=not cuda,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        torch_compile=cuda,
        logging_nan_inf_filter=False,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        logging_steps=max(1, shape.steps // 20),
        disable_tqdm=True,
        seed=seed,
        max_repetitions=shape.max_repetitions,
        decision_blocks=shape.decision_blocks,
        max_eval_blocks=shape.test_blocks,
        write_plots=False,
        preprocessing_num_workers=min(8, os.cpu_count() or 1),
        # Mixtures are trained as given, a domain that runs dry then redistributed: the benchmark's
        # first units were measured so (before plan_caps existed); planned caps are an arm of their own.
        plan_caps=False,
    )
    values.update(overrides)
    return DataMixArguments(**values)


def prepare(set_name: str, shape: Shape, unpacked: str, data_dir: str = DATA_DIR) -> dict[str, int]:
    """Unpack and pack the set once (the packed-block cache then serves every worker); its token counts."""
    from hf_datamix.data.blocks import pack_domains

    args = run_args(shape, os.path.join(unpacked, "prepare"), seed=0)
    return pack_domains(domain_set(set_name, unpacked, data_dir), tokenizer(), args).token_counts


def epochs_per_domain(trainer, schedule: list[tuple[int, dict[str, float]]], steps: int) -> dict[str, float]:
    """Epochs over each domain's training blocks after ``steps`` steps of a weight ``schedule``
    (``[(from_step, weights)]``), under the run's repetition caps (a domain that runs dry stops)."""
    import numpy as np

    from hf_datamix import Mixture
    from hf_datamix.data.interleaver import Interleaver

    main = trainer.interleaver
    stream = Interleaver(
        trainer.sources,
        Mixture(schedule[0][1]),
        seed=main.seed,
        max_repetitions=main.max_repetitions,
        on_exhausted=main.on_exhausted,
    )
    for start, weights in schedule[1:]:
        stream.set_weights(Mixture(weights), from_sample=start * trainer.samples_per_step)
    domains, _ = stream.plan(0, steps * trainer.samples_per_step)
    counts = np.bincount(domains, minlength=len(stream.domains))
    return {name: float(counts[i] / trainer.sources[name].num_blocks) for i, name in enumerate(stream.domains)}
