"""The mixing-law interface: regressions from mixture weights to losses, shared by ``op_mix`` and ``olmix_reuse``.

A law is fitted on ``R`` observed runs: ``X`` (R, m) holds each run's mixture weights over ``m``
domains, ``Y`` (R, T) its losses on ``T`` targets (lower is better).  The proposer then minimises
the law's predictions; laws with a convex closed form expose it through :meth:`MixingLaw.cvxpy_terms`.

Laws are found by name in :data:`LAWS` (a :class:`~hf_datamix.registry.Registry`): the built-ins of
this package (one module each) and whatever other packages declare under the entry-point group
``hf_datamix.laws``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, ClassVar

import numpy as np
from scipy.stats import spearmanr

from ..constants import SIMPLEX_TOLERANCE
from ..registry import Registry


def _as_matrix(value: Any, field: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a numeric array, got {type(value).__name__}.") from None
    if array.ndim == 1:
        array = array[:, None] if field == "Y" else array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{field} must be 2-D, got shape {array.shape}.")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        row, col = bad[0]
        raise ValueError(f"{field}[{row}, {col}] is {array[row, col]}: {field} must be finite (no NaN/inf).")
    return array


def check_mixtures(X: Any, m: int | None = None, field: str = "X") -> np.ndarray:
    """``X`` as a float64 (n, m) array whose rows lie on the simplex, else a ValueError naming the row."""
    X = _as_matrix(X, field)
    if m is not None and X.shape[1] != m:
        raise ValueError(f"{field} has {X.shape[1]} columns but the law was fitted on {m} domains.")
    neg_rows = np.flatnonzero(X.min(axis=1) < -SIMPLEX_TOLERANCE)
    if len(neg_rows):
        raise ValueError(
            f"{field} row {neg_rows[0]} has a negative weight ({X[neg_rows[0]].min():.3g}): "
            "mixture weights must be >= 0."
        )
    sums = X.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SIMPLEX_TOLERANCE)
    if len(off):
        raise ValueError(
            f"{field} row {off[0]} sums to {sums[off[0]]:.8g}, not 1: each row must be a mixture "
            "on the simplex (normalise the weights)."
        )
    return X


class MixingLaw:
    """Base class: a per-target regression ``L_j(x)`` from mixture weights ``x`` to a loss.

    Subclasses set ``name``, implement ``_fit``, ``predict``, ``num_parameters``, ``_params`` /
    ``_set_params`` (for serialisation) and, if the law is convex in ``x``, ``cvxpy_terms``.
    """

    name: ClassVar[str] = "base"

    def __init__(self) -> None:
        self.m: int | None = None  # number of domains the law was fitted on
        self.T: int | None = None  # number of targets
        self._fit_key: str | None = None

    # -- interface ------------------------------------------------------------------------------
    def num_parameters(self, m: int) -> int:
        """Free parameters per target for ``m`` domains (also the fewest runs a fit accepts)."""
        raise NotImplementedError

    def _fit(self, X: np.ndarray, Y: np.ndarray, seed: int) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (what ``to_dict`` records and ``clone`` reuses)."""
        return {}

    def cvxpy_terms(self, x: Any) -> Any:
        """A cvxpy vector expression of length T equal to the predictions at ``x`` up to constants.

        ``x`` is a ``cvxpy.Variable(m)``.  Return ``None`` (the default) when the law has no convex
        cvxpy form; the proposer then searches random simplex points instead.
        """
        return None

    # -- shared behaviour -----------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.m is not None

    def clone(self) -> MixingLaw:
        """An unfitted law with the same settings."""
        return type(self)(**self.config())

    def fit(self, X: Any, Y: Any, seed: int = 0) -> MixingLaw:
        """Fit on runs ``X`` (R, m) of mixture weights and losses ``Y`` (R, T); returns ``self``."""
        X = check_mixtures(X)
        Y = _as_matrix(Y, "Y")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} runs (rows) but Y has {Y.shape[0]}: give one row of losses per run.")
        need = self.num_parameters(X.shape[1])
        if X.shape[0] < need:
            raise ValueError(
                f"The {self.name} law has {need} parameters per target for {X.shape[1]} domains, so it needs at "
                f"least {need} runs; {X.shape[0]} were given. Add runs (e.g. a larger swarm or more probe "
                "candidates) or use a law with fewer parameters."
            )
        self._fit(X, Y, seed)
        self.m, self.T = X.shape[1], Y.shape[1]
        self._fit_key = hashlib.sha1(X.tobytes() + Y.tobytes() + str(seed).encode()).hexdigest()
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted losses, shape (n, T), for mixtures ``X`` (n, m) (or one mixture of shape (m,))."""
        if not self.is_fitted:
            raise ValueError(f"The {self.name} law is not fitted yet: call fit(X, Y) first.")
        X = _as_matrix(X, "X")
        if X.shape[1] != self.m:
            raise ValueError(f"X has {X.shape[1]} columns but the law was fitted on {self.m} domains.")
        return self._predict(X)

    def fit_report(self, X: Any, Y: Any, folds: int = 5, seed: int = 0) -> dict[str, Any]:
        """Fit on all runs (unless already fitted on exactly these) and report the fit's quality.

        Held-out quality: Spearman rank correlation between out-of-fold predictions and observed
        losses, per target, their mean, and for the mean loss over targets.  ``folds``-fold
        cross-validation, or leave-one-out when there are fewer than ``4 * folds`` runs or a fold's
        training set would be too small.  In-sample: RMSE and max absolute residual per target.
        NaN/undefined values (e.g. a constant target) are reported as ``None``; the dict is
        JSON-serialisable.
        """
        X = check_mixtures(X)
        Y = _as_matrix(Y, "Y")
        key = hashlib.sha1(X.tobytes() + Y.tobytes() + str(seed).encode()).hexdigest()
        if self._fit_key != key:
            self.fit(X, Y, seed=seed)
        runs, m = X.shape
        need = self.num_parameters(m)
        residual = self.predict(X) - Y
        report: dict[str, Any] = {
            "law": self.name,
            "runs": runs,
            "domains": m,
            "targets": Y.shape[1],
            "parameters_per_target": need,
            "rmse": _floats(np.sqrt(np.mean(residual**2, axis=0))),
            "max_abs_residual": _floats(np.max(np.abs(residual), axis=0)),
        }
        k = min(int(folds), runs)
        if runs < 4 * folds or runs - math.ceil(runs / max(k, 1)) < need:
            k = runs  # leave-one-out
        if k < 2 or runs - math.ceil(runs / k) < need:
            report.update(
                cv=None, note=f"too few runs ({runs}) to cross-validate a law with {need} parameters per target"
            )
            return report
        order = np.random.default_rng(seed).permutation(runs)
        heldout = self._heldout_predictions(X, Y, np.array_split(order, k), seed)
        per_target = [_spearman(heldout[:, j], Y[:, j]) for j in range(Y.shape[1])]
        defined = [s for s in per_target if s is not None]
        report.update(
            cv="leave-one-out" if k == runs else f"{k}-fold",
            spearman=per_target,
            spearman_mean=float(np.mean(defined)) if defined else None,
            spearman_average_loss=_spearman(heldout.mean(axis=1), Y.mean(axis=1)),
            heldout_rmse=_floats(np.sqrt(np.mean((heldout - Y) ** 2, axis=0))),
        )
        return report

    def _heldout_predictions(self, X: np.ndarray, Y: np.ndarray, tests: list[np.ndarray], seed: int) -> np.ndarray:
        """Predictions for each fold's ``test`` runs from a law fitted on the other runs."""
        heldout = np.empty_like(Y)
        for test in tests:
            train = np.setdiff1d(np.arange(len(X)), test)
            heldout[test] = self.clone().fit(X[train], Y[train], seed=seed).predict(X[test])
        return heldout

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (name, settings, fitted parameters) for ``mixtures.json``."""
        if not self.is_fitted:
            raise ValueError(f"The {self.name} law is not fitted yet: nothing to serialise.")
        return {
            "name": self.name,
            "config": self.config(),
            "domains": self.m,
            "targets": self.T,
            "params": self._params(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixingLaw:
        """Rebuild a fitted law written by :meth:`to_dict` (the ``name`` field picks the class)."""
        law_cls = get_law_class(data.get("name", ""))
        if cls is not MixingLaw and not issubclass(law_cls, cls):
            raise ValueError(f"{cls.__name__}.from_dict got a {data['name']!r} law.")
        law = law_cls(**data.get("config", {}))
        law._set_params(data["params"])
        law.m, law.T = int(data["domains"]), int(data["targets"])
        return law


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # rank correlation is undefined for a constant vector
    value = spearmanr(a, b).statistic
    return None if not np.isfinite(value) else float(value)


# -- registry -----------------------------------------------------------------------------------
#: The library's own laws (``setup.cfg`` declares the same under ``hf_datamix.laws``).
BUILTIN_LAWS = {
    "log_linear": "hf_datamix.laws.log_linear:LogLinearLaw",
    "linear": "hf_datamix.laws.linear:LinearLaw",
    "gaussian_process": "hf_datamix.laws.gaussian_process:GaussianProcessLaw",
}
LAWS = Registry("mixing law", MixingLaw, "hf_datamix.laws", BUILTIN_LAWS, base_name="hf_datamix.laws.MixingLaw")


def register_law(cls: type[MixingLaw], overwrite: bool = False) -> type[MixingLaw]:
    """Register a :class:`MixingLaw` subclass in this process under its ``name`` (usable as a decorator).

    Packages declare their laws under the entry-point group ``hf_datamix.laws`` instead.
    """
    if not (isinstance(cls, type) and issubclass(cls, MixingLaw)):
        raise TypeError(f"register_law expects a MixingLaw subclass, got {cls!r}.")
    if cls.name in LAWS and not overwrite and LAWS.reference(cls.name) == f"{cls.__module__}:{cls.__qualname__}":
        return cls  # the built-in or plugin entry of this very class
    return LAWS.register(cls.name, cls, overwrite=overwrite)


def available_laws() -> list[str]:
    """Names accepted by :func:`get_law` (built-ins and plugins)."""
    return LAWS.names()


def get_law_class(name: str) -> type[MixingLaw]:
    """The law class registered as ``name``; unknown names list the known ones."""
    return LAWS.get(name)


def get_law(name: str, **kwargs: Any) -> MixingLaw:
    """A new, unfitted law of the registered type ``name`` built with ``kwargs``."""
    return get_law_class(name)(**kwargs)
