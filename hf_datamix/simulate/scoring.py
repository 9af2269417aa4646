"""Scorers: what a decision measures a (simulated) model by, per target domain, lower is better.

A scorer is a callable ``scorer(model) -> np.ndarray`` of one score per name in ``scorer.targets``.
The trainer hands one over (``DataMixTrainer.decision_scorer``) built on the *decision* split, so
simulators and laws never see the blocks that results are reported on.  Simulators call it on the
model they have put in a candidate's state (LoRA deltas switched in, a branch trained, ...).

:class:`BlockLossScorer` is the held-out next-token loss of packed blocks (pretraining,
midtraining); instruction tuning scores by task error or answer loss (``DataMixSFTTrainer``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..compute import ComputeLedger


class BlockLossScorer:
    """Token-weighted mean next-token loss per domain of fixed token blocks (each block predicts L-1 tokens).

    Args:
        blocks: ``{domain: (n, L) integer tensor or array}``; the scores follow this key order.
        batch_size: blocks per forward pass (domains of one block length share batches).
        device: where the blocks are moved, once.
        bf16: score under bf16 autocast.
        collective: every process of the ``torch.distributed`` group calls the scorer together and
            forwards a share of the batches (padded so all run the same number, as a sharded model
            needs); the sums are all-reduced, so every process gets the same scores.
        ledger, num_parameters, kind: count every scored token as a forward pass under ``kind``.
    """

    def __init__(
        self,
        blocks: Mapping[str, torch.Tensor | np.ndarray],
        batch_size: int,
        device: torch.device | str,
        bf16: bool = False,
        collective: bool = False,
        ledger: ComputeLedger | None = None,
        num_parameters: int = 0,
        kind: str = "eval",
    ):
        if int(batch_size) < 1:
            raise ValueError(f"BlockLossScorer: batch_size must be >= 1, got {batch_size!r}.")
        tensors = {}
        for domain, value in blocks.items():
            tensor = torch.from_numpy(np.asarray(value, dtype=np.int64)) if isinstance(value, np.ndarray) else value
            shape = tuple(tensor.shape) if torch.is_tensor(tensor) else type(value).__name__
            if not (
                isinstance(shape, tuple)
                and len(shape) == 2
                and shape[0] >= 1
                and shape[1] >= 2
                and not tensor.is_floating_point()
            ):
                raise ValueError(
                    f"blocks[{domain!r}] must be integer blocks (n_blocks >= 1, block_len >= 2), got {shape}."
                )
            tensors[domain] = tensor
        if not tensors:
            raise ValueError("BlockLossScorer needs blocks of at least one domain.")
        self.targets = list(tensors)
        self.device = torch.device(device)
        self.bf16 = bool(bf16)
        self.collective = bool(collective)
        if self.collective and not (dist.is_available() and dist.is_initialized()):
            raise ValueError("collective=True needs an initialised torch.distributed process group.")
        self.ledger, self.num_parameters, self.kind = ledger, int(num_parameters), kind
        #: Tokens forwarded by one call, summed over processes (every position of every block).
        self.tokens = sum(t.numel() for t in tensors.values())
        self._batches = self._device_batches(tensors, int(batch_size))

    def __call__(self, model: torch.nn.Module) -> np.ndarray:
        totals = torch.zeros(len(self.targets), dtype=torch.float64, device=self.device)
        counts = torch.zeros(len(self.targets), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for ids, owner in self._batches:
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    logits = model(input_ids=ids, use_cache=False).logits
                if owner is None:  # a padding batch (collective mode): forwarded, not counted
                    continue
                targets = ids[:, 1:]
                per_token = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
                totals.index_add_(0, owner, per_token.sum(dim=1).double())
                counts.index_add_(0, owner, torch.full_like(totals[owner], targets.shape[1]))
        if self.collective:
            dist.all_reduce(totals)
            dist.all_reduce(counts)
        if self.ledger is not None:
            self.ledger.add_forward(self.kind, self.num_parameters, self.tokens)
        return (totals / counts).cpu().numpy()  # the one read-back per call

    def _device_batches(self, tensors: Mapping[str, torch.Tensor], batch_size: int):
        """``[(ids, domain index per row)]`` on the device; this process's share in collective mode."""
        by_length: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for j, blocks in enumerate(tensors.values()):
            by_length.setdefault(blocks.shape[1], []).append((j, blocks))
        batches = []
        for group in by_length.values():
            ids = torch.cat([blocks for _, blocks in group]).to(self.device)
            owner = torch.cat([torch.full((len(blocks),), j, dtype=torch.long) for j, blocks in group]).to(self.device)
            batches += [(ids[s : s + batch_size], owner[s : s + batch_size]) for s in range(0, len(ids), batch_size)]
        if self.collective:
            # Each process scores every world_size-th batch.  A sharded model's forward is a
            # collective, so all run the same number: short shares are padded with uncounted batches.
            world, rank = dist.get_world_size(), dist.get_rank()
            mine = batches[rank::world]
            rounds = -(-len(batches) // world)
            batches = mine + [(ids, None) for ids, _ in batches[: rounds - len(mine)]]
        return batches
