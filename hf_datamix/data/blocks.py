"""Every domain of a run packed into blocks: training sources, test (eval) blocks and decision blocks.

A domain's decision blocks are its ``DomainSpec.decision`` data, else the first
``decision_blocks`` blocks of its eval split (at most half); eval keeps the rest, so decisions never
see the blocks results are reported on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import datasets
import numpy as np
import torch

from .packing import PackedBlocks, decision_share, pack_dataset
from .streaming import StreamingBlocks, stream_blocks


if TYPE_CHECKING:  # pragma: no cover
    from ..config import DataMixArguments
    from ..domains import DomainSet


def pack_eval(dataset, tokenizer, block_size: int, text_field: str, name: str, max_blocks: int | None = None):
    """Pack an eval split (a streaming one is read into memory, up to ``max_blocks``)."""
    if isinstance(dataset, datasets.IterableDataset):
        blocks = stream_blocks(dataset, tokenizer, block_size, text_field, max_blocks)
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


class BlockDataset(torch.utils.data.Dataset):
    """Fixed-length token blocks as causal-LM samples (``input_ids`` = ``labels``)."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))
        return {"input_ids": ids, "labels": ids}


class PackedDomains(NamedTuple):
    """Every domain packed: training sources, test (eval) and decision blocks, usable training tokens."""

    sources: dict[str, Any]
    eval_blocks: dict[str, np.ndarray]
    decision_blocks: dict[str, np.ndarray]
    token_counts: dict[str, int]


def pack_domains(domains: DomainSet, tokenizer, args: DataMixArguments) -> PackedDomains:
    """Load and pack every domain: training sources, eval (test) and decision blocks, token counts.

    A domain's decision blocks are its ``DomainSpec.decision`` data, else the first
    ``args.decision_blocks`` blocks of its eval split (at most half); eval keeps the rest
    (``args.decision_blocks=0``: decisions score on the eval blocks themselves).
    """
    segment = args.block_size // args.segments_per_block
    sources: dict[str, Any] = {}
    eval_blocks: dict[str, np.ndarray] = {}
    decision_blocks: dict[str, np.ndarray] = {}
    for spec in domains:
        train, evaluation = spec.load()
        if isinstance(train, datasets.IterableDataset):
            sources[spec.name] = StreamingBlocks(
                train, tokenizer, segment, spec.text_field, spec.name, num_tokens=spec.num_tokens, seed=args.seed
            )
        else:
            sources[spec.name] = pack_dataset(
                train, tokenizer, segment, spec.text_field, spec.name, num_proc=args.preprocessing_num_workers
            )
        eval_blocks[spec.name], decision_blocks[spec.name] = pack_held_out(spec, evaluation, tokenizer, args)
    counts = {name: source.num_tokens for name, source in sources.items()}
    return PackedDomains(sources, eval_blocks, decision_blocks, counts)


def pack_held_out(spec, evaluation, tokenizer, args: DataMixArguments) -> tuple[np.ndarray, np.ndarray]:
    """``(eval blocks, decision blocks)`` of one domain whose loaded eval split is ``evaluation``.

    The decision blocks are ``spec.decision``'s data, else the first ``args.decision_blocks`` blocks of
    the eval split (at most half, :func:`~hf_datamix.data.packing.decision_share`), which eval then
    leaves out; ``args.decision_blocks=0`` scores decisions on the eval blocks themselves.
    """
    explicit = spec.load_decision()
    carve = explicit is None and args.decision_blocks > 0
    # A capped (e.g. streaming) eval split is read only as far as both splits need.
    cap = args.max_eval_blocks + args.decision_blocks if carve and args.max_eval_blocks else args.max_eval_blocks
    held_out = pack_eval(evaluation, tokenizer, args.block_size, spec.text_field, spec.name, cap).blocks
    if explicit is not None:
        decision = pack_eval(
            explicit,
            tokenizer,
            args.block_size,
            spec.text_field,
            f"{spec.name} (decision)",
            args.decision_blocks or None,
        ).blocks
    elif carve:
        reserved = decision_share(len(held_out), args.decision_blocks, args.max_eval_blocks)
        if reserved == 0:
            raise ValueError(
                f"Domain {spec.name!r}: its eval split packs into {len(held_out)} block(s) of {args.block_size} "
                "tokens, too few to keep decision blocks apart from test blocks; give it more eval data, "
                "DomainSpec.decision, or set decision_blocks=0."
            )
        decision, held_out = held_out[:reserved], held_out[reserved:]
    else:
        decision = held_out
    if args.max_eval_blocks is not None:
        held_out = held_out[: args.max_eval_blocks]
    return held_out, decision
