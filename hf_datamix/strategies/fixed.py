"""``fixed``: a mixture given by the user (also what every Olmix proxy trains on)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mixture import Mixture
from .base import DecisionContext, Strategy, StrategyConfig


@dataclass
class FixedConfig(StrategyConfig):
    weights: dict = field(
        default_factory=dict,
        metadata={"help": "Domain -> weight, for every domain of the run (normalised; 0 leaves one out)."},
    )


class FixedStrategy(Strategy):
    """Train on the given weights throughout; every domain of the run needs a weight (0 leaves it out)."""

    name = "fixed"
    description = "A fixed mixture given as --weights '{domain: weight}'; no decisions."
    config_class = FixedConfig

    def check(self, domains) -> None:
        weights = self.config.weights
        if not weights or not isinstance(weights, dict):
            raise ValueError(
                f"strategy 'fixed': weights={weights!r}; give every domain a weight: "
                '--weights \'{"code": 0.5, "docs": 0.5}\'.'
            )
        missing = [name for name in domains.names if name not in weights]
        if missing:
            # Silently giving them 0 would drop data the user listed as a domain.
            raise ValueError(
                f"strategy 'fixed': weights={weights} give no weight to domains {missing} of this run; "
                f"add them to weights (a weight of 0 leaves a domain out)."
            )
        try:
            Mixture(weights, domains=domains.names)  # unknown names, negative or non-numeric weights
        except ValueError as error:
            raise ValueError(f"strategy 'fixed': weights={weights}: {error}") from None

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        self.check(context.domains)
        return Mixture(self.config.weights, domains=context.domains.names)
