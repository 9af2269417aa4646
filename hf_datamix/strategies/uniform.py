"""Fixed mixtures that never change: ``uniform`` (equal weights) and ``natural`` (proportional to tokens)."""

from __future__ import annotations

from ..mixture import Mixture
from .base import DecisionContext, Strategy


class UniformStrategy(Strategy):
    """Equal weight on every domain, never changed."""

    name = "uniform"
    description = "Equal weight on every domain; no decisions."

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        return Mixture.uniform(context.domains.names)


class NaturalStrategy(Strategy):
    """Weights proportional to each domain's training tokens (the natural mix), never changed."""

    name = "natural"
    description = "Weights proportional to each domain's tokens (the natural mix); no decisions."

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        counts = {name: context.token_counts[name] for name in context.domains.names}
        return Mixture.proportional(counts)
