"""Continual-learning baselines: ``sequential``, ``replay`` and ``retrain`` (methods.md, "Baselines")."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mixture import Mixture
from .base import DecisionContext, Strategy, StrategyConfig


def split_new_old(context: DecisionContext) -> tuple[list[str], list[str]]:
    """``(new, old)`` domain names of the current stage: new = affected by the stage's update."""
    names = context.domains.names
    new = [n for n in names if context.update is not None and n in context.update.affected]
    return new, [n for n in names if n not in new]


def old_mixture(context: DecisionContext, old: list[str]) -> Mixture:
    """The previous stage's mixture over the ``old`` domains (uniform where there is none)."""
    previous = context.previous_mixture
    if previous is not None and all(n in previous for n in old) and sum(previous[n] for n in old) > 0:
        return previous.restrict(old)
    return Mixture.uniform(old)


class SequentialStrategy(Strategy):
    """Each stage trains on its new domains only (100 % new data)."""

    name = "sequential"
    description = "Continual baseline: 100% new data at each stage (no replay)."

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        new, _ = split_new_old(context)
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
        new, old = split_new_old(context)
        if not new or not old:
            return Mixture.uniform(context.domains.names)
        collapsed = Mixture({"replay:new": self.config.new_share, "replay:old": 1 - self.config.new_share})
        return collapsed.expand({"replay:new": Mixture.uniform(new), "replay:old": old_mixture(context, old)})


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
