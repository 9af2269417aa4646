"""``op_mix``: On-Policy Mix (methods.md, "OP-Mix").

One decision = LoRA probes trained on the *current* model → candidate mixtures scored by exact
weight-delta interpolation of the probes → a mixing law fitted on the candidates → the convex
proposer → the mixture for the rest of the stage.  The law, the proposer and the virtual-domain
expansion are the shared ones (``laws.py``, ``proposer.py``, ``Mixture.expand``).

Schedules:

* **pretraining** (a run or stage that no DomainSet update opened): uniform warm-up for
  ``warmup_fraction`` of the steps; then probes "old" (the current mixture) and one per domain *d*
  on ``0.9·d + 0.1·old``; ``num_candidates`` Dirichlet(1) candidates over {old, d1..dk}; the law in
  those collapsed coordinates; the proposal expanded with ``p_d = w_old·old_d + w_d``.
* **continual** (a stage opened by an update): at the stage's start, probes "old" (10 % new / 90 %
  previous mixture) and "new" (90 % new / 10 % previous); candidates ``θ(α) = (1−α)θ_old + αθ_new``
  on ``alpha_points`` values of α with effective new share ``e = 0.1 + 0.8α``; scored on every domain
  seen so far; the old share is split by the previous mixture.
* **beyond the paper**: ``redecide_every=N`` re-decides every N steps within a stage with the
  pretraining machinery around the mixture in force.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..mixture import Mixture
from ..proposer import fit_and_propose
from ..reuse import caps_for
from ..simulate.probes import OLD, LoRAProbes, probes_run_collectively
from .base import Decision, DecisionContext, Strategy, StrategyConfig
from .baselines import old_mixture, split_new_old

logger = logging.getLogger(__name__)

NEW = "op_mix:new"


@dataclass
class OpMixConfig(StrategyConfig):
    """Settings of ``op_mix`` (published defaults where the paper gives them)."""

    warmup_fraction: float = field(default=0.2, metadata={"help": "Pretraining: uniform warm-up fraction before the decision."})
    probe_steps: int | None = field(
        default=None,
        metadata={"help": "Optimizer steps per probe; None: scaled to the run as in the paper's code, 10 % of a "
                  "pretraining run (at most 5000) or 25 % of a continual stage (at most 2500)."},
    )
    probe_batch_size: int | None = field(default=None, metadata={"help": "Probe batch per process (default: per-device train batch); processes train probes together."})
    probe_rank: int = field(default=16, metadata={"help": "LoRA rank of the probes."})
    probe_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha of the probes."})
    probe_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout of the probes."})
    probe_target_modules: list[str] | None = field(default=None, metadata={"help": "LoRA targets (default: attention+MLP)."})
    probe_lr_multiplier: float = field(default=2.0, metadata={"help": "Probe LR = base LR x this."})
    probe_bf16: bool = field(default=False, metadata={"help": "Train/evaluate probes under bf16 autocast."})
    domain_probe_share: float = field(default=0.9, metadata={"help": "Pretraining probe d trains on share*d + (1-share)*old."})
    num_candidates: int = field(default=12, metadata={"help": "Pretraining: Dirichlet candidates over {old, d1..dk}."})
    dirichlet_alpha: float = field(default=1.0, metadata={"help": "Concentration of the candidate Dirichlet."})
    continual_probe_share: float = field(default=0.9, metadata={"help": "Continual: new probe 90% new, old probe 90% old."})
    alpha_points: int = field(default=9, metadata={"help": "Continual: interpolation points alpha in [0, 1]."})
    law: str = field(default="log_linear", metadata={"help": "Mixing law (hf_datamix.laws.available_laws())."})
    law_starts: int = field(default=300, metadata={"help": "Random starts of the log-linear law fit."})
    kl: float = field(default=0.05, metadata={"help": "Weight of KL(E x || prior) in the proposal."})
    prior: str = field(default="uniform", metadata={"help": "Prior of the KL term: uniform or natural."})
    max_repetitions: float | None = field(default=4.0, metadata={"help": "k of the caps x_j <= k N_j / R; None: no caps."})
    eval_blocks: int | None = field(
        default=64, metadata={"help": "Decision blocks (SFT: decision examples) per domain used to score candidates."}
    )
    score: str = field(
        default="auto",
        metadata={"help": "Candidate score: loss, task_error (generation, SFT only) or auto (task_error under SFT)."},
    )
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size of candidate scoring."})
    redecide_every: int | None = field(default=None, metadata={"help": "Beyond the paper: re-decide every N steps."})
    seed: int = field(default=0, metadata={"help": "Seed of probes' data and candidates."})
    save_probe_adapters: bool = field(
        default=False, metadata={"help": "Keep every decision's probes in output_dir/probe_adapters/ (PEFT format)."}
    )

    def __post_init__(self):
        checks = {  # setting: (in range, the range)
            "warmup_fraction": (0 < self.warmup_fraction < 1, "in (0, 1)"),
            "probe_steps": (self.probe_steps is None or self.probe_steps >= 1, ">= 1, or null: scaled to the run"),
            "domain_probe_share": (0 < self.domain_probe_share <= 1, "in (0, 1]"),
            "continual_probe_share": (0.5 < self.continual_probe_share <= 1, "in (0.5, 1]"),
            "num_candidates": (self.num_candidates >= 2, ">= 2"),
            "alpha_points": (self.alpha_points >= 3, ">= 3"),
            "kl": (self.kl >= 0, ">= 0"),
            "prior": (self.prior in ("uniform", "natural"), "uniform or natural"),
            "redecide_every": (self.redecide_every is None or self.redecide_every >= 1, ">= 1, or null"),
            "score": (self.score in ("auto", "loss", "task_error"), "auto, loss or task_error"),
        }
        bad = [f"{name}={getattr(self, name)!r} (must be {allowed})" for name, (ok, allowed) in checks.items() if not ok]
        if bad:
            raise ValueError(f"op_mix settings out of range: {', '.join(bad)}.")


class OpMixStrategy(Strategy):
    """On-Policy Mix: LoRA-probe simulation on the current model, mixing law, convex proposal."""

    name = "op_mix"
    description = "On-Policy Mix: LoRA probes on the current model, interpolated candidates, log-linear law, proposal."
    config_class = OpMixConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.mode = "pretrain"

    # -- schedule -------------------------------------------------------------------------------
    def initial_mixture(self, context: DecisionContext) -> Mixture:
        new, old = split_new_old(context)
        self.mode = "continual" if new and old else "pretrain"
        if len(context.domains) == 1:
            self.mode = "single"  # nothing to mix: no probes, no decision
        if self.mode in ("pretrain", "single"):
            return Mixture.uniform(context.domains.names)
        # Until the stage-start decision lands (or if it fails): the middle candidate, e = 0.5.
        return self._expand_new_old(0.5, old_mixture(context, old), Mixture.uniform(new))

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

    def runs_on_every_process(self, trainer) -> bool:
        return probes_run_collectively(trainer)

    # -- decisions ------------------------------------------------------------------------------
    def decide(self, context: DecisionContext) -> Decision | None:
        if self.mode == "continual" and context.step == 0:
            return self._decide_continual(context)
        return self._decide_around(context)

    def probe_steps(self, context: DecisionContext) -> int:
        """Steps per probe: ``probe_steps``, or scaled to the run when it is None (see its help)."""
        if self.config.probe_steps is not None:
            return self.config.probe_steps
        # The reference code's probes see about 10 % of a pretraining run's sequences (5000 of 50k
        # steps) and a quarter of a continual stage's (2500 of 10k): a fixed 2500 would make a
        # 40-step run sit in its probes for minutes.
        share, most = (0.25, 2500) if self.mode == "continual" else (0.1, 5000)
        return max(1, min(most, round(share * context.max_steps)))

    def _caps(self, context: DecisionContext, collapsed: list[str], internals: dict[str, Mixture]) -> np.ndarray | None:
        trainer = context.trainer
        remaining = max(1, context.max_steps - context.step) * trainer.samples_per_step * trainer.tokens_per_sample
        # What each domain has left of its cap after the tokens already drawn, over the remaining horizon.
        return caps_for(collapsed, internals, context.token_counts, remaining, self.config.max_repetitions,
                        drawn=context.drawn_tokens)

    def _prior(self, context: DecisionContext) -> np.ndarray:
        names = context.domains.names
        if self.config.prior == "natural":
            return Mixture.proportional({n: context.token_counts[n] for n in names}).to_array(names)
        return Mixture.uniform(names).to_array(names)

    def _propose(self, context, X, Y, collapsed, internals, extra) -> Decision:
        cfg = self.config
        mixture, record = fit_and_propose(
            X, Y, collapsed, internals, context.domains.names, self._prior(context),
            law=cfg.law, law_starts=cfg.law_starts, kl=cfg.kl, caps=self._caps(context, collapsed, internals),
            seed=cfg.seed,
        )
        schedule = self.mode if context.step == 0 else ("pretrain" if self.mode == "pretrain" else "redecide")
        return Decision(mixture, {"schedule": schedule, "probe_steps": self.probe_steps(context), **record, **extra})

    def _decide_around(self, context: DecisionContext) -> Decision | None:
        """Pretraining schedule (and mid-stage re-decisions): probes around the mixture in force."""
        around = context.mixture or Mixture.uniform(context.domains.names)
        simulation = LoRAProbes(self.config, probe_steps=self.probe_steps(context)).simulate(context, around)
        if simulation is None:
            return None
        return self._propose(context, simulation.X, simulation.Y, simulation.coordinates, simulation.groups,
                             simulation.record)

    def _decide_continual(self, context: DecisionContext) -> Decision | None:
        """Continual schedule: "old" and "new" probes, interpolation candidates over alpha."""
        cfg = self.config
        new, old = split_new_old(context)
        previous, fresh = old_mixture(context, old), Mixture.uniform(new)
        share = cfg.continual_probe_share
        probes = {
            "old": self._expand_new_old(1 - share, previous, fresh),
            "new": self._expand_new_old(share, previous, fresh),
        }
        lora = LoRAProbes(cfg, probe_steps=self.probe_steps(context))
        with lora.session(context) as simulator:
            probe_info = lora.train_probes(context, simulator, probes)
            if set(simulator.probes) != {"old", "new"}:
                logger.warning("op_mix: a stage probe was dropped; keeping the stage's initial mixture.")
                return None
            alphas = np.linspace(0.0, 1.0, cfg.alpha_points)
            candidates = [{"old": 1 - a, "new": a} for a in alphas]
            Y = lora.scores(context, simulator, candidates)
        low = 1 - share
        effective = low + (share - low) * alphas  # e = 0.1 + 0.8 alpha with the published shares
        X = np.stack([1 - effective, effective], axis=1)
        extra = {"probes": probe_info, "alphas": alphas.tolist(), "new_domains": new}
        return self._propose(context, X, Y, [OLD, NEW], {OLD: previous, NEW: fresh}, extra)

    @staticmethod
    def _expand_new_old(new_share: float, previous: Mixture, fresh: Mixture) -> Mixture:
        collapsed = Mixture({OLD: 1 - new_share, NEW: new_share})
        return collapsed.expand({OLD: previous, NEW: fresh})
