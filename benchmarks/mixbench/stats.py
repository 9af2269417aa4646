"""The statistics of the protocol: rank agreement with bootstrap intervals, top-1 regret, paired differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as st


BOOTSTRAP = 2000
LEVEL = 0.95


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _interval(values: np.ndarray, reps: int) -> list[float | None]:
    values = values[np.isfinite(values)]
    if len(values) < reps // 2:
        return [None, None]
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], n: int, seed: int = 0, reps: int = BOOTSTRAP
) -> list[float | None]:
    """Percentile interval of ``statistic(indices)`` over ``reps`` resamples of ``range(n)`` with replacement
    (resamples where the statistic is undefined are left out)."""
    rng = np.random.default_rng(seed)
    return _interval(np.array([statistic(rng.integers(0, n, n)) for _ in range(reps)], dtype=float), reps)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row pair (average ranks for ties); NaN where a row is constant."""
    rx, ry = st.rankdata(x, axis=1), st.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b of each row pair; NaN where a row is constant."""
    i, j = np.triu_indices(x.shape[1], k=1)
    sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum(axis=1) / np.sqrt((sx != 0).sum(axis=1) * (sy != 0).sum(axis=1))


def rank_agreement(simulated: Sequence[float], true: Sequence[float], seed: int = 0, reps: int = BOOTSTRAP) -> dict:
    """Spearman ρ and Kendall τ between simulated and true scores (both lower = better), with bootstrap
    intervals over the mixtures, and the top-1 regret: the true score of the simulator's best minus the best."""
    sim, real = np.asarray(simulated, dtype=float), np.asarray(true, dtype=float)
    if sim.shape != real.shape or sim.ndim != 1 or len(sim) < 3:
        raise ValueError(
            f"rank_agreement needs two equal-length score vectors of >= 3 mixtures, got {sim.shape}, {real.shape}."
        )
    index = np.random.default_rng(seed).integers(0, len(sim), (reps, len(sim)))
    both = np.vstack([np.arange(len(sim)), index])  # row 0: the mixtures themselves
    rho, tau = _spearman_rows(sim[both], real[both]), _kendall_rows(sim[both], real[both])
    return {
        "spearman": _finite(rho[0]),
        "spearman_ci": _interval(rho[1:], reps),
        "kendall": _finite(tau[0]),
        "kendall_ci": _interval(tau[1:], reps),
        "top1_regret": float(real[int(np.argmin(sim))] - real.min()),
        "top1": int(np.argmin(sim)),
    }


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict:
    """``a − b`` per seed (paired): mean, t-interval (df = seeds − 1) and bootstrap interval of the mean."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"paired_difference needs >= 2 paired seeds, got {len(np.atleast_1d(d))}.")
    mean, sem = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    half = float(st.t.ppf((1 + LEVEL) / 2, len(d) - 1) * sem)
    return {
        "per_seed": d.tolist(),
        "mean": mean,
        "t_ci": [mean - half, mean + half],
        "bootstrap_ci": bootstrap_interval(lambda i: d[i].mean(), len(d), seed),
        "seeds": len(d),
    }


def detectable_difference(sd_of_difference: float, seeds: int) -> float:
    """Half-width of the t-interval (``LEVEL``) of a paired mean difference over ``seeds`` seeds whose per-seed
    differences have standard deviation ``sd_of_difference``: smaller true differences cannot exclude 0."""
    if seeds < 2:
        raise ValueError(f"seeds={seeds}: a t-interval needs >= 2 paired seeds.")
    return float(st.t.ppf((1 + LEVEL) / 2, seeds - 1) * sd_of_difference / np.sqrt(seeds))


def seeds_to_detect(sd_of_difference: float, difference: float, most: int = 100) -> int | None:
    """The fewest paired seeds whose t-interval half-width (:func:`detectable_difference`) is at most
    ``difference``; None if more than ``most`` would be needed (or ``difference`` <= 0)."""
    if difference <= 0:
        return None
    for n in range(2, most + 1):
        if detectable_difference(sd_of_difference, n) <= difference:
            return n
    return None


def chance_headroom(run_sd: float, mixtures: int, baselines: int, draws: int = 100_000, seed: int = 0) -> float:
    """The oracle headroom (the best of ``baselines`` runs minus the best of all ``mixtures`` runs, baselines
    among them) expected from noise alone: every run's loss the same plus independent noise of sd ``run_sd``.
    A measured headroom near it is chance: the best of many single runs is lucky (Monte Carlo, fixed seed)."""
    if not 1 <= baselines <= mixtures:
        raise ValueError(f"baselines={baselines}, mixtures={mixtures}: need 1 <= baselines <= mixtures.")
    losses = np.random.default_rng(seed).normal(0.0, run_sd, size=(draws, mixtures))
    return float(np.mean(losses[:, :baselines].min(axis=1) - losses.min(axis=1)))
