"""The strategy registry: the built-ins, in-process registrations and the ``hf_datamix.strategies`` entry points.

A :class:`~hf_datamix.registry.Registry` of :class:`~hf_datamix.strategies.base.Strategy` classes;
a package adds a strategy by declaring its class under the entry-point group
``hf_datamix.strategies`` (the built-ins are declared the same way in ``setup.cfg``).
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry, registrar
from .base import Strategy


ENTRY_POINT_GROUP = "hf_datamix.strategies"
#: The library's own strategies (``setup.cfg`` declares the same under ``hf_datamix.strategies``).
BUILTIN_STRATEGIES = {
    "uniform": "hf_datamix.strategies.uniform:UniformStrategy",
    "natural": "hf_datamix.strategies.uniform:NaturalStrategy",
    "sequential": "hf_datamix.strategies.baselines:SequentialStrategy",
    "replay": "hf_datamix.strategies.baselines:ReplayStrategy",
    "retrain": "hf_datamix.strategies.baselines:RetrainStrategy",
    "op_mix": "hf_datamix.strategies.op_mix:OpMixStrategy",
    "fixed": "hf_datamix.strategies.fixed:FixedStrategy",
    "olmix_reuse": "hf_datamix.strategies.olmix_reuse:OlmixReuseStrategy",
    "on_policy_distill": "hf_datamix.strategies.on_policy_distill:OnPolicyDistillStrategy",
}

STRATEGIES = Registry("strategy", Strategy, ENTRY_POINT_GROUP, BUILTIN_STRATEGIES)

register_strategy = registrar(STRATEGIES)


def available_strategies() -> list[str]:
    """Sorted names of the registered strategies (built-ins and plugins)."""
    return STRATEGIES.names()


def get_strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``."""
    return STRATEGIES.get(name)


def create_strategy(name: str, config: Any = None, **kwargs: Any) -> Strategy:
    """Instantiate the strategy ``name`` with its settings (a mapping, a config object or keywords).

    A strategy that decides through a simulator takes the simulator's settings in the same mapping
    (``create_strategy("op_mix", probe_steps=50)``).
    """
    return get_strategy_class(name)(config, **kwargs)
