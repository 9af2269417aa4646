"""Streaming domains: a forward-only stream tokenised once, into blocks every process can read.

A streaming ``datasets.IterableDataset`` can only be read forward, but the interleaver asks for a
domain's blocks by index (every rank and DataLoader worker materialises its own samples, a resume
starts in the middle, epochs after the first visit blocks in a new order).  So the stream is
*spilled*: read once, in order, and its packed blocks appended to a file of the same raw block
format as the map-style cache (``block_size`` tokens per row), from which any process reads any
block it needs.  Whichever process needs a block that is not spilled yet extends the spill under a
file lock, continuing the stream where the last extension stopped (``IterableDataset.state_dict()``
and the tokens left over from the last document, kept beside the file).  Consequences:

* each document is tokenised once per machine, whatever the number of ranks and workers;
* a resume, a later stage or a probe re-reads blocks from the spill, not the stream;
* the block sequence does not depend on the process count (the global-sequence invariants of the
  interleaver hold for streaming domains too).

Spills live in the packed-block cache (``$HF_DATAMIX_CACHE``), keyed by the dataset's pipeline
(``datasets``' own hashing), the tokenizer, the text field, the block size and the machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import sys

import datasets
import numpy as np

from ..atomic import write_json_atomic
from .packing import _eos_id, _token_dtype, _tokenizer_fingerprint, cache_dir


logger = logging.getLogger(__name__)

_MAX_DOCS_PER_CALL = 256  # documents per tokenizer call when many blocks are wanted at once


def stream_key(dataset: datasets.IterableDataset, tokenizer, block_size: int, text_field: str, extra: str = "") -> str:
    """A key naming what a spill holds; equal in every process that streams the same pipeline."""
    from datasets.fingerprint import Hasher

    try:
        # The examples pipeline (files or Hub shards, take/skip/map/shuffle): stable across
        # processes, unlike the hash of the IterableDataset object itself.
        pipeline = Hasher.hash([dataset._ex_iterable, dataset._info.features])
    except Exception as error:  # an unhashable generator: each process spills on its own
        logger.warning("Streaming domain cannot be keyed (%s); each process tokenises its own copy.", error)
        pipeline = f"unhashable-{os.getpid()}-{id(dataset)}"
    parts = [
        pipeline,
        _tokenizer_fingerprint(tokenizer),
        text_field,
        str(block_size),
        extra,
        socket.gethostname(),
        "stream-v1",
    ]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:24]


class _Reader:
    """Reads documents from a stream and packs them into blocks, resumable from a saved position."""

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        tokenizer,
        block_size: int,
        text_field: str,
        state: dict | None = None,
        leftover: list[int] = (),
    ):
        self.dataset = dataset
        if state is not None:
            self.dataset.load_state_dict(state)
        # iter() reads the whole stream in any process: plain iteration inside a DataLoader worker
        # would give that worker only its share of the shards.
        self.rows = self.dataset.iter(batch_size=1)
        self.tokenizer, self.block_size, self.text_field = tokenizer, block_size, text_field
        self.dtype, self.eos = _token_dtype(tokenizer), _eos_id(tokenizer)
        self.buffer = np.asarray(leftover, dtype=self.dtype)
        self.documents = 0
        self.tokens = 0
        self.ended = False

    def read(self, blocks_wanted: int, tokens_per_doc: float) -> list[np.ndarray]:
        """At least ``blocks_wanted`` new blocks (fewer when the stream ends), tokenising few extra documents."""
        out: list[np.ndarray] = []
        size = self.block_size
        while len(out) < blocks_wanted and not self.ended:
            missing = (blocks_wanted - len(out)) * size - len(self.buffer)
            # As many documents as the missing tokens need on average: at the end of a run almost no
            # document is tokenised for nothing, and long reads still batch the tokenizer.
            count = min(_MAX_DOCS_PER_CALL, max(1, math.ceil(missing / max(tokens_per_doc, 1.0))))
            docs = []
            for row in self.rows:
                docs.append(row[self.text_field][0])
                if len(docs) >= count:
                    break
            if len(docs) < count:
                self.ended = True
            if docs:
                ids = self.tokenizer(docs, add_special_tokens=False)["input_ids"]
                pieces = [self.buffer] + [np.asarray(row + [self.eos], dtype=self.dtype) for row in ids]
                self.buffer = np.concatenate(pieces)
                self.documents += len(docs)
                self.tokens += sum(len(row) + 1 for row in ids)
                tokens_per_doc = self.tokens / self.documents
            full = len(self.buffer) // size
            out.extend(self.buffer[i * size : (i + 1) * size] for i in range(full))
            self.buffer = self.buffer[full * size :]
        return out


class StreamingBlocks:
    """Blocks of a streaming ``IterableDataset``, tokenised once and spilled to disk as they are read.

    ``block(index)`` may be asked in any order: blocks not read yet are read from the stream (in
    order, never restarting it); the others come from the spill.  ``num_tokens`` (when given) fixes
    ``num_blocks``, so repetition caps apply; epochs after the first revisit the spilled blocks.

    Args:
        dataset: the domain's training stream.
        tokenizer: tokenises the documents (joined with its EOS token).
        block_size: tokens per block.
        text_field: the column holding the text.
        name: the domain (for messages).
        num_tokens: the stream's token count, if known.
        shuffle_buffer: shuffle the stream once with a buffer of this many documents (``seed``).
        seed: seed of that shuffle.
        spill_dir: where the spill lives (default: the packed-block cache).
    """

    #: Read in order: the interleaver never permutes the first epoch of such a source.
    sequential = True

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
        spill_dir: str | None = None,
    ):
        if block_size < 2:
            raise ValueError(f"block_size={block_size}: a block needs at least 2 tokens.")
        self.name = name
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.text_field = text_field
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.dtype = _token_dtype(tokenizer)
        self.eos = _eos_id(tokenizer)
        #: Known only when given: without it, repetition caps cannot apply to this domain.
        self.num_blocks = None if num_tokens is None else max(1, num_tokens // block_size)
        extra = f"shuffle={shuffle_buffer},{seed}" if shuffle_buffer else ""
        key = stream_key(dataset, tokenizer, block_size, text_field, extra)
        self.path = os.path.join(spill_dir or cache_dir(), "streams", key)  # + .bin (blocks), .json (record), .lock
        self._block_bytes = block_size * self.dtype.itemsize
        self._fd: int | None = None
        self._known = 0  # blocks known to be in the spill
        self._reader: _Reader | None = None
        self._reader_at = -1  # spill length the live reader continues from

    @property
    def num_tokens(self) -> int | None:
        return None if self.num_blocks is None else self.num_blocks * self.block_size

    def __getstate__(self):
        # File descriptors and the live stream stay in their process; a copy reopens the spill.
        state = dict(self.__dict__)
        state.update(_fd=None, _known=0, _reader=None, _reader_at=-1)
        return state

    def _stream(self) -> datasets.IterableDataset:
        data = self.dataset
        if self.shuffle_buffer:
            data = data.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        return data

    # -- the spill ------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._fd = os.open(self.path + ".bin", os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def spilled(self) -> int:
        """Blocks in the spill now (written by any process on this machine)."""
        # The record, not the file's size: bytes past it may be a dead writer's unrecorded tail.
        self._known = max(self._known, self._meta()["blocks"])
        return self._known

    def _meta(self) -> dict:
        try:
            with open(self.path + ".json", encoding="utf-8") as handle:
                return json.load(handle)
        except (FileNotFoundError, json.JSONDecodeError):
            return {"blocks": 0, "state": None, "leftover": [], "documents": 0, "tokens": 0, "ended": False}

    def prefetch(self, blocks: int) -> None:
        """Make sure blocks ``0 .. blocks - 1`` are in the spill (one extension for a whole chunk)."""
        if blocks > self._known and blocks > self.spilled():
            self._extend(blocks)

    def _extend(self, blocks: int) -> None:
        fd = self._open()
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            meta = self._meta()
            if meta["blocks"] >= blocks:
                self._known = max(self._known, meta["blocks"])
                return
            if meta["ended"]:
                raise IndexError(
                    f"streaming domain {self.name!r} ended after {meta['blocks']} blocks (block {blocks - 1} was "
                    f"asked for); set DomainSpec.num_tokens to its real size ({meta['tokens']} tokens were read)."
                )
            # Bytes past the recorded length come from a writer that died before recording them.
            os.ftruncate(fd, meta["blocks"] * self._block_bytes)
            if self._reader is None or self._reader_at != meta["blocks"]:
                self._reader = _Reader(
                    self._stream(), self.tokenizer, self.block_size, self.text_field, meta["state"], meta["leftover"]
                )
            per_doc = meta["tokens"] / meta["documents"] if meta["documents"] else self.block_size
            new = self._reader.read(blocks - meta["blocks"], per_doc)
            if new:
                os.pwrite(
                    fd, np.stack(new).astype(self.dtype, copy=False).tobytes(), meta["blocks"] * self._block_bytes
                )
            reader = self._reader
            meta = {
                "blocks": meta["blocks"] + len(new),
                "state": reader.dataset.state_dict(),
                "leftover": reader.buffer.tolist(),
                "documents": meta["documents"] + reader.documents,
                "tokens": meta["tokens"] + reader.tokens,
                "ended": reader.ended,
            }
            reader.documents = reader.tokens = 0
            write_json_atomic(self.path + ".json", meta)  # after the blocks: never claims more than the file holds
            self._reader_at = self._known = meta["blocks"]
        if meta["blocks"] < blocks:
            self._extend(blocks)  # raises the "ended" error above

    def block(self, index: int, epoch: int = 0) -> np.ndarray:
        """Block ``index`` of the stream (``epoch`` does not change it: the spill holds one pass)."""
        if index >= self._known:
            self.prefetch(index + 1)
        data = os.pread(self._open(), self._block_bytes, index * self._block_bytes)
        if len(data) < self._block_bytes:
            raise RuntimeError(
                f"the spill of streaming domain {self.name!r} ({self.path}.bin) is shorter than its record says; "
                "something else truncated it: delete its three files to read the stream again."
            )
        return np.frombuffer(data, dtype=self.dtype)


def stream_blocks(
    dataset: datasets.IterableDataset, tokenizer, block_size: int, text_field: str, max_blocks: int | None = None
) -> list[np.ndarray]:
    """The first ``max_blocks`` blocks of a stream (all of them when None), in memory: eval splits."""
    reader = _Reader(dataset, tokenizer, block_size, text_field)
    return reader.read(sys.maxsize if max_blocks is None else max_blocks, block_size)[:max_blocks]
