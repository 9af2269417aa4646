"""Proposer: turns a fitted mixing law into the next mixture, and :func:`decide`, the one decision step.

:func:`propose` solves ``min_x (1/T)·Σ_j w_j·L_j(x) + kl·KL(E·x ‖ q)`` over the simplex with
per-coordinate caps ``x_i <= caps_i`` (repetition limits ``k·N_i/R``).  ``x`` lives on the
*collapsed* coordinates (a virtual domain counts as one); ``E`` expands it to the full domains where
the prior ``q`` is given.

:func:`decide` is where every strategy that simulates ends (``op_mix``, ``olmix_reuse``, plugins):
given a :class:`~hf_datamix.simulate.base.Simulation` and a :class:`ProposerConfig`, it applies the
repetition caps over the remaining horizon, the prior, the law fit, the proposal and the expansion,
and records them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import rel_entr

from .constants import CAP_TOLERANCE
from .horizon import decision_caps
from .laws import MixingLaw, check_mixtures, get_law
from .mixture import Mixture, expansion_matrix
from .strategies.base import Decision, DecisionContext


if TYPE_CHECKING:  # pragma: no cover
    from .simulate.base import Simulation

logger = logging.getLogger(__name__)

#: Tried in this order; OSQP only handles QPs/LPs (no exponential cone), so it is used only for those.
DEFAULT_SOLVERS = ("CLARABEL", "ECOS", "SCS", "OSQP")


class InfeasibleCapsError(ValueError):
    """The per-domain caps leave no mixture on the simplex (they sum to less than 1)."""


@dataclass
class Proposal:
    """A proposed mixture and how it was found.

    ``x`` holds the weights of the collapsed coordinates, ``x_full = E·x`` those of the full domains.
    ``objective`` is ``(1/T)·Σ_j w_j·L_j(x) + kl·KL(x_full ‖ q)`` including the law's constants;
    ``predicted`` the law's per-target predictions at ``x``.  ``status`` is ``"optimal"``,
    ``"optimal_inaccurate"``, ``"sampled"`` (law without a convex form: best of random points),
    ``"fallback_candidate"`` or ``"fallback_sampled"`` (every solver failed: ``fallback_reason`` says why).
    """

    x: np.ndarray
    x_full: np.ndarray
    objective: float
    predicted: np.ndarray
    solver: str
    status: str
    fallback_reason: str | None = None
    domains: list[str] | None = None
    full_domains: list[str] | None = None
    solver_errors: dict[str, str] = field(default_factory=dict)

    def mixture(self, full: bool = True) -> Mixture:
        """The proposal as a :class:`Mixture` over the full (or the collapsed) domains; needs names."""
        names = self.full_domains if full else self.domains
        if names is None:
            which = "full_domains" if full else "domains"
            raise ValueError(f"Proposal has no domain names: pass {which}=[...] to propose() to build a Mixture.")
        return Mixture.from_array(names, self.x_full if full else self.x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record for ``mixtures.json``."""
        return {
            "x": self.x.tolist(),
            "x_full": self.x_full.tolist(),
            "domains": self.domains,
            "full_domains": self.full_domains,
            "objective": float(self.objective),
            "predicted": self.predicted.tolist(),
            "solver": self.solver,
            "status": self.status,
            "fallback_reason": self.fallback_reason,
            "solver_errors": dict(self.solver_errors),
        }


def _vector(
    value: Any, names: Sequence[str] | None, size: int, field_name: str, missing: float = np.nan
) -> np.ndarray:
    """A float vector of ``size`` from an array or a ``{name: value}`` mapping (needs ``names``).

    Names absent from a mapping get ``missing``.
    """
    if isinstance(value, Mapping):
        if names is None:
            raise ValueError(f"{field_name} is a mapping, so pass the domain names too (domains/full_domains).")
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{field_name} names unknown domains {unknown}; known: {list(names)}.")
        value = [value.get(name, missing) for name in names]
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.shape != (size,):
        raise ValueError(f"{field_name} has {array.size} entries but {size} are needed.")
    bad = np.flatnonzero(np.isnan(array) | (array < 0))
    if len(bad):
        label = names[bad[0]] if names is not None else f"entry {bad[0]}"
        raise ValueError(f"{field_name} of {label} is {array[bad[0]]}: it must be a number >= 0.")
    return array


def _check_caps(caps: np.ndarray, names: Sequence[str]) -> None:
    total = float(np.minimum(caps, 1.0).sum())
    if total < 1.0 - 1e-9:
        listing = ", ".join(f"{name}={cap:.4g}" for name, cap in zip(names, caps))
        raise InfeasibleCapsError(
            f"caps sum to {total:.4g} < 1, so no mixture honours them ({listing}): raise the caps of "
            f"{', '.join(names)} by {1 - total:.4g} in total, e.g. more tokens N_i, fewer target tokens R "
            "or a larger max repetition k (caps are k·N_i/R)."
        )


def _project_capped_simplex(points: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto {0 <= x <= caps, Σx = 1} (bisection on the shift)."""
    lo = points.min(axis=1, keepdims=True) - 1.0  # shift where every coordinate reaches its cap
    hi = points.max(axis=1, keepdims=True)  # shift where every coordinate is 0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        over = np.clip(points - mid, 0.0, caps).sum(axis=1, keepdims=True) > 1.0
        lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    return np.clip(points - 0.5 * (lo + hi), 0.0, caps)


class _Objective:
    """The proposer's objective evaluated in numpy (for reporting, sampling and fallbacks)."""

    def __init__(self, law, weights, kl, expansion, prior):
        self.law, self.weights, self.kl, self.expansion, self.prior = law, weights, kl, expansion, prior

    def __call__(self, X: np.ndarray) -> np.ndarray:
        loss = self.law.predict(X) @ self.weights / len(self.weights)
        if self.kl == 0:
            return loss
        return loss + self.kl * rel_entr(X @ self.expansion.T, self.prior).sum(axis=1)


def _sample_search(objective: _Objective, caps: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Best of random capped-simplex points (Dirichlet with small, medium and large concentration)."""
    rng = np.random.default_rng(seed)
    n = len(caps)
    parts = [rng.dirichlet(np.full(n, alpha), size=max(1, samples // 3)) for alpha in (0.2, 1.0, 5.0)]
    points = _project_capped_simplex(np.vstack(parts + [np.full((1, n), 1.0 / n)]), caps)
    values = objective(points)
    best = int(np.nanargmin(values))
    return points[best]


def _installed_solvers() -> list[str]:
    import cvxpy as cp

    return list(cp.installed_solvers())


def _solve(problem, x, solvers: Sequence[str] | None, errors: dict[str, str]):
    """Try solvers in order; return (x, solver, status) of the first optimal solution, else the best effort."""
    import cvxpy as cp

    installed = _installed_solvers()
    if solvers is None:
        solvers = [s for s in DEFAULT_SOLVERS if s in installed and (s != "OSQP" or problem.is_qp())]
    backup = None
    for name in solvers:
        if name not in installed:
            errors[name] = f"not installed (installed: {', '.join(installed)})"
            continue
        try:
            problem.solve(solver=name)
        except Exception as err:  # noqa: BLE001 - any solver crash means "try the next one"
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        if x.value is not None and problem.status == cp.OPTIMAL:
            return np.array(x.value, dtype=np.float64), name, "optimal"
        if x.value is not None and problem.status == cp.OPTIMAL_INACCURATE and backup is None:
            backup = (np.array(x.value, dtype=np.float64), name, "optimal_inaccurate")
        errors[name] = f"status {problem.status}"
    return backup


def _check_inputs(law, prior, kl, caps, expansion, target_weights, domains, full_domains):
    """Validated ``(E, q, caps, w, domains, full_domains)`` for :func:`propose`; errors name the field."""
    m, T = law.m, law.T
    if domains is not None and len(domains) != m:
        raise ValueError(f"domains has {len(domains)} names but the law was fitted on {m} coordinates.")
    names = list(domains) if domains is not None else [f"coordinate {i}" for i in range(m)]
    E = np.eye(m) if expansion is None else np.asarray(expansion, dtype=np.float64)
    if E.ndim != 2 or E.shape[1] != m or not np.all(np.isfinite(E)) or (E < 0).any():
        raise ValueError(f"expansion must be a finite, non-negative (full domains × {m}) matrix; got shape {E.shape}.")
    off = np.flatnonzero(np.abs(E.sum(axis=0) - 1.0) > 1e-6)
    if len(off):
        raise ValueError(
            f"expansion column {names[off[0]]!r} sums to {E[:, off[0]].sum():.6g}, not 1: each column "
            "holds a coordinate's internal ratios (use hf_datamix.mixture.expansion_matrix)."
        )
    n_full = E.shape[0]
    if full_domains is None and expansion is None and domains is not None:
        full_domains = domains  # no virtual domains: the full domains are the coordinates
    if full_domains is not None and len(full_domains) != n_full:
        raise ValueError(f"full_domains has {len(full_domains)} names but expansion has {n_full} rows.")
    full_names = list(full_domains) if full_domains is not None else [f"domain {i}" for i in range(n_full)]
    if not (np.isfinite(kl) and kl >= 0):
        raise ValueError(f"kl={kl}: the KL weight must be a finite number >= 0 (the papers use 0.05).")
    q = _vector(prior, full_domains, n_full, "prior", missing=0.0)
    if q.sum() <= 0 or not np.isfinite(q).all():
        raise ValueError(f"prior {q.tolist()} must be finite with a positive sum.")
    q = q / q.sum()
    cap = np.minimum(_vector(np.ones(m) if caps is None else caps, domains, m, "caps", missing=1.0), 1.0)
    _check_caps(cap, names)
    reachable = (E[:, cap > 0] > 0).any(axis=1)
    starved = np.flatnonzero(reachable & (q <= 0))
    if len(starved) and kl > 0:
        raise ValueError(
            f"prior of {full_names[starved[0]]!r} is 0 but the mixture can give it weight, so the "
            "KL term is infinite there: give it a positive prior or cap its coordinate(s) at 0."
        )
    w = np.ones(T) if target_weights is None else _vector(target_weights, None, T, "target_weights")
    if w.sum() <= 0:
        raise ValueError("target_weights are all 0: give at least one target a positive weight.")
    return E, q, cap, w, domains, full_domains


def propose(
    law: MixingLaw,
    prior: Any,
    *,
    kl: float = 0.05,
    caps: Any = None,
    expansion: np.ndarray | None = None,
    target_weights: Any = None,
    domains: Sequence[str] | None = None,
    full_domains: Sequence[str] | None = None,
    solvers: Sequence[str] | None = None,
    fallback_candidates: Any = None,
    samples: int = 20000,
    seed: int = 0,
) -> Proposal:
    """Propose the mixture minimising the law's weighted mean prediction plus ``kl``·KL to the prior.

    Args:
        law: a fitted :class:`~hf_datamix.laws.MixingLaw` over the ``m`` collapsed coordinates.
        prior: ``q`` over the full domains (array, or mapping such as a Mixture with ``full_domains``,
            absent names get 0); normalised.
        kl: weight λ of the KL term (0.05 in both papers); 0 disables it.
        caps: per-coordinate upper bounds (array, or mapping with ``domains`` where absent names
            are uncapped); ``None``/inf = no cap.
        expansion: E (full domains × collapsed coordinates), e.g. from
            :func:`hf_datamix.mixture.expansion_matrix`; identity when ``None``.
        target_weights: ``w_j`` per target (default 1).
        domains, full_domains: names of the collapsed coordinates and the full domains (messages,
            mappings and :meth:`Proposal.mixture`); without ``expansion`` they are the same.
        solvers: cvxpy solver names tried in order (default: installed ones of ``DEFAULT_SOLVERS``).
        fallback_candidates: ``X`` or ``(X, Y)`` of observed runs; if every solver fails, the run
            with the lowest weighted mean loss (observed ``Y``, else predicted) that honours the caps.
        samples, seed: random search size and seed, for laws without a convex cvxpy form (and as
            the last resort when solvers fail without usable candidates).
    """
    if not law.is_fitted:
        raise ValueError(f"The {law.name} law is not fitted yet: call law.fit(X, Y) before propose().")
    E, q, cap, w, domains, full_domains = _check_inputs(
        law, prior, kl, caps, expansion, target_weights, domains, full_domains
    )
    m, T = law.m, law.T
    objective = _Objective(law, w, kl, E, q)

    import cvxpy as cp  # imported here: only proposing needs it

    x = cp.Variable(m, nonneg=True)
    terms = law.cvxpy_terms(x)
    errors: dict[str, str] = {}
    fallback_reason = None
    if terms is None:
        x_val = _sample_search(objective, cap, samples, seed)
        solver, status = "random_search", "sampled"
    else:
        expr = (w / T) @ terms
        if kl > 0:
            keep = q > 0  # rows with q = 0 are unreachable (checked above) and add nothing
            expr = expr + kl * cp.sum(cp.rel_entr(E[keep] @ x, q[keep]))
        constraints = [cp.sum(x) == 1]
        capped = np.flatnonzero(cap < 1.0)
        if len(capped):
            constraints.append(x[capped] <= cap[capped])
        solved = _solve(cp.Problem(cp.Minimize(expr), constraints), x, solvers, errors)
        if solved is not None:
            x_val, solver, status = solved
        else:
            failures = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "no solver available"
            x_val, solver, status, how = _fallback(objective, law, cap, w, fallback_candidates, samples, seed)
            fallback_reason = f"every solver failed ({failures}); {how}"
            logger.warning("propose: %s", fallback_reason)
    x_val = np.clip(np.nan_to_num(x_val), 0.0, cap)  # solvers leave -1e-12 at active bounds
    x_val = x_val / x_val.sum()
    return Proposal(
        x=x_val,
        x_full=E @ x_val,
        objective=float(objective(x_val[None])[0]),
        predicted=law.predict(x_val[None])[0],
        solver=solver,
        status=status,
        fallback_reason=fallback_reason,
        domains=list(domains) if domains is not None else None,
        full_domains=list(full_domains) if full_domains is not None else None,
        solver_errors=errors,
    )


def _best_within_caps(X: np.ndarray, mean: np.ndarray, cap: np.ndarray) -> tuple[int | None, int]:
    """The row of ``X`` with the lowest finite ``mean`` among those honouring ``cap`` (None if none does), and how
    many rows honour it."""
    ok = np.flatnonzero((X <= cap + CAP_TOLERANCE).all(axis=1) & np.isfinite(mean))
    return (int(ok[np.argmin(mean[ok])]) if len(ok) else None), len(ok)


def _fallback(objective, law, cap, w, candidates, samples, seed):
    """Best observed run honouring the caps, else the best random capped-simplex point."""
    if candidates is not None:
        X, Y = candidates if isinstance(candidates, tuple) else (candidates, None)
        X = check_mixtures(X, law.m, "fallback_candidates X")
        scores = law.predict(X) if Y is None else np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
        if scores.shape[1] != len(w):
            raise ValueError(f"fallback_candidates Y has {scores.shape[1]} targets but the law has {len(w)}.")
        mean = scores @ w / w.sum()
        best, within = _best_within_caps(X, mean, cap)
        if best is not None:
            source = "predicted" if Y is None else "observed"
            how = (
                f"using fallback candidate row {best} (lowest {source} mean loss {mean[best]:.6g} "
                f"among the {within} of {len(X)} candidates that honour the caps)"
            )
            return X[best], "fallback", "fallback_candidate", how
        how = f"none of the {len(X)} fallback candidates honours the caps; "
    else:
        how = "no fallback candidates given; "
    x_val = _sample_search(objective, cap, samples, seed)
    return (
        x_val,
        "random_search",
        "fallback_sampled",
        how + f"using the best of {samples} random capped-simplex points",
    )


def fit_and_propose(
    X: np.ndarray,
    Y: np.ndarray,
    coordinates: Sequence[str],
    groups: Any,
    full_domains: Sequence[str],
    prior: np.ndarray,
    *,
    law: str = "log_linear",
    law_starts: int = 300,
    kl: float = 0.05,
    caps: np.ndarray | None = None,
    seed: int = 0,
    law_options: Mapping[str, Any] | None = None,
    prior_over_coordinates: bool = False,
    trust_full_spearman: float | None = None,
    targets: Sequence[str] | None = None,
) -> tuple[Any, dict]:
    """The step both ``op_mix`` and ``olmix_reuse`` end with: fit a law on simulated runs, propose, expand.

    ``X`` (runs × coordinates) are the runs' weights over collapsed ``coordinates`` (virtual domains
    named in ``groups`` = ``{virtual: internal ratios}``), ``Y`` (runs × targets) their losses on
    ``targets`` (default: ``full_domains``; a simulator may score other targets).  ``law_starts`` are the log-linear law's random starts, ``law_options`` any other
    settings of the law.  ``prior`` is over ``full_domains``, or over ``coordinates`` with
    ``prior_over_coordinates`` (the KL is then measured there, as in OP-Mix's reference code).
    ``trust_full_spearman`` (None: off) scales the step from the feasible mixture closest to the prior
    to the proposal by the law's cross-validated Spearman (:func:`trust_step`).  Returns the full-domain
    :class:`~hf_datamix.Mixture` and the decision record (candidates, observations, the law's
    predictions and fit report, the proposal, the trust region).
    """
    fitted = get_law(law, **law_settings(law, law_starts, law_options))
    fitted.fit(X, Y, seed=seed)
    report = fitted.fit_report(X, Y, seed=seed)
    E = expansion_matrix(list(coordinates), groups, list(full_domains))
    kl_expansion = None if prior_over_coordinates else E
    proposal = propose(
        fitted,
        prior,
        kl=kl,
        caps=caps,
        expansion=kl_expansion,
        domains=list(coordinates),
        full_domains=list(coordinates) if prior_over_coordinates else list(full_domains),
        fallback_candidates=(X, Y),
        seed=seed,
    )
    if prior_over_coordinates:
        proposal.x_full, proposal.full_domains = E @ proposal.x, list(full_domains)
    trust = None
    if trust_full_spearman is not None:
        step, why = trust_step(report, trust_full_spearman)
        anchor = closest_to_prior(prior, caps, kl_expansion, len(coordinates))
        x = (1 - step) * anchor + step * proposal.x
        trust = {
            "step": step,
            "why": why,
            "full_at_spearman": trust_full_spearman,
            "anchor": (E @ anchor).tolist(),
            "law_proposal": proposal.x_full.tolist(),
            "predicted": fitted.predict(x[None])[0].tolist(),
        }
        proposal.x, proposal.x_full = x, E @ x
    record = _record(
        X,
        Y,
        coordinates,
        groups,
        full_domains,
        targets,
        prior_over_coordinates,
        predicted=fitted.predict(X),
        law=fitted.to_dict(),
        fit=report,
        proposal=proposal.to_dict(),
    )
    if trust is not None:
        record["trust_region"] = trust
    return Mixture.from_array(list(full_domains), proposal.x_full), record


def best_candidate(
    X: np.ndarray,
    Y: np.ndarray,
    coordinates: Sequence[str],
    groups: Any,
    full_domains: Sequence[str],
    prior: np.ndarray,
    *,
    caps: np.ndarray | None = None,
    prior_over_coordinates: bool = False,
    targets: Sequence[str] | None = None,
) -> tuple[Any, dict]:
    """The ``proposal="best_candidate"`` step: the simulated run with the lowest mean loss over the targets
    among those whose weights honour ``caps``, expanded to the domains; no law is fitted.  When no run honours
    the caps, the feasible mixture closest to ``prior`` (:func:`closest_to_prior`), with the reason recorded.
    Arguments as :func:`fit_and_propose`; the record has its keys, with ``law`` and ``fit`` None and
    ``predicted`` the observations (this proposal reads them)."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    E = expansion_matrix(list(coordinates), groups, list(full_domains))
    cap = np.ones(X.shape[1]) if caps is None else np.minimum(np.asarray(caps, dtype=np.float64), 1.0)
    mean = Y.mean(axis=1)
    row, within = _best_within_caps(X, mean, cap)
    if row is not None:
        reason, x, status = None, X[row] / X[row].sum(), "best_candidate"
    else:
        status = "fallback_prior"
        x = closest_to_prior(prior, caps, None if prior_over_coordinates else E, X.shape[1])
        reason = f"none of the {len(X)} candidates honours the caps; the feasible mixture closest to the prior"
        logger.warning("best_candidate: %s", reason)
    proposal = {
        "x": x.tolist(),
        "x_full": (E @ x).tolist(),
        "domains": list(coordinates),
        "full_domains": list(full_domains),
        "row": row,
        "objective": None if row is None else float(mean[row]),
        "predicted": None if row is None else Y[row].tolist(),
        "candidates_within_caps": within,
        "solver": None,
        "status": status,
        "fallback_reason": reason,
    }
    record = _record(
        X,
        Y,
        coordinates,
        groups,
        full_domains,
        targets,
        prior_over_coordinates,
        predicted=Y,
        law=None,
        fit=None,
        proposal=proposal,
    )
    return Mixture.from_array(list(full_domains), E @ x), record


def _record(
    X, Y, coordinates, groups, full_domains, targets, prior_over_coordinates, *, predicted, law, fit, proposal
):
    """The decision record both proposal steps write (:func:`fit_and_propose`, :func:`best_candidate`)."""
    return {
        "collapsed_domains": list(coordinates),
        "internals": {k: dict(v) for k, v in groups.items()},
        "candidates": np.asarray(X).tolist(),
        "observed": np.asarray(Y).tolist(),
        "predicted": np.asarray(predicted).tolist(),
        "targets": list(full_domains if targets is None else targets),
        "law": law,
        "fit": fit,
        "proposal": proposal,
        "prior_space": "coordinates" if prior_over_coordinates else "domains",
    }


def trust_step(report: Mapping[str, Any], full_at: float) -> tuple[float, str]:
    """How far to move from the prior towards the law's proposal, in [0, 1], and why.

    The step is the law's held-out Spearman between predicted and observed mean loss over the
    candidates (``report["spearman_average_loss"]``, from :meth:`MixingLaw.fit_report`) divided by
    ``full_at``, clipped to [0, 1]: a law that cannot rank the candidates it was fitted on is not
    followed.  Without a cross-validated figure (too few candidates) the step is 0.
    """
    spearman = report.get("spearman_average_loss")
    if spearman is None:
        return 0.0, "no cross-validated Spearman (too few candidates for the law): stay at the prior"
    step = float(np.clip(spearman / full_at, 0.0, 1.0))
    return step, f"held-out Spearman {spearman:.3f} / {full_at:g}"


def closest_to_prior(prior: np.ndarray, caps: np.ndarray | None, expansion: np.ndarray | None, m: int) -> np.ndarray:
    """The mixture over ``m`` coordinates nearest the prior in KL(E·x ‖ q) that honours ``caps``.

    It is the prior itself when the prior honours the caps; otherwise the caps bind and the rest is
    spread as the prior spreads it.
    """
    import cvxpy as cp

    E = np.eye(m) if expansion is None else np.asarray(expansion, dtype=np.float64)
    q = np.asarray(prior, dtype=np.float64)
    q = q / q.sum()
    cap = np.ones(m) if caps is None else np.minimum(np.asarray(caps, dtype=np.float64), 1.0)
    x = cp.Variable(m, nonneg=True)
    keep = q > 0
    constraints = [cp.sum(x) == 1, x <= cap]
    if (~keep).any():
        constraints.append(E[~keep] @ x == 0)
    solved = _solve(cp.Problem(cp.Minimize(cp.sum(cp.rel_entr(E[keep] @ x, q[keep]))), constraints), x, None, {})
    if solved is None:  # the caps' projection of the uniform point: feasible, if not the closest
        return _project_capped_simplex(np.full((1, m), 1.0 / m), cap)[0]
    value = np.clip(solved[0], 0.0, cap)
    return value / value.sum()


def law_settings(law: str, law_starts: int, law_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments a law is built with: ``starts`` for the log-linear law, then ``law_options``."""
    return {**({"starts": law_starts} if law == "log_linear" else {}), **dict(law_options or {})}


PRIORS = ("uniform", "natural")
PROPOSALS = ("law", "best_candidate")
PRIOR_SPACES = ("domains", "coordinates")
LAW_SPACES = ("coordinates", "data")


@dataclass
class ProposerConfig:
    """How a decision turns simulated candidates into a mixture: the law, the KL pull and its prior.

    Shared by every strategy that decides through a simulator (their configs subclass it).  The
    repetition caps are not a setting here: k is ``DataMixArguments.max_repetitions``, the one cap of
    the run, for the interleaver and the proposer both.
    """

    law: str = field(
        default="log_linear",
        metadata={
            "help": "Mixing law fitted on the candidates: log_linear, linear, "
            "gaussian_process, or a plugin's (hf_datamix.laws)."
        },
    )
    law_starts: int = field(default=300, metadata={"help": "Random starts of the log-linear law's fit, >= 1."})
    law_options: dict = field(
        default_factory=dict,
        metadata={
            "help": "Other settings of the law, as a JSON object (e.g. '{\"restarts\": 4}' for gaussian_process)."
        },
    )
    kl: float = field(default=0.05, metadata={"help": "Weight of KL(E x || prior) in the proposal, >= 0."})
    prior: str = field(
        default="uniform", metadata={"help": "Prior of the KL term: uniform or natural (token shares)."}
    )
    prior_space: str = field(
        default="domains",
        metadata={
            "help": "Where the KL term is measured: domains (the expanded data mixture) or coordinates (the simulator's "
            "own, as OP-Mix's reference code: half on op_mix's 'old', 50/50 old/new at a continual stage; "
            "then `prior` is not used)."
        },
    )
    law_space: str = field(
        default="coordinates",
        metadata={
            "help": "Where the law is fitted and the mixture proposed: coordinates (the simulator's, as published) or "
            "data (the candidates' data mixtures over the domains, whenever the coordinates do not identify a "
            "mixture, e.g. op_mix's 'old' probe, itself a mixture of the domains)."
        },
    )
    trust_region: bool = field(
        default=False,
        metadata={
            "help": "Move from the feasible mixture closest to the prior towards the proposal only as far as the law's "
            "cross-validated Spearman allows (all the way at trust_full_spearman); recorded in mixtures.json."
        },
    )
    trust_full_spearman: float = field(
        default=0.8,
        metadata={"help": "trust_region: the held-out Spearman at which the proposal is followed fully, in (0, 1]."},
    )
    proposal: str = field(
        default="law",
        metadata={
            "help": "How the mixture is chosen: law (fit the law, minimise it with the KL term: the published "
            "method) or best_candidate (the simulated candidate with the lowest mean loss among those within the "
            "caps, no law: beyond the paper, for simulators that rank well but a law that fits them coarsely)."
        },
    )
    decision_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of a decision: the simulator's draws (probe data, candidates, proxies) and the law fit."
        },
    )

    def proposer_checks(self) -> dict[str, tuple[bool, str]]:
        """Range checks of these settings, ``{setting: (in range, the range)}``, for the owner's message."""
        from .laws import LAWS

        return {
            "law": (self.law in LAWS, f"one of {LAWS.names()}"),
            "law_starts": (self.law_starts >= 1, ">= 1"),
            "kl": (self.kl >= 0, ">= 0"),
            "prior": (self.prior in PRIORS, " or ".join(PRIORS)),
            "law_space": (self.law_space in LAW_SPACES, " or ".join(LAW_SPACES)),
            "prior_space": (
                self.prior_space in PRIOR_SPACES
                and not (self.law_space == "data" and self.prior_space == "coordinates"),
                "domains or coordinates; coordinates needs law_space=coordinates (with law_space=data "
                "the mixture is proposed over the domains)",
            ),
            "trust_full_spearman": (0 < self.trust_full_spearman <= 1, "in (0, 1]"),
            "proposal": (self.proposal in PROPOSALS, " or ".join(PROPOSALS)),
        }

    @staticmethod
    def proposal_settings() -> tuple[str, ...]:
        """The settings that only turn a simulation into a mixture
        (:meth:`~hf_datamix.strategies.composed.ComposedStrategy.propose`): every one of this class but
        ``decision_seed``, which seeds the simulator's draws too."""
        return tuple(name for name in ProposerConfig.__dataclass_fields__ if name != "decision_seed")

    def proposer(self) -> ProposerConfig:
        """These settings as a plain :class:`ProposerConfig`."""
        return ProposerConfig(**{name: getattr(self, name) for name in ProposerConfig.__dataclass_fields__})


def prior_weights(prior: str, context: DecisionContext, domains: Sequence[str], setting: str = "prior") -> np.ndarray:
    """The KL prior over ``domains``: uniform, or natural (proportional to their training tokens); ``setting``
    names the setting that asked for it in the error."""
    if prior == "uniform":
        return Mixture.uniform(domains).to_array(domains)
    counts = {name: context.token_counts.get(name) for name in domains}
    if any(value is None for value in counts.values()):
        raise ValueError(
            f"{setting}=natural needs every domain's token count; set DomainSpec.num_tokens for {counts}."
        )
    return Mixture.proportional(counts).to_array(domains)


def decide(simulation: Simulation, config: ProposerConfig, context: DecisionContext) -> Decision:
    """The decision step: caps over the remaining horizon, prior, law fit, proposal, expansion, record.

    Caps are ``(k·N_j − D_j)/R`` per coordinate (a virtual coordinate: its tightest member), with k
    the run's ``max_repetitions``, ``R`` the tokens left to train and ``D_j`` those already drawn
    (:func:`hf_datamix.horizon.decision_caps`).  With ``law_space="data"`` and coordinates that do not
    identify a mixture (:meth:`Simulation.identifiable`), the law is fitted on the data each candidate
    was simulated on and the mixture proposed over the domains.  The record holds the fit and
    proposal (:func:`fit_and_propose`; with ``proposal="best_candidate"`` the best simulated candidate within the
    caps, :func:`best_candidate`), the space used, the simulation's own record and the seconds by phase.
    """
    domains = list(simulation.domains)
    X, coordinates, groups = simulation.X, list(simulation.coordinates), dict(simulation.groups)
    space = "coordinates"
    if config.law_space == "data" and not simulation.identifiable():
        X, coordinates, groups, space = simulation.data_mixtures(), domains, {}, "data"
        used = X.max(axis=0) > 0  # a domain no candidate gave weight cannot be fitted: left at 0
        X, coordinates = X[:, used], [d for d, u in zip(domains, used) if u]
    if config.prior_space == "coordinates":
        prior = simulation.coordinate_prior()
    else:
        prior = prior_weights(config.prior, context, domains)
    started = time.perf_counter()
    caps, over_coordinates = decision_caps(coordinates, groups, context), config.prior_space == "coordinates"
    inputs = (X, simulation.Y, coordinates, groups, domains, prior)
    common = {"caps": caps, "prior_over_coordinates": over_coordinates, "targets": simulation.targets}
    if config.proposal == "best_candidate":
        mixture, record = best_candidate(*inputs, **common)
    else:
        mixture, record = fit_and_propose(
            *inputs,
            **common,
            law=config.law,
            law_starts=config.law_starts,
            law_options=config.law_options,
            kl=config.kl,
            seed=config.decision_seed,
            trust_full_spearman=config.trust_full_spearman if config.trust_region else None,
        )
    record["law_space"] = space
    details = {**record, **simulation.record}
    # seconds by phase: the simulator's (probes, scoring, ...) and the proposal (the law's fit included)
    details["phase_seconds"] = {
        **simulation.record.get("phase_seconds", {}),
        "proposal": time.perf_counter() - started,
    }
    return Decision(mixture, details)
