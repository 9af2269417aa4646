"""A test-only hf_datamix plugin: one strategy, one mixing law and one simulator.

* ``reverse_alpha`` (strategy): weights proportional to reverse alphabetical rank.  The domain names
  sorted in *reverse* alphabetical order get ranks 1, 2, ..., n; for ``["a", "b", "c"]`` the order is
  ``c, b, a``, so the weights are c=1/6, b=2/6, a=3/6.
* ``ridge_linear`` (law): the linear law fitted by ridge regression.
* ``held_out_now`` (simulator): scores Dirichlet candidates by the current model's decision-split loss
  per domain, lowered in proportion to each candidate's weight on it (one forward pass, no training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hf_datamix import Mixture, Strategy, StrategyConfig
from hf_datamix.laws import LinearLaw
from hf_datamix.simulate.base import Simulation, Simulator, SimulatorConfig


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


class RidgeLinearLaw(LinearLaw):
    """``L_j(x) = b_j + a_jᵀx`` fitted by ridge regression (``ridge`` the penalty on ``a``)."""

    name = "ridge_linear"

    def __init__(self, ridge: float = 1e-3):
        super().__init__()
        self.ridge = float(ridge)

    def config(self):
        return {"ridge": self.ridge}

    def _fit(self, X, Y, seed):
        centred_x, centred_y = X - X.mean(axis=0), Y - Y.mean(axis=0)
        a = np.linalg.solve(centred_x.T @ centred_x + self.ridge * np.eye(X.shape[1]), centred_x.T @ centred_y)
        self.a = a.T.copy()
        self.b = Y.mean(axis=0) - X.mean(axis=0) @ a


@dataclass
class HeldOutNowConfig(SimulatorConfig):
    now_candidates: int = field(default=6, metadata={"help": "Dirichlet candidates, >= 2."})
    now_gain: float = field(default=0.1, metadata={"help": "How much a domain's weight lowers its score."})


class HeldOutNow(Simulator):
    """Candidates scored without training: the current decision loss, lowered by each candidate's weight."""

    name = "held_out_now"
    description = "Test plugin: current decision-split loss, lowered in proportion to each candidate's weight."
    config_class = HeldOutNowConfig

    def simulate(self, context, around, candidates=None, groups=None):
        names = context.domains.names
        trainer = context.trainer
        scorer = trainer.decision_scorer(limit=2)  # the Scorer the trainer hands over
        now = np.asarray(scorer(trainer.accelerator.unwrap_model(trainer.model)))
        rng = np.random.default_rng([self.seed, context.step])
        X = rng.dirichlet(np.ones(len(names)), size=self.config.now_candidates)
        Y = now[None, :] - self.config.now_gain * X
        return Simulation(
            list(names), {}, list(names), X, Y, list(names), {"simulator": self.name, "now": now.tolist()}
        )
