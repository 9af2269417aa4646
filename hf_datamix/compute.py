"""The compute ledger: FLOPs of every forward and backward pass the library runs, by kind.

Formula (Kaplan et al., 2020), stated once and used everywhere:

* training a token (forward + backward):  ``6 * N`` FLOPs
* training adapters on a frozen base (LoRA probes): ``4 * N`` FLOPs (no weight gradients of the base)
* a forward-only token (evaluation, candidate scoring, generation, teacher passes): ``2 * N`` FLOPs

where ``N`` is the model's *non-embedding* parameter count
(``model.num_parameters(exclude_embeddings=True)``; LoRA adapters add their own parameters, which
are counted too).  The attention term that grows with context length is left out, as in the
convention; comparisons between strategies (the "X % less compute" figures) use the same formula
for every kind, so they are not affected by that choice.

Kinds: ``train`` (main training), ``eval`` (evaluation and candidate scoring), ``probe`` (OP-Mix's
LoRA probes), ``proxy`` (Olmix's proxy swarm), ``branch`` (real continuations of the model on other
mixtures, :mod:`hf_datamix.simulate.branches`), ``generate`` (sampling), ``teacher`` (teacher passes).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping

import torch

from .atomic import write_json_atomic  # noqa: F401  (imported from here by recipes and modules)
from .constants import COMPUTE_FILE


KINDS = ("train", "eval", "probe", "proxy", "branch", "generate", "teacher")
FORMULA = (
    "FLOPs = 6*N*tokens for training (forward+backward), 4*N*tokens for LoRA probes on a frozen base (no base "
    "weight gradients), 2*N*tokens for forward-only passes; "
    "N = non-embedding parameters (model.num_parameters(exclude_embeddings=True)); "
    "attention's context-length term excluded (Kaplan et al. 2020)."
)


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """N of the FLOPs formula: parameters outside embedding layers (LoRA parameters included)."""
    if hasattr(model, "num_parameters"):
        try:
            return int(model.num_parameters(exclude_embeddings=True))
        except TypeError:
            pass
    embedding_params = {
        id(p) for module in model.modules() if isinstance(module, torch.nn.Embedding) for p in module.parameters()
    }
    seen, total = set(), 0
    for param in model.parameters():
        if id(param) in seen or id(param) in embedding_params:
            continue
        seen.add(id(param))
        total += param.numel()
    return total


class ComputeLedger:
    """Accumulates FLOPs and tokens by kind; thread-safe, JSON-serialisable, mergeable.

    FLOPs are counted for the whole job (all processes): callers pass *global* token counts.
    """

    def __init__(self, by_kind: Mapping[str, float] | None = None, tokens_by_kind: Mapping[str, float] | None = None):
        self.by_kind: dict[str, float] = {k: float(v) for k, v in (by_kind or {}).items()}
        self.tokens_by_kind: dict[str, float] = {k: float(v) for k, v in (tokens_by_kind or {}).items()}
        self._lock = threading.Lock()

    def add(self, kind: str, flops: float, tokens: float = 0.0) -> None:
        """Add ``flops`` (and the ``tokens`` they processed) under ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"ComputeLedger kind {kind!r} is unknown; use one of {list(KINDS)}.")
        if not (math.isfinite(flops) and math.isfinite(tokens)) or flops < 0 or tokens < 0:
            raise ValueError(
                f"ComputeLedger.add({kind!r}): flops and tokens must be finite and >= 0, got {flops}, {tokens}."
            )
        with self._lock:
            self.by_kind[kind] = self.by_kind.get(kind, 0.0) + float(flops)
            self.tokens_by_kind[kind] = self.tokens_by_kind.get(kind, 0.0) + float(tokens)

    def add_training(self, kind: str, num_params: int, tokens: float) -> float:
        """Count ``tokens`` trained (forward + backward) on a model with ``num_params`` non-embedding params."""
        flops = 6.0 * num_params * tokens
        self.add(kind, flops, tokens)
        return flops

    def add_frozen_training(self, kind: str, num_params: int, tokens: float) -> float:
        """Count ``tokens`` trained through a frozen base (LoRA probes): ``4·N`` per token — the forward
        pass and the backward pass through the activations, without the base's weight gradients (the
        adapters' own are a fraction of a percent of ``N`` and are left out)."""
        flops = 4.0 * num_params * tokens
        self.add(kind, flops, tokens)
        return flops

    def add_forward(self, kind: str, num_params: int, tokens: float) -> float:
        """Count ``tokens`` through a forward-only pass."""
        flops = 2.0 * num_params * tokens
        self.add(kind, flops, tokens)
        return flops

    @property
    def total_flops(self) -> float:
        return float(sum(self.by_kind.values()))

    def merge(self, other: ComputeLedger) -> ComputeLedger:
        """A new ledger holding both ledgers' counts."""
        merged = ComputeLedger(self.by_kind, self.tokens_by_kind)
        for kind, flops in other.by_kind.items():
            merged.by_kind[kind] = merged.by_kind.get(kind, 0.0) + flops
        for kind, tokens in other.tokens_by_kind.items():
            merged.tokens_by_kind[kind] = merged.tokens_by_kind.get(kind, 0.0) + tokens
        return merged

    def state_dict(self) -> dict:
        return {"by_kind": dict(self.by_kind), "tokens_by_kind": dict(self.tokens_by_kind)}

    def since(self, state: Mapping) -> ComputeLedger:
        """What this ledger counted since its :meth:`state_dict` was ``state``: a ledger of the kinds that grew."""
        before, tokens_before = state.get("by_kind", {}), state.get("tokens_by_kind", {})
        grew = [k for k, v in self.by_kind.items() if v > before.get(k, 0.0)]
        return ComputeLedger(
            {k: self.by_kind[k] - before.get(k, 0.0) for k in grew},
            {k: self.tokens_by_kind.get(k, 0.0) - tokens_before.get(k, 0.0) for k in grew},
        )

    def load_state_dict(self, state: Mapping) -> None:
        self.by_kind = {k: float(v) for k, v in state.get("by_kind", {}).items()}
        self.tokens_by_kind = {k: float(v) for k, v in state.get("tokens_by_kind", {}).items()}

    def to_dict(self) -> dict:
        """The ``compute.json`` document."""
        total = self.total_flops
        return {
            "total_flops": total,
            "by_kind": dict(self.by_kind),
            "share_by_kind": {k: (v / total if total else 0.0) for k, v in self.by_kind.items()},
            "tokens_by_kind": dict(self.tokens_by_kind),
            "formula": FORMULA,
        }

    def save(self, output_dir: str) -> str:
        """Write ``compute.json`` in ``output_dir`` (atomically) and return its path."""
        return write_json_atomic(os.path.join(output_dir, COMPUTE_FILE), self.to_dict())

    @classmethod
    def load(cls, path: str) -> ComputeLedger:
        """Read a ``compute.json`` file (or the one in a directory)."""
        if os.path.isdir(path):
            path = os.path.join(path, COMPUTE_FILE)
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls(data.get("by_kind", {}), data.get("tokens_by_kind", {}))

    def summary(self) -> str:
        """One line: total and share per kind."""
        total = self.total_flops
        parts = [f"{k} {v:.3g} ({(v / total if total else 0):.1%})" for k, v in sorted(self.by_kind.items())]
        return f"total {total:.3g} FLOPs: " + ", ".join(parts)
