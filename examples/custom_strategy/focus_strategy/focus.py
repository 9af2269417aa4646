"""FocusStrategy: give one domain a fixed share and the others equal shares; go uniform half-way."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_datamix import Mixture, Strategy, StrategyConfig


@dataclass
class FocusConfig(StrategyConfig):
    """Settings of ``focus``: flags of the recipes (``--strategy focus --domain code --share 0.7``)."""

    domain: str = field(default="code", metadata={"help": "the domain to focus on"})
    share: float = field(default=0.5, metadata={"help": "its weight until the decision, in [0, 1]"})

    def __post_init__(self):
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"focus: share={self.share} is outside [0, 1]; e.g. --share 0.7.")


class FocusStrategy(Strategy):
    """Give one domain a fixed share, the rest equally; switch to the uniform mixture half-way."""

    name = "focus"
    description = "Give one domain a fixed share, the rest equally."
    config_class = FocusConfig

    def initial_mixture(self, context):
        names = list(context.domains.names)
        if self.config.domain not in names:
            raise ValueError(f"focus: domain={self.config.domain!r} is not one of the run's domains {names}.")
        others = [n for n in names if n != self.config.domain]
        if not others:
            return Mixture({self.config.domain: 1.0})
        rest = (1 - self.config.share) / len(others)
        return Mixture({self.config.domain: self.config.share, **dict.fromkeys(others, rest)})

    def next_decision_step(self, step, max_steps):
        # Decide once, half-way through the run.
        return max_steps // 2 if step <= max_steps // 2 else None

    def decide(self, context):
        return Mixture.uniform(context.domains.names)
