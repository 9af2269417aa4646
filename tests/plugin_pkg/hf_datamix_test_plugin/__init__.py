"""A test-only hf_datamix strategy plugin: weights proportional to reverse alphabetical rank.

The domain names sorted in *reverse* alphabetical order get ranks 1, 2, ..., n, and each
domain's weight is proportional to its rank.  For ``["a", "b", "c"]`` the order is ``c, b, a``,
so the weights are c=1/6, b=2/6, a=3/6: the alphabetically first name weighs the most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_datamix import Mixture, Strategy, StrategyConfig


@dataclass
class ReverseAlphaConfig(StrategyConfig):
    offset: float = field(default=0.0, metadata={"help": "Added to every rank before normalising."})


class ReverseAlphaStrategy(Strategy):
    """Initial mixture with weight proportional to reverse alphabetical rank; never changes it."""

    name = "reverse_alpha"
    description = "Test plugin: weight proportional to reverse alphabetical rank."
    config_class = ReverseAlphaConfig

    def initial_mixture(self, context) -> Mixture:
        names = list(context.domains.names)
        reverse_alpha = sorted(names, reverse=True)
        rank = {name: i + 1 for i, name in enumerate(reverse_alpha)}
        return Mixture({name: rank[name] + self.config.offset for name in names})
