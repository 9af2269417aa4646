"""``calibrated``: LoRA-probe scores corrected by a few real branches.

LoRA probes (:mod:`hf_datamix.simulate.probes`) score many candidates cheaply, but their scores are
those of adapters on a frozen model, not of the model trained on each mixture: their level and
their spread can be off, so the mixing law is fitted on the wrong scale.  Real branches
(:mod:`hf_datamix.simulate.branches`: full-parameter continuations of the current model and
optimizer) are faithful but cost a training run each.  ``calibrated`` spends a few of them to
correct the many probe scores:

1. the ``lora_probes`` simulation, with its own candidate design or the given candidates;
2. ``calibration_branches`` (2–4) of those candidates, chosen to span the probes' mean score (the
   lowest, the highest and evenly in between), are trained as real branches on their data
   mixtures from the current model (not the probes' annealed copy, with ``anneal_steps``) and
   scored on the decision split;
3. per target, the affine map ``branch ≈ a + b·lora`` is fitted by least squares over them
   (:func:`fit_affine`; exact with 2); when the fitted slope is not positive or the probe scores do
   not spread, the map is the mean offset alone (``b = 1``), and the record says why;
4. every candidate's score is its corrected probe score, except the branched ones, which get their
   branch scores.

The record keeps the probes' own record (``lora_probes``) and the calibration: which candidates were
branched, their branch and probe scores, ``a`` and ``b`` per target, the branches' tokens and every
candidate's uncorrected probe scores (``lora_Y``).  The
ledger counts the probes as ``probe`` and the branches as ``branch``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..mixture import Mixture
from ..settings import check_ranges, field_names
from .base import Simulation, Simulator, blends
from .branches import Branches
from .probes import LoRAProbes, LoRAProbesConfig


#: Probe scores whose range over the calibration candidates is below this (relative to their size)
#: do not determine a slope.
MIN_SPREAD = 1e-9


@dataclass
class CalibratedConfig(LoRAProbesConfig):
    """Settings of the ``calibrated`` simulator: the ``lora_probes`` settings and the calibration branches'.

    The branches are scored like the candidates (``score``, ``eval_blocks``, ``eval_batch_size``).
    """

    calibration_branches: int = field(
        default=3,
        metadata={
            "help": "Real branches that calibrate the probe scores, in 2..4: candidates spanning the probes' mean score."
        },
    )
    branch_steps: int = field(
        default=50, metadata={"help": "Optimizer steps of each calibration branch (at the run's batch), >= 1."}
    )

    def __post_init__(self):
        check_ranges(
            "calibrated",
            self,
            {
                **self.probe_checks(),
                "calibration_branches": (2 <= self.calibration_branches <= 4, "in 2..4"),
                "branch_steps": (self.branch_steps >= 1, ">= 1"),
            },
        )


@dataclass
class AffineFit:
    """Per target: ``corrected = a + b·lora``; ``reasons[t]`` says why target ``t`` got a shift only (else None)."""

    a: np.ndarray
    b: np.ndarray
    reasons: list[str | None]

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """``(C, T)`` probe scores mapped onto the branches' scale."""
        return self.a + self.b * np.asarray(scores, dtype=float)

    def to_dict(self, targets: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{target: {a, b, mode (affine or shift), reason}}`` for the record."""
        return {
            t: {
                "a": float(self.a[j]),
                "b": float(self.b[j]),
                "reason": self.reasons[j],
                "mode": "affine" if self.reasons[j] is None else "shift",
            }
            for j, t in enumerate(targets)
        }


def fit_affine(lora: np.ndarray, real: np.ndarray) -> AffineFit:
    """Least squares ``real[:, t] ≈ a_t + b_t·lora[:, t]`` per target over the rows where both are finite.

    Where the slope is not positive (the probes rank the other way round) or the probe scores do not
    spread, the map is a shift: ``b = 1``, ``a`` the mean of ``real − lora``.
    """
    lora, real = np.asarray(lora, dtype=float), np.asarray(real, dtype=float)
    a, b, reasons = np.zeros(lora.shape[1]), np.ones(lora.shape[1]), []
    for t in range(lora.shape[1]):
        keep = np.isfinite(lora[:, t]) & np.isfinite(real[:, t])
        x, y = lora[keep, t], real[keep, t]
        if not len(x):
            reasons.append("no finite branch and probe scores: no correction")
            continue
        spread = float(x.max() - x.min())
        slope = None
        if len(x) >= 2 and spread > MIN_SPREAD * max(1.0, float(np.abs(x).mean())):
            slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
        if slope is not None and slope > 0:
            a[t], b[t] = float(y.mean() - slope * x.mean()), slope
            reasons.append(None)
            continue
        a[t] = float(np.mean(y - x))
        reasons.append(
            f"fitted slope {slope:.4g} <= 0"
            if slope is not None
            else f"the probe scores of the calibration candidates do not spread (range {spread:.3g})"
        )
    return AffineFit(a, b, reasons)


def corrected_scores(lora: np.ndarray, real: np.ndarray, chosen: Sequence[int]) -> tuple[np.ndarray, AffineFit]:
    """``(C, T)`` probe scores ``lora`` mapped onto the branches' scale by :func:`fit_affine` over the rows
    ``chosen``, whose branch scores are ``real`` (``(len(chosen), T)``); those rows keep their finite branch
    scores (a diverged branch keeps its corrected probe score).  Returns the scores and the fit."""
    lora, real = np.asarray(lora, dtype=float), np.asarray(real, dtype=float)
    fit = fit_affine(lora[list(chosen)], real)
    Y = fit.apply(lora)
    for row, i in enumerate(chosen):
        finite = np.isfinite(real[row])
        Y[i, finite] = real[row, finite]
    return Y, fit


def spanning(scores: np.ndarray, count: int) -> list[int]:
    """``count`` indices whose ``scores`` span their range: the lowest, the highest, evenly in between.

    Ties go by index, so the choice is deterministic.
    """
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    count = min(int(count), len(order))
    return [int(order[i]) for i in np.round(np.linspace(0, len(order) - 1, count)).astype(int)]


class Calibrated(Simulator):
    """LoRA-probe scores corrected per target by an affine fit to a few real branches (module docstring).

    Settings: :class:`CalibratedConfig`.  ``self.probes`` is the :class:`LoRAProbes` simulator and
    ``self.branches`` the :class:`Branches` simulator it composes.
    """

    name = "calibrated"
    description = "LoRA-probe scores corrected per target by an affine fit to 2-4 real branches."
    config_class = CalibratedConfig

    def __init__(self, config: Any = None, *, seed: int = 0, **kwargs: Any):
        super().__init__(config, seed=seed, **kwargs)
        cfg = self.config
        self.probes = LoRAProbes({n: getattr(cfg, n) for n in field_names(LoRAProbesConfig)}, seed=self.seed)
        self.branches = Branches(
            {"branch_steps": cfg.branch_steps, "eval_blocks": cfg.eval_blocks, "eval_batch_size": cfg.eval_batch_size},
            seed=self.seed,
        )

    def check(self, domains) -> None:
        self.probes.check(domains)
        self.branches.check(domains)

    def runs_on_every_process(self, trainer) -> bool:
        return self.probes.runs_on_every_process(trainer) or self.branches.runs_on_every_process(trainer)

    def simulate(
        self,
        context,
        around: Mixture,
        candidates: Sequence[Mapping[str, float]] | None = None,
        groups: Mapping[str, Mixture] | None = None,
    ) -> Simulation | None:
        self.refuse_groups(groups)
        lora = self.probes.simulate(context, around, candidates)
        if lora is None:
            return None
        Y, calibration = self.calibrate(context, lora.Y, lora.targets, lora.mixtures())
        record = {"simulator": self.name, "lora_probes": lora.record, "calibration": calibration}
        return dataclasses.replace(lora, Y=Y, record=record)

    def interpolate(
        self, context, ends: Mapping[str, Mixture], weights: Sequence[Mapping[str, float]]
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The probes' interpolation (one probe per end), calibrated by branches on a few of the blends."""
        scored = self.probes.interpolate(context, ends, weights)
        if scored is None:
            return None
        names = context.domains.names
        mixtures = np.array([[m[n] for n in names] for m in blends(ends, weights, names)])
        Y, calibration = self.calibrate(context, scored[0], names, mixtures)
        return Y, {"simulator": self.name, "lora_probes": scored[1], "calibration": calibration}

    def calibrate(
        self, context, lora: np.ndarray, targets: Sequence[str], mixtures: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Correct the ``(C, T)`` probe scores of candidates standing for the data ``mixtures`` (``(C, domains)``).

        Returns the corrected scores (the branched candidates': their branch scores) and the record.
        """
        names, lora = context.domains.names, np.asarray(lora, dtype=float)
        chosen = spanning(lora.mean(axis=1), self.config.calibration_branches)
        data = [Mixture.from_array(names, mixtures[i]) for i in chosen]
        real, branch_targets, results = self.branches.branch(context, data, metric=self.probes.metric(context.trainer))
        if list(branch_targets) != list(targets):
            raise RuntimeError(f"calibrated: the branches score targets {branch_targets}, the probes {list(targets)}.")
        Y, fit = corrected_scores(lora, real, chosen)
        record = {
            "branched": chosen,
            "mixtures": [m.to_dict() for m in data],
            "branch_scores": real.tolist(),
            "lora_scores": lora[chosen].tolist(),
            "lora_Y": lora.tolist(),
            "fit": fit.to_dict(targets),
            "branch_steps": self.config.branch_steps,
            "tokens": int(sum(r.tokens for r in results)),
            "branches": [r.summary() for r in results],
        }
        return Y, record
