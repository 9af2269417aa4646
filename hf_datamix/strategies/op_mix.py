"""``op_mix``: On-Policy Mix (methods.md, "OP-Mix").

One decision = LoRA probes trained on the *current* model → candidate mixtures scored by exact
weight-delta interpolation of the probes → a mixing law fitted on the candidates → the convex
proposer → the mixture for the rest of the stage.  op_mix is this schedule composed with a
simulator (``simulator="lora_probes"``, :mod:`hf_datamix.simulate.probes`; any registered one can
stand in) and the shared decision step (:func:`hf_datamix.proposer.decide`).

Schedules:

* **pretraining** (a run or stage that no DomainSet update opened): uniform warm-up for
  ``warmup_fraction`` of the steps; then the simulator searches around the mixture in force (LoRA
  probes: "old" and one per domain *d* on ``0.9·d + 0.1·old``; Dirichlet candidates over
  {old, d1..dk}); the law in the simulation's coordinates; the proposal expanded back to domains.
* **continual** (a stage opened by an update): at the stage's start, the simulator scores the line
  between "old" (10 % new / 90 % previous mixture) and "new" (90 % new / 10 % previous) on
  ``alpha_points`` values of α (LoRA probes: ``θ(α) = (1−α)θ_old + αθ_new``) with effective new
  share ``e = 0.1 + 0.8α``; scored on every domain seen so far; the old share is split by the
  previous mixture.
* **beyond the paper**: ``redecide_every=N`` re-decides every N steps within a stage with the
  pretraining machinery around the mixture in force.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..mixture import Mixture
from ..proposer import PRIORS, ProposerConfig, prior_weights
from ..settings import check_ranges
from ..simulate.base import Simulation
from ..simulate.probes import OLD
from .base import Decision, DecisionContext
from .composed import ComposedStrategy


logger = logging.getLogger(__name__)

NEW = "op_mix:new"


@dataclass
class OpMixConfig(ProposerConfig):
    """Settings of ``op_mix``: its schedule, the proposer's, and the simulator's (``lora_probes`` by default)."""

    warmup_fraction: float = field(
        default=0.2, metadata={"help": "Pretraining: warm-up fraction before the decision, in (0, 1)."}
    )
    warmup_mixture: str = field(
        default="uniform",
        metadata={
            "help": "Pretraining: the mixture of the warm-up, uniform (as published) or natural (token shares: where "
            "small domains would run dry, a uniform warm-up spends their epochs before any decision)."
        },
    )
    continual_probe_share: float = field(
        default=0.9, metadata={"help": "Continual: the new end is 90% new data, the old end 90% old, in (0.5, 1]."}
    )
    alpha_points: int = field(default=9, metadata={"help": "Continual: interpolation points alpha in [0, 1], >= 3."})
    redecide_every: int | None = field(
        default=None, metadata={"help": "Beyond the paper: re-decide every N steps, >= 1 (null: never)."}
    )
    simulator: str = field(
        default="lora_probes",
        metadata={
            "help": "Simulator of the candidates: lora_probes, branches, calibrated, proxy_swarm, or a plugin's "
            "(hf_datamix.simulators)."
        },
    )

    def __post_init__(self):
        check_ranges(
            "op_mix",
            self,
            {
                "warmup_fraction": (0 < self.warmup_fraction < 1, "in (0, 1)"),
                "warmup_mixture": (self.warmup_mixture in PRIORS, " or ".join(PRIORS)),
                "continual_probe_share": (0.5 < self.continual_probe_share <= 1, "in (0.5, 1]"),
                "alpha_points": (self.alpha_points >= 3, ">= 3"),
                "redecide_every": (self.redecide_every is None or self.redecide_every >= 1, ">= 1, or null"),
                **self.proposer_checks(),
            },
        )


class OpMixStrategy(ComposedStrategy):
    """On-Policy Mix: a simulation on the current model (LoRA probes), mixing law, convex proposal."""

    name = "op_mix"
    description = "On-Policy Mix: LoRA probes on the current model, interpolated candidates, log-linear law, proposal."
    config_class = OpMixConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.mode = "pretrain"

    # -- schedule -------------------------------------------------------------------------------
    def initial_mixture(self, context: DecisionContext) -> Mixture:
        new, old = context.new_and_old()
        self.mode = "continual" if new and old else "pretrain"
        if len(context.domains) == 1:
            self.mode = "single"  # nothing to mix: no probes, no decision
        if self.mode == "single":
            return Mixture.uniform(context.domains.names)
        if self.mode == "pretrain":
            names = context.domains.names
            weights = prior_weights(self.config.warmup_mixture, context, names, setting="warmup_mixture")
            return Mixture.from_array(names, weights)
        # Until the stage-start decision lands (or if it fails): the middle candidate, e = 0.5.
        return self._expand_new_old(0.5, context.old_mixture(old), Mixture.uniform(new))

    def next_decision_step(self, step: int, max_steps: int) -> int | None:
        if self.mode == "single":
            return None
        first = 0 if self.mode == "continual" else max(1, int(round(self.config.warmup_fraction * max_steps)))
        points = [first]
        if self.config.redecide_every:
            points += list(range(first + self.config.redecide_every, max_steps, self.config.redecide_every))
        later = [p for p in points if p >= step and p < max_steps - 1]
        return min(later) if later else None

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def load_state_dict(self, state):
        self.mode = state.get("mode", self.mode)

    # -- decisions ------------------------------------------------------------------------------
    def decide(self, context: DecisionContext) -> Decision | None:
        if self.mode == "continual" and context.step == 0:
            simulation = self._simulate_continual(context)
        else:  # the pretraining schedule (and mid-stage re-decisions): around the mixture in force
            simulation = self.simulator.simulate(context, context.mixture or Mixture.uniform(context.domains.names))
        return None if simulation is None else self.propose(context, simulation)

    def propose(self, context: DecisionContext, simulation: Simulation) -> Decision:
        """The decision from ``simulation`` (:meth:`ComposedStrategy.propose`), recorded with its schedule."""
        decision = super().propose(context, simulation)
        schedule = self.mode if context.step == 0 else ("pretrain" if self.mode == "pretrain" else "redecide")
        decision.details["schedule"] = schedule
        return decision

    def _simulate_continual(self, context: DecisionContext) -> Simulation | None:
        """Continual schedule: the simulator scores the line between an "old" and a "new" end."""
        cfg, names = self.config, context.domains.names
        new, old = context.new_and_old()
        previous, fresh = context.old_mixture(old), Mixture.uniform(new)
        share = cfg.continual_probe_share
        ends = {
            "old": self._expand_new_old(1 - share, previous, fresh),
            "new": self._expand_new_old(share, previous, fresh),
        }
        alphas = np.linspace(0.0, 1.0, cfg.alpha_points)
        scored = self.simulator.interpolate(context, ends, [{"old": 1 - a, "new": a} for a in alphas])
        if scored is None:
            logger.warning("op_mix: the stage's simulation failed; keeping the stage's initial mixture.")
            return None
        Y, record = scored
        low = 1 - share
        effective = low + (share - low) * alphas  # e = 0.1 + 0.8 alpha with the published shares
        X = np.stack([1 - effective, effective], axis=1)
        record = {**record, "alphas": alphas.tolist(), "new_domains": new}
        # The reference code's continual prior: half the previous mixture, half the new domains.
        return Simulation(
            [OLD, NEW], {OLD: previous, NEW: fresh}, list(names), X, Y, list(names), record, prior={OLD: 0.5, NEW: 0.5}
        )

    @staticmethod
    def _expand_new_old(new_share: float, previous: Mixture, fresh: Mixture) -> Mixture:
        collapsed = Mixture({OLD: 1 - new_share, NEW: new_share})
        return collapsed.expand({OLD: previous, NEW: fresh})
