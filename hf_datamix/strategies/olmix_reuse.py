"""``olmix_reuse``: Olmix's offline schema (proxy swarm → law → constrained proposal) with mixture reuse.

Before a run (or a stage) trains, a swarm of proxies is trained on Dirichlet mixtures centred on
the natural prior, a mixing law is fitted on their per-domain losses, and the proposer picks the
mixture under repetition caps with a KL pull to the prior.  When a stage opens with a DomainSet
update, only the affected domains (plus the unaffected ones folded into one virtual domain, and any
reopened ones) are re-simulated: see :mod:`hf_datamix.reuse`.  A removal needs no runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..laws import MixingLaw
from ..mixture import Mixture
from ..proposer import ProposerConfig
from ..reuse import REUSE_MODES, VIRTUAL, ReusePlan, plan_reuse
from ..settings import check_ranges
from .base import Decision, DecisionContext
from .composed import ComposedStrategy


logger = logging.getLogger(__name__)


@dataclass
class OlmixConfig(ProposerConfig):
    """Settings of ``olmix_reuse``: its reuse plan, the proposer's and the simulator's (``proxy_swarm`` by default)."""

    reuse: str = field(default="full", metadata={"help": f"Reuse mode at domain-set updates: {list(REUSE_MODES)}."})
    reopen: list[str] = field(default_factory=list, metadata={"help": "partial mode: unaffected domains to reopen."})
    prior: str = field(
        default="natural",
        metadata={
            "help": "Prior: natural (token shares) or uniform; the swarm is centred on it and the KL term pulls to it."
        },
    )
    simulator: str = field(
        default="proxy_swarm",
        metadata={
            "help": "Simulator of the candidates (one that keeps reused domains together): proxy_swarm, or a plugin's."
        },
    )

    def __post_init__(self):
        check_ranges(
            "olmix_reuse",
            self,
            {**self.proposer_checks(), "reuse": (self.reuse in REUSE_MODES, f"one of {list(REUSE_MODES)}")},
        )


class OlmixReuseStrategy(ComposedStrategy):
    """Olmix: proxy swarm, law, constrained proposal; mixture reuse when the domain set changes."""

    name = "olmix_reuse"
    description = "Olmix: proxy swarm + log-linear law + capped proposal; reuses the mixture across domain updates."
    config_class = OlmixConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.proxy_runs = 0
        # The previous decision's law, as ``auto`` reuse reads it: its coefficients, its columns (the
        # coordinates), its rows (the targets) and the virtual domains' members with their weights.
        self.last_law: dict | None = None
        self.last_domains: list[str] | None = None
        self.last_targets: list[str] | None = None
        self.last_internals: dict[str, dict[str, float]] = {}

    def check(self, domains) -> None:
        super().check(domains)
        if self.config.reuse != "recompute" and not self.simulator.supports_groups:
            raise ValueError(
                f"olmix_reuse reuse={self.config.reuse!r} keeps reused domains together, which simulator="
                f"{self.config.simulator!r} cannot; use simulator=proxy_swarm or reuse=recompute."
            )

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        return self._prior(context, context.domains.names)

    def next_decision_step(self, step: int, max_steps: int) -> int | None:
        return 0 if step == 0 else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "proxy_runs": self.proxy_runs,
            "last_law": self.last_law,
            "last_domains": self.last_domains,
            "last_targets": self.last_targets,
            "last_internals": self.last_internals,
        }

    def load_state_dict(self, state):
        self.proxy_runs = state.get("proxy_runs", 0)
        self.last_law, self.last_domains = state.get("last_law"), state.get("last_domains")
        # State saved before targets and internals were kept lacks them: plan_reuse then takes the
        # coordinates for the targets, and declines when one of them is the virtual domain.
        self.last_targets, self.last_internals = state.get("last_targets"), state.get("last_internals") or {}

    # -- pieces ---------------------------------------------------------------------------------
    def _prior(self, context: DecisionContext, names: list[str], tokens=None) -> Mixture:
        """The prior over ``names`` (domains, or a plan's coordinates with ``tokens`` per coordinate)."""
        if self.config.prior == "uniform":
            return Mixture.uniform(names)
        tokens = context.token_counts if tokens is None else tokens
        counts = {n: tokens.get(n) for n in names}
        if any(v is None for v in counts.values()):
            raise ValueError(f"olmix_reuse prior=natural needs token counts; set DomainSpec.num_tokens for {counts}.")
        return Mixture.proportional(counts)

    def plan(self, context: DecisionContext) -> ReusePlan:
        """The reuse plan of this decision (a full recomputation without a previous mixture)."""
        previous = context.previous_mixture
        if context.update is None or previous is None:
            return ReusePlan("recompute", context.domains.names, [], None, {"note": "no previous mixture"})
        law = MixingLaw.from_dict(self.last_law) if self.last_law and self.config.reuse == "auto" else None
        return plan_reuse(
            previous,
            context.update,
            self.config.reuse,
            self.config.reopen,
            law=law,
            law_domains=self.last_domains,
            law_targets=self.last_targets,
            law_groups=self.last_internals,
        )

    def decide(self, context: DecisionContext) -> Decision | None:
        plan = self.plan(context)
        names = context.domains.names
        if plan.no_runs:
            return Decision(plan.internals.restrict(names), {"reuse": plan.to_dict(), "proxy_runs": 0})
        tokens = dict(context.token_counts)
        if plan.fixed:
            tokens[VIRTUAL] = sum(context.token_counts[n] for n in plan.fixed)
        # The simulation is centred on the prior over the plan's coordinates (the virtual domain weighs
        # its members' tokens), handed over as a mixture of the domains.
        centre = self._prior(context, plan.coordinates, tokens)
        around = centre.expand(plan.groups) if plan.groups else centre
        simulation = self.simulator.simulate(context, around, groups=plan.groups)
        if simulation is None:
            return None
        self.proxy_runs += int(simulation.record.get("proxy_runs", 0))
        decision = self.propose(context, simulation)
        # The law's columns are the record's (with law_space="data" the domains, not the simulation's
        # coordinates); its rows are the simulation's targets.
        details = decision.details
        self.last_law, self.last_domains = details["law"], list(details["collapsed_domains"])
        self.last_targets, self.last_internals = list(simulation.targets), dict(details["internals"])
        decision.details.update(reuse=plan.to_dict(), proxy_runs_total=self.proxy_runs)
        return decision
