"""Shared fixtures: a tiny tokenizer, a tiny Llama and small multi-domain data, all built offline."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys

import datasets
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_datamix import DataMixArguments, DomainSet, DomainSpec


# Tiny models: one intra-op thread is as fast, and several test processes never oversubscribe the cores.
torch.set_num_threads(1)

WORDS = {
    "alpha": "apple apricot avocado almond anchovy artichoke arugula".split(),
    "beta": "bolt bracket beam brace bearing bushing bevel".split(),
    "gamma": "cello guitar gong glockenspiel harp horn clarinet".split(),
}


def pytest_collection_finish(session):
    # Every Trainer.train() begins with a full gc.collect() (accelerate's free_memory): over the ~0.5 M objects
    # of torch, transformers and the collected test modules that is ~0.25 s a run on CI's CPUs.  They live
    # for the whole session; frozen, collections skip them (what the tests create is still collected).
    gc.freeze()


def make_docs(domain: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"{domain}-{seed}")
    words = WORDS[domain]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(n)]


@pytest.fixture(scope="session")
def tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([d for name in WORDS for d in make_docs(name, 50)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config)


def datamix_args(output_dir, **overrides) -> DataMixArguments:
    """DataMixArguments for a tiny CPU run (``overrides`` win)."""
    values = dict(
        output_dir=str(output_dir),
        max_steps=10,
        per_device_train_batch_size=2,
        block_size=32,
        learning_rate=3e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return DataMixArguments(**values)


@pytest.fixture
def model(tokenizer):
    return tiny_llama(len(tokenizer))


def make_domain_set(names=("alpha", "beta", "gamma"), train_docs=60, eval_docs=8) -> DomainSet:
    specs = []
    for name in names:
        train = datasets.Dataset.from_dict({"text": make_docs(name, train_docs, seed=1)})
        evaluation = datasets.Dataset.from_dict({"text": make_docs(name, eval_docs, seed=2)})
        specs.append(DomainSpec(name, train=train, eval=evaluation))
    return DomainSet(specs)


@pytest.fixture
def domain_set():
    return make_domain_set()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Packed blocks are cached per test session, never in the user's home.
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path_factory.getbasetemp() / "packed-cache"))
    monkeypatch.setenv("WANDB_DISABLED", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def task_files(folder) -> str:
    """A ``--domains`` file of the embedded tasks arith and book, cut to 32 train and 16 eval examples each.

    The instruct recipe prepares every example of a domain (chat template, tokens, distillation columns) in
    every process (each seed's, each rank's): at the full ~2,500 per task that was over half of a tiny run, whose
    2 steps a stage and few eval prompts use only these.  With ``--initial_domains arith --added_domains book``
    the stages are those of ``--tasks arith,book`` (test_readme runs the whole tasks through ``--tasks``).
    """
    from hf_datamix.data.instruct_tasks import build_task

    domains = {}
    for name in ("arith", "book"):
        task = build_task(name)
        domains[name] = {}
        for split, n in (("train", 32), ("eval", 16)):
            path = folder / f"{name}.{split}.jsonl"
            task[split].select(range(n)).to_json(str(path))
            domains[name][split] = str(path)
    path = folder / "domains.yaml"
    path.write_text(json.dumps(domains))  # JSON is YAML
    return str(path)


def pip_available() -> bool:
    """True when this Python can run pip (the plugin tests install packages)."""
    if importlib.util.find_spec("pip") is None:
        return False
    return subprocess.run([sys.executable, "-m", "pip", "--version"], check=False, capture_output=True).returncode == 0


@contextlib.contextmanager
def pip_installed(source, tmp_path):
    """pip-install a copy of the package folder ``source`` into a folder of its own for the block.

    Yields the environment for subprocesses that should see it (``PYTHONPATH`` with that folder first):
    entry points of the installed package are only visible to processes started with it.  Nothing is
    installed into the running Python's site-packages, and hf_datamix itself is left as it is.
    """
    src = tmp_path / os.path.basename(str(source))
    shutil.copytree(source, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "--target",
            str(target),
            str(src),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = [str(target), root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    try:
        yield dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(path)))
    finally:
        shutil.rmtree(target, ignore_errors=True)
