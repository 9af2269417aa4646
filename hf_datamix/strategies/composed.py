"""Strategies that decide by the mixing loop: a schedule plus a composition.

The loop is *simulate candidates → fit a mixing law → propose*.  A :class:`ComposedStrategy` says
*when* to decide (its schedule: :meth:`~hf_datamix.Strategy.next_decision_step`, and what to search
around) and composes the rest: a :class:`~hf_datamix.simulate.base.Simulator` chosen by name
(``simulator="lora_probes"``, with its own settings) and the shared
:class:`~hf_datamix.proposer.ProposerConfig` fed to :func:`~hf_datamix.proposer.decide`.  Its
settings are its ``config_class`` (a ``ProposerConfig`` subclass with a ``simulator`` field) and the
simulator's ``config_class``, passed together as one mapping from Python, or as flags in the recipes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..proposer import ProposerConfig, decide
from ..settings import as_values, build_config, field_names
from ..simulate.base import Simulation, Simulator, get_simulator_class
from .base import Decision, DecisionContext, Strategy


class ComposedStrategy(Strategy):
    """Base class of strategies made of a schedule, a simulator and a :class:`ProposerConfig` (module docstring).

    ``self.simulator`` is the simulator, built from the settings that are not the strategy's own.
    """

    config_class = ProposerConfig

    def __init__(self, config: Any = None, **kwargs: Any):
        values = as_values(self.config_class, config, self.owner())
        values.update(kwargs)
        own = {k: v for k, v in values.items() if k in field_names(self.config_class)}
        self.config = build_config(self.config_class, own, {}, owner=self.owner())
        rest = {k: v for k, v in values.items() if k not in own}
        simulator_class = get_simulator_class(self.config.simulator)
        unknown = sorted(set(rest) - set(field_names(simulator_class.config_class)))
        if unknown:
            known = sorted(field_names(self.config_class) + field_names(simulator_class.config_class))
            raise ValueError(
                f"{self.owner()} (simulator {self.config.simulator!r}) has no setting(s) {unknown}; "
                f"its settings are {known}."
            )
        self.simulator: Simulator = simulator_class(rest, seed=self.config.decision_seed)

    @classmethod
    def default_simulator(cls) -> str:
        """The simulator this strategy uses unless told otherwise."""
        return cls.config_class.__dataclass_fields__["simulator"].default

    @classmethod
    def settings_classes(cls, simulator: str | None = None) -> list[type]:
        return [cls.config_class, get_simulator_class(simulator or cls.default_simulator()).config_class]

    def settings(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.config), **self.simulator.settings()}

    def check(self, domains) -> None:
        self.simulator.check(domains)

    def propose(self, context: DecisionContext, simulation: Simulation) -> Decision:
        """The decision this strategy takes from a given ``simulation``: its law fitted on the simulated
        candidates and the mixture its proposer settings give (:func:`~hf_datamix.proposer.decide`).

        A decision is the simulator's ``simulate`` followed by this, so strategies that differ only in their
        proposer settings (prior, law, trust region, ...) can be compared on one simulation, each giving the
        decision it would have taken after simulating alone.
        """
        return decide(simulation, self.config, context)

    def runs_on_every_process(self, trainer) -> bool:
        return self.simulator.runs_on_every_process(trainer)
