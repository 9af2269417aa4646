"""Continual-learning baselines: ``sequential``, ``replay`` and ``retrain`` (methods.md, "Baselines")."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mixture import Mixture
from .base import DecisionContext, Strategy, StrategyConfig


class SequentialStrategy(Strategy):
    """Each stage trains on its new domains only (100 % new data)."""

    name = "sequential"
    description = "Continual baseline: 100% new data at each stage (no replay)."

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        new, _ = context.new_and_old()
        names = new or context.domains.names
        return Mixture({n: (1.0 if n in names else 0.0) for n in context.domains.names})


@dataclass
class ReplayConfig(StrategyConfig):
    new_share: float = field(default=0.9, metadata={"help": "Share of the new domains (the rest replays old data)."})

    def __post_init__(self):
        if not 0 <= self.new_share <= 1:
            raise ValueError(f"replay new_share={self.new_share}; use a number in [0, 1].")


class ReplayStrategy(Strategy):
    """Fixed split: ``new_share`` on the new domains (equally), the rest on old data by the previous mixture."""

    name = "replay"
    description = "Continual baseline: fixed new/old split (default 90/10), old share by the previous mixture."
    config_class = ReplayConfig

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        new, old = context.new_and_old()
        if not new or not old:
            return Mixture.uniform(context.domains.names)
        collapsed = Mixture({"replay:new": self.config.new_share, "replay:old": 1 - self.config.new_share})
        return collapsed.expand({"replay:new": Mixture.uniform(new), "replay:old": context.old_mixture(old)})


@dataclass
class RetrainConfig(StrategyConfig):
    mix: str = field(default="uniform", metadata={"help": "Mixture over all domains seen so far: uniform or natural."})

    def __post_init__(self):
        if self.mix not in ("uniform", "natural"):
            raise ValueError(f"retrain mix={self.mix!r}; use 'uniform' or 'natural'.")


class RetrainStrategy(Strategy):
    """At each stage, train from the stage-0 base on the union of all domains seen so far.

    ``restart_from_base`` tells the continual runner to reset the model and to give the stage the
    steps of every stage so far (retraining on all data is what this baseline pays for).
    """

    name = "retrain"
    description = "Continual baseline: retrain from the base on all domains seen so far at every stage."
    config_class = RetrainConfig
    restart_from_base = True

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        if self.config.mix == "natural":
            return Mixture.proportional({n: context.token_counts[n] for n in context.domains.names})
        return Mixture.uniform(context.domains.names)
