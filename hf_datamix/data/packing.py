"""Tokenise a domain's documents and pack them into fixed-length blocks of one domain each.

Map-style datasets are tokenised once with ``datasets.map`` and packed into a 2-D token array
(cached on disk as ``.npy`` keyed by the dataset fingerprint, the tokenizer and the block size);
streaming datasets are read once and spilled to the same block format (:mod:`.streaming`).
Documents are joined with the EOS token; the tail that does not fill a block is dropped.  Blocks
never mix domains: each domain is packed on its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import datasets
import numpy as np


logger = logging.getLogger(__name__)

CACHE_ENV = "HF_DATAMIX_CACHE"


def cache_dir() -> str:
    """Where packed blocks are cached (``$HF_DATAMIX_CACHE``, default ``~/.cache/hf_datamix/packed``)."""
    return os.environ.get(CACHE_ENV, os.path.join(os.path.expanduser("~"), ".cache", "hf_datamix", "packed"))


def _token_dtype(tokenizer) -> np.dtype:
    return np.dtype(np.uint16) if len(tokenizer) <= np.iinfo(np.uint16).max else np.dtype(np.int32)


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no eos_token; documents are joined with it when packing. "
            "Set tokenizer.eos_token (e.g. tokenizer.eos_token = '</s>')."
        )
    return int(eos)


@dataclass
class PackedBlocks:
    """A domain split packed into ``blocks`` of shape ``(num_blocks, block_size)``."""

    name: str
    blocks: np.ndarray

    @property
    def num_blocks(self) -> int:
        return int(self.blocks.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.blocks.shape[1])

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def block(self, index: int, epoch: int = 0) -> np.ndarray:
        return self.blocks[index]


def pack_dataset(
    dataset: datasets.Dataset,
    tokenizer,
    block_size: int,
    text_field: str = "text",
    name: str = "domain",
    num_proc: int | None = None,
    use_cache: bool = True,
) -> PackedBlocks:
    """Tokenise ``dataset[text_field]`` and pack it into blocks of ``block_size`` tokens."""
    if block_size < 2:
        raise ValueError(f"block_size={block_size}: a block needs at least 2 tokens.")
    key = hashlib.sha1(
        "|".join([dataset._fingerprint, _tokenizer_fingerprint(tokenizer), text_field, str(block_size), "v1"]).encode()
    ).hexdigest()[:24]
    path = os.path.join(cache_dir(), f"{key}.npy")
    if use_cache and os.path.exists(path):
        return PackedBlocks(name, _mapped(path))

    eos = _eos_id(tokenizer)

    def tokenize(batch):
        ids = tokenizer(batch[text_field], add_special_tokens=False)["input_ids"]
        return {"input_ids": [row + [eos] for row in ids]}

    tokenized = dataset.map(
        tokenize,
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenising {name}",
        load_from_cache_file=use_cache,
    )
    column = tokenized.data.column("input_ids").combine_chunks()
    flat = column.values.to_numpy(zero_copy_only=False).astype(_token_dtype(tokenizer), copy=False)
    blocks = _reshape(flat, block_size, name)
    if use_cache:
        os.makedirs(cache_dir(), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}.npy"
        np.save(tmp, blocks)
        os.replace(tmp, path)
        blocks = _mapped(path)
    return PackedBlocks(name, blocks)


def _mapped(path: str) -> np.ndarray:
    """The packed blocks memory-mapped from disk, as a plain ndarray view of the map: indexing a
    ``np.memmap`` builds a memmap object per row, which costs more than the rest of a block's read."""
    return np.load(path, mmap_mode="r").view(np.ndarray)


def _reshape(flat: np.ndarray, block_size: int, name: str) -> np.ndarray:
    num_blocks = len(flat) // block_size
    if num_blocks == 0:
        raise ValueError(
            f"Domain {name!r} has {len(flat)} tokens, fewer than one block of {block_size}: "
            "add data to it or lower block_size."
        )
    return np.ascontiguousarray(flat[: num_blocks * block_size].reshape(num_blocks, block_size))


def decision_share(available: int, decision_blocks: int, max_eval: int | None = None) -> int:
    """How many of ``available`` held-out blocks (or examples) go to the decision split.

    ``decision_blocks``, but never more than half, unless what is left still fills ``max_eval``
    test blocks: the rest is the test split that results are reported on.  One rule for packed
    blocks and SFT examples.
    """
    room = available // 2 if max_eval is None else max(available // 2, available - int(max_eval))
    return max(0, min(int(decision_blocks), room))
