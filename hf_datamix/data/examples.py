"""Per-domain sources of whole examples (SFT), for the :class:`~hf_datamix.data.interleaver.Interleaver`.

TRL's SFT preparation turns a domain into rows of token lists (``input_ids``, ``labels``, and with
packing ``seq_lengths``).  :class:`ExampleSource` keeps each list column as one flat array plus row
offsets, so drawing an example is two slices (no Arrow row decoding per sample), and hands whole
examples to the interleaver, which never cuts or joins them: packing never crosses domains.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np


class ExampleSource:
    """One domain's prepared SFT examples, drawn whole by index.

    Args:
        name: the domain (added to every example as ``"domain"``).
        dataset: the domain's prepared ``datasets.Dataset`` (``input_ids`` required).
        columns: the list columns to deliver (those missing from ``dataset`` are skipped).
    """

    yields_examples = True

    def __init__(self, name: str, dataset: datasets.Dataset, columns=("input_ids", "labels", "seq_lengths")):
        if not isinstance(dataset, datasets.Dataset):
            raise ValueError(
                f"domain {name!r}: SFT domains need a map-style datasets.Dataset, got {type(dataset).__name__} "
                "(streaming domains are not supported for SFT; load it with streaming=False)."
            )
        if "input_ids" not in dataset.column_names:
            raise ValueError(
                f"domain {name!r}: the prepared dataset has no input_ids (columns {dataset.column_names})."
            )
        if len(dataset) == 0:
            raise ValueError(
                f"domain {name!r} has no training examples after preparation; check its data and max_length."
            )
        self.name = name
        self._columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for column in columns:
            if column in dataset.column_names:
                chunked = dataset.data.column(column).combine_chunks()
                # A writable copy: torch warns on (and must not write to) Arrow-backed read-only memory.
                values = np.array(chunked.values.to_numpy(zero_copy_only=False), dtype=np.int64)
                offsets = chunked.offsets.to_numpy(zero_copy_only=False)
                self._columns[column] = (values, offsets)
        self.lengths = np.diff(self._columns["input_ids"][1])

    @property
    def num_blocks(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def block_size(self) -> int:
        # The interleaver only checks that sources agree; whole examples have no fixed size.
        return 0

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def block(self, index: int, epoch: int = 0) -> dict[str, Any]:
        example: dict[str, Any] = {"domain": self.name}
        for column, (values, offsets) in self._columns.items():
            example[column] = values[offsets[index] : offsets[index + 1]]
        return example
