"""``fixed``: a mixture given by the user (also what every Olmix proxy trains on)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mixture import Mixture
from .base import DecisionContext, Strategy, StrategyConfig


@dataclass
class FixedConfig(StrategyConfig):
    weights: dict = field(default_factory=dict, metadata={"help": "Domain -> weight (normalised; missing domains get 0)."})


class FixedStrategy(Strategy):
    """Train on the given weights throughout."""

    name = "fixed"
    description = "A fixed mixture given as strategy_args weights={domain: weight}; no decisions."
    config_class = FixedConfig

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        if not self.config.weights:
            raise ValueError("strategy 'fixed' needs weights: --strategy_args '{\"weights\": {\"code\": 0.5, ...}}'.")
        return Mixture(self.config.weights, domains=context.domains.names)
