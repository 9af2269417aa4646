"""Continual-learning baselines: ``sequential``, ``replay`` and ``retrain`` (methods.md, "Baselines")."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mixture import Mixture
from ..settings import check_ranges
from .base import DecisionContext, Strategy, StrategyConfig


class SequentialStrategy(Strategy):
    """Each stage trains on its new domains only (100 % new data)."""

    name = "sequential"
    description = "Continual baseline: 100% new data at each stage (no replay)."

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        new, _ = context.new_and_old()
        names = new or context.domains.names
        return Mixture({n: (1.0 if n in names else 0.0) for n in context.domains.names})


OLD_SPLITS = ("equal", "previous")


@dataclass
class ReplayConfig(StrategyConfig):
    new_share: float = field(default=0.9, metadata={"help": "Share of the new domains (the rest replays old data)."})
    old_split: str = field(
        default="equal",
        metadata={
            "help": "How the old share is split over the old domains: equal (the reference code's) or previous (by the "
            "previous stage's mixture)."
        },
    )

    def __post_init__(self):
        check_ranges(
            "replay",
            self,
            {
                "new_share": (0 <= self.new_share <= 1, "in [0, 1]"),
                "old_split": (self.old_split in OLD_SPLITS, " or ".join(OLD_SPLITS)),
            },
        )


class ReplayStrategy(Strategy):
    """Fixed split: ``new_share`` on the new domains (equally), the rest on the old domains.

    The old share is split equally over the old domains (``old_split="equal"``, as the reference code's
    replay baseline does) or by the previous stage's mixture (``old_split="previous"``).
    """

    name = "replay"
    description = "Continual baseline: fixed new/old split (default 90/10), old share equally over the old domains."
    config_class = ReplayConfig

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        new, old = context.new_and_old()
        if not new or not old:
            return Mixture.uniform(context.domains.names)
        collapsed = Mixture({"replay:new": self.config.new_share, "replay:old": 1 - self.config.new_share})
        replayed = context.old_mixture(old) if self.config.old_split == "previous" else Mixture.uniform(old)
        return collapsed.expand({"replay:new": Mixture.uniform(new), "replay:old": replayed})


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
