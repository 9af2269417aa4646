"""Tokenise a domain's documents and pack them into fixed-length blocks of one domain each.

Map-style datasets are tokenised once with ``datasets.map`` and packed into a 2-D token array
(cached on disk as ``.npy`` keyed by the dataset fingerprint, the tokenizer and the block size);
streaming datasets are packed lazily while they are read.  Documents are joined with the EOS
token; the tail that does not fill a block is dropped.  Blocks never mix domains: each domain is
packed on its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
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
        "|".join(
            [dataset._fingerprint, _tokenizer_fingerprint(tokenizer), text_field, str(block_size), "v1"]
        ).encode()
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


class StreamingBlocks:
    """Blocks of a streaming ``IterableDataset``, packed while it is read.

    Access is sequential: ``block(k, epoch)`` for increasing ``k``; asking for an earlier block (a
    resume, a new worker) restarts the stream and skips forward, which re-reads but never changes
    the sequence.  Each epoch re-reads the stream from the start (shuffled with ``seed + epoch`` when
    ``shuffle_buffer`` is set).
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        tokenizer,
        block_size: int,
        text_field: str = "text",
        name: str = "domain",
        num_tokens: int | None = None,
        shuffle_buffer: int | None = None,
        seed: int = 0,
        batch_docs: int = 256,
    ):
        self.name = name
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.text_field = text_field
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.batch_docs = batch_docs
        self.dtype = _token_dtype(tokenizer)
        self.eos = _eos_id(tokenizer)
        #: Known only when given: without it, repetition caps cannot apply to this domain.
        self.num_blocks = None if num_tokens is None else max(1, num_tokens // block_size)
        self._iterator: Iterator[np.ndarray] | None = None
        self._epoch = -1
        self._position = 0

    @property
    def num_tokens(self) -> int | None:
        return None if self.num_blocks is None else self.num_blocks * self.block_size

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_iterator"], state["_epoch"], state["_position"] = None, -1, 0
        return state

    def _blocks(self, epoch: int) -> Iterator[np.ndarray]:
        data = self.dataset
        if self.shuffle_buffer:
            data = data.shuffle(seed=self.seed + epoch, buffer_size=self.shuffle_buffer)
        buffer = np.empty(0, dtype=self.dtype)
        docs: list[str] = []

        def flush(buffer, docs):
            ids = self.tokenizer(docs, add_special_tokens=False)["input_ids"]
            pieces = [buffer] + [np.asarray(row + [self.eos], dtype=self.dtype) for row in ids]
            return np.concatenate(pieces)

        for example in data:
            docs.append(example[self.text_field])
            if len(docs) >= self.batch_docs:
                buffer, docs = flush(buffer, docs), []
                while len(buffer) >= self.block_size:
                    yield buffer[: self.block_size]
                    buffer = buffer[self.block_size :]
        if docs:
            buffer = flush(buffer, docs)
        while len(buffer) >= self.block_size:
            yield buffer[: self.block_size]
            buffer = buffer[self.block_size :]

    def block(self, index: int, epoch: int = 0) -> np.ndarray:
        if epoch != self._epoch or index < self._position or self._iterator is None:
            self._iterator, self._epoch, self._position = self._blocks(epoch), epoch, 0
        while True:
            try:
                block = next(self._iterator)
            except StopIteration:
                raise IndexError(
                    f"streaming domain {self.name!r} ended after {self._position} blocks in epoch {epoch} "
                    f"(block {index} was asked for); set DomainSpec.num_tokens to its real size."
                ) from None
            self._position += 1
            if self._position - 1 == index:
                return block


def decision_share(available: int, decision_blocks: int, max_eval: int | None = None) -> int:
    """How many of ``available`` held-out blocks (or examples) go to the decision split.

    ``decision_blocks``, but never more than half, unless what is left still fills ``max_eval``
    test blocks: the rest is the test split that results are reported on.  One rule for packed
    blocks and SFT examples.
    """
    room = available // 2 if max_eval is None else max(available // 2, available - int(max_eval))
    return max(0, min(int(decision_blocks), room))


def pack_eval(dataset, tokenizer, block_size: int, text_field: str, name: str, max_blocks: int | None = None):
    """Pack an eval split (a streaming one is read into memory, up to ``max_blocks``)."""
    if isinstance(dataset, datasets.IterableDataset):
        stream = StreamingBlocks(dataset, tokenizer, block_size, text_field, name)
        blocks = []
        iterator = stream._blocks(0)
        for block in iterator:
            blocks.append(block)
            if max_blocks is not None and len(blocks) >= max_blocks:
                break
        if not blocks:
            raise ValueError(f"Domain {name!r}: its eval split has fewer tokens than one block of {block_size}.")
        return PackedBlocks(name, np.stack(blocks))
    packed = pack_dataset(dataset, tokenizer, block_size, text_field, name=f"{name} (eval)")
    if packed.num_blocks == 0:
        raise ValueError(f"Domain {name!r}: its eval split is empty.")
    if max_blocks is not None and packed.num_blocks > max_blocks:
        packed = PackedBlocks(packed.name, packed.blocks[:max_blocks])
    packed.name = name
    return packed
