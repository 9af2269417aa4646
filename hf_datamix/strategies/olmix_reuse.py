"""``olmix_reuse``: Olmix's offline schema (proxy swarm → law → constrained proposal) with mixture reuse.

Before a run (or a stage) trains, a swarm of proxies is trained on Dirichlet mixtures centred on
the natural prior, a mixing law is fitted on their per-domain losses, and the proposer picks the
mixture under repetition caps with a KL pull to the prior.  When a stage opens with a DomainSet
update, only the affected domains (plus the unaffected ones folded into one virtual domain, and any
reopened ones) are re-simulated: see :mod:`hf_datamix.reuse`.  A removal needs no runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..laws import MixingLaw
from ..mixture import Mixture
from ..proposer import fit_and_propose
from ..reuse import REUSE_MODES, VIRTUAL, ReusePlan, coordinate_caps, plan_reuse
from ..simulate.proxy_swarm import ProxyConfig, ProxySwarm
from ..swarm import default_swarm_size, sample_swarm
from .base import Decision, DecisionContext, Strategy, StrategyConfig

logger = logging.getLogger(__name__)


@dataclass
class OlmixConfig(StrategyConfig):
    """Settings of ``olmix_reuse`` (Olmix's published values where it gives them)."""

    reuse: str = field(default="full", metadata={"help": f"Reuse mode at domain-set updates: {list(REUSE_MODES)}."})
    reopen: list[str] = field(default_factory=list, metadata={"help": "partial mode: unaffected domains to reopen."})
    swarm_size: int | None = field(
        default=None,
        metadata={"help": "Proxies per swarm (default Olmix's: 5m for a whole domain set, 3(m+1) for an update's m "
                          "re-simulated coordinates)."},
    )
    min_weight: float = field(default=0.002, metadata={"help": "Swarm weights below this are zeroed."})
    proxy_preset: str = field(default="tiny", metadata={"help": "Proxy model size (hf_datamix.models.PRESETS)."})
    proxy_steps: int = field(default=100, metadata={"help": "Optimizer steps per proxy."})
    proxy_batch_size: int = field(default=8, metadata={"help": "Batch size of a proxy."})
    proxy_learning_rate: float = field(default=3e-3, metadata={"help": "Peak LR of a proxy."})
    proxy_eval_blocks: int = field(default=16, metadata={"help": "Decision blocks per domain scoring a proxy."})
    law: str = field(default="log_linear", metadata={"help": "Mixing law (hf_datamix.laws.available_laws())."})
    law_starts: int = field(default=300, metadata={"help": "Random starts of the log-linear fit."})
    kl: float = field(default=0.05, metadata={"help": "Weight of KL(E x || prior)."})
    prior: str = field(default="natural", metadata={"help": "Prior: natural (token shares) or uniform."})
    max_repetitions: float | None = field(default=4.0, metadata={"help": "k of the caps x_j <= k N_j / R."})
    seed: int = field(default=0, metadata={"help": "Seed of swarms and fits."})

    def __post_init__(self):
        if self.reuse not in REUSE_MODES:
            raise ValueError(f"olmix_reuse reuse={self.reuse!r}; use one of {list(REUSE_MODES)}.")
        if self.prior not in ("natural", "uniform"):
            raise ValueError(f"olmix_reuse prior={self.prior!r}; use 'natural' or 'uniform'.")
        if self.proxy_steps < 1:
            raise ValueError(f"olmix_reuse proxy_steps={self.proxy_steps}; use at least 1.")
        if self.swarm_size is not None and self.swarm_size < 2:
            raise ValueError(f"olmix_reuse swarm_size={self.swarm_size}; use at least 2, or null for Olmix's default (5m, 3(m+1) at an update).")


class OlmixReuseStrategy(Strategy):
    """Olmix: proxy swarm, law, constrained proposal; mixture reuse when the domain set changes."""

    name = "olmix_reuse"
    description = "Olmix: proxy swarm + log-linear law + capped proposal; reuses the mixture across domain updates."
    config_class = OlmixConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.proxy_runs = 0
        self.last_law: dict | None = None
        self.last_domains: list[str] | None = None

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        return self._prior(context, context.domains.names)

    def next_decision_step(self, step: int, max_steps: int) -> int | None:
        return 0 if step == 0 else None

    def state_dict(self) -> dict[str, Any]:
        return {"proxy_runs": self.proxy_runs, "last_law": self.last_law, "last_domains": self.last_domains}

    def load_state_dict(self, state):
        self.proxy_runs = state.get("proxy_runs", 0)
        self.last_law, self.last_domains = state.get("last_law"), state.get("last_domains")

    # -- pieces ---------------------------------------------------------------------------------
    def _prior(self, context: DecisionContext, names: list[str]) -> Mixture:
        if self.config.prior == "uniform":
            return Mixture.uniform(names)
        counts = {n: context.token_counts.get(n) for n in names}
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
            previous, context.update, self.config.reuse, self.config.reopen, law=law, law_domains=self.last_domains
        )

    def decide(self, context: DecisionContext) -> Decision:
        cfg = self.config
        plan = self.plan(context)
        names = context.domains.names
        if plan.no_runs:
            return Decision(plan.internals.restrict(names), {"reuse": plan.to_dict(), "proxy_runs": 0})
        coordinates = plan.coordinates
        tokens = dict(context.token_counts)
        if plan.fixed:
            tokens[VIRTUAL] = sum(context.token_counts[n] for n in plan.fixed)
        trainer = context.trainer
        target_tokens = context.max_steps * trainer.samples_per_step * trainer.tokens_per_sample
        caps = coordinate_caps(plan, context.token_counts, target_tokens, cfg.max_repetitions)
        cap_map = None if caps is None else dict(zip(coordinates, caps))
        swarm = sample_swarm(
            coordinates,
            prior=self._prior_over(context, coordinates, tokens),
            size=cfg.swarm_size or default_swarm_size(len(coordinates), initial=plan.mode == "recompute"),
            min_weight=cfg.min_weight,
            caps=cap_map,
            seed=cfg.seed + 1000 * context.stage,
        )
        expanded = [plan.expand(m) for m in swarm]
        proxies = ProxySwarm(
            context.domains,
            trainer.processing_class,
            ProxyConfig(cfg.proxy_preset, cfg.proxy_steps, cfg.proxy_batch_size, cfg.proxy_learning_rate,
                        cfg.proxy_eval_blocks, cfg.seed),
            os.path.join(trainer.args.output_dir, f"swarm-stage{context.stage}"),
            base_args=trainer.args,
            ledger=context.ledger,
        )
        result = proxies.run(expanded)
        self.proxy_runs += result.trained
        X = np.array([m.to_array(coordinates) for m in swarm])
        mixture, record = fit_and_propose(
            X, result.metrics, coordinates, plan.groups, names, self._prior(context, names).to_array(names),
            law=cfg.law, law_starts=cfg.law_starts, kl=cfg.kl, caps=caps, seed=cfg.seed,
        )
        self.last_law, self.last_domains = record["law"], coordinates
        details = {
            "reuse": plan.to_dict(),
            "proxy_runs": result.trained,
            "proxy_runs_total": self.proxy_runs,
            "proxy": asdict(proxies.config),
            **record,
        }
        return Decision(mixture, details)

    def _prior_over(self, context, coordinates, tokens) -> Mixture:
        if self.config.prior == "uniform":
            return Mixture.uniform(coordinates)
        return Mixture.proportional({n: tokens[n] for n in coordinates})
