"""Mixing laws: regressions from mixture weights to losses, shared by ``op_mix`` and ``olmix_reuse``.

A law is fitted on ``R`` observed runs: ``X`` (R, m) holds each run's mixture weights over ``m``
domains, ``Y`` (R, T) its losses on ``T`` targets (lower is better).  The proposer then minimises
the law's predictions; laws with a convex closed form expose it through :meth:`MixingLaw.cvxpy_terms`.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.stats import spearmanr

from .lbfgs import batched_lbfgs, one_thread

SIMPLEX_TOLERANCE = 1e-6
#: exp() arguments are clipped here while fitting so that wild random starts stay finite (exp(60) ~ 1e26)
#: instead of producing inf/NaN losses.
_MAX_EXPONENT = 60.0


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
        raise ValueError(f"{field} row {neg_rows[0]} has a negative weight ({X[neg_rows[0]].min():.3g}): "
                         "mixture weights must be >= 0.")
    sums = X.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SIMPLEX_TOLERANCE)
    if len(off):
        raise ValueError(f"{field} row {off[0]} sums to {sums[off[0]]:.8g}, not 1: each row must be a mixture "
                         "on the simplex (normalise the weights).")
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
            "law": self.name, "runs": runs, "domains": m, "targets": Y.shape[1], "parameters_per_target": need,
            "rmse": _floats(np.sqrt(np.mean(residual**2, axis=0))),
            "max_abs_residual": _floats(np.max(np.abs(residual), axis=0)),
        }
        k = min(int(folds), runs)
        if runs < 4 * folds or runs - math.ceil(runs / max(k, 1)) < need:
            k = runs  # leave-one-out
        if k < 2 or runs - math.ceil(runs / k) < need:
            report.update(cv=None, note=f"too few runs ({runs}) to cross-validate a law with {need} parameters per target")
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
        return {"name": self.name, "config": self.config(), "domains": self.m, "targets": self.T,
                "params": self._params()}

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


# -- log-linear law -----------------------------------------------------------------------------
def _huber(residual: torch.Tensor, delta: float) -> torch.Tensor:
    size = residual.abs()
    return torch.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta))


def _loglinear_losses(params: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, delta: float) -> torch.Tensor:
    """Mean Huber loss per problem; ``params`` (..., T, m+1) = [c, t], returns (..., T)."""
    c = params[..., 0].clamp(max=_MAX_EXPONENT)
    z = (params[..., 1:] @ X.T).clamp(max=_MAX_EXPONENT)  # (..., T, R)
    prediction = torch.exp(c)[..., None] + torch.exp(z)
    return _huber(prediction - Y.T, delta).mean(dim=-1)


def loglinear_initial_params(X: np.ndarray, Y: np.ndarray, starts: int, seed: int) -> np.ndarray:
    """Random starting points, shape (starts, T, m+1) holding ``[c, t_1..t_m]`` per target.

    Per start and target: the floor ``exp(c)`` is a fraction ``u ~ U(0.05, 0.95)`` of the target's
    smallest observed loss (floored at 1e-6); ``t`` is the least-squares fit of
    ``log(max(y - exp(c), 1e-6))`` on ``X`` (exact for the exponential part given that floor) plus
    Gaussian noise N(0, 0.5²) per coordinate, so starts spread around data-consistent solutions.
    """
    rng = np.random.default_rng(seed)
    m, T = X.shape[1], Y.shape[1]
    floor = np.maximum(Y.min(axis=0), 1e-6)  # (T,)
    fraction = rng.uniform(0.05, 0.95, size=(starts, T))
    c = np.log(fraction * floor)
    excess = np.log(np.maximum(Y.T[None] - np.exp(c)[..., None], 1e-6))  # (S, T, R)
    t = excess @ np.linalg.pinv(X).T + rng.normal(0.0, 0.5, size=(starts, T, m))
    return np.concatenate([c[..., None], t], axis=-1)


def _loglinear_value_grad(params: torch.Tensor, X: torch.Tensor, Y_rows: torch.Tensor, delta: float,
                          W_rows: torch.Tensor | None = None):
    """Mean Huber loss (b,) and its gradient (b, m+1) for b problems; ``Y_rows`` (b, R) their targets.

    ``W_rows`` (b, R) of 0/1 selects each problem's runs (cross-validation folds); all runs if None.
    """
    ec = torch.exp(params[:, 0].clamp(max=_MAX_EXPONENT))
    ez = torch.exp((params[:, 1:] @ X.T).clamp(max=_MAX_EXPONENT))
    residual = ez + ec[:, None] - Y_rows
    slope = residual.clamp(-delta, delta)  # derivative of the Huber loss w.r.t. the residual
    if W_rows is None:
        W_rows = torch.full_like(Y_rows, 1.0 / X.shape[0])
    else:
        W_rows = W_rows / W_rows.sum(dim=1, keepdim=True)
    loss = (W_rows * slope * (residual - 0.5 * slope)).sum(dim=1)
    grad = torch.empty_like(params)
    grad[:, 0] = (W_rows * slope).sum(dim=1) * ec
    grad[:, 1:] = (W_rows * slope * ez) @ X
    return loss, grad


@one_thread()
def fit_loglinear_batched(X: np.ndarray, Y: np.ndarray, starts: int = 300, seed: int = 0,
                          huber_delta: float = 0.02, max_iter: int = 500, screen_iter: int | None = 20,
                          keep: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``exp(c_j) + exp(t_jᵀx)`` for all starts and targets as one batched problem.

    All ``starts x T`` problems (parameters of shape (starts, T, m+1)) are optimised together by
    :func:`batched_lbfgs`.  With ``screen_iter`` set, every start first runs ``screen_iter``
    iterations and only the best ``keep`` fraction per target (at least 3 starts) runs on to
    convergence; ``screen_iter=None`` runs every start to convergence.  Returns
    ``(c (T,), t (T, m), loss (T,))`` from the best start per target (``loss`` = mean Huber loss).
    """
    X, Y = check_mixtures(X), _as_matrix(Y, "Y")
    c, t, loss = _fit_groups(X, Y, np.ones((1, X.shape[0]), dtype=bool), starts, seed, huber_delta, max_iter,
                             screen_iter, keep)
    return c[0], t[0], loss[0]


@one_thread()
def fit_loglinear_folds(X: np.ndarray, Y: np.ndarray, train_masks: np.ndarray, starts: int = 300, seed: int = 0,
                        huber_delta: float = 0.02, max_iter: int = 500, screen_iter: int | None = 20,
                        keep: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the law once per row subset (``train_masks`` (G, R) booleans), all in one batched problem.

    Cross-validation folds are fitted together instead of one refit after another.  Returns
    ``(c (G, T), t (G, T, m), loss (G, T))``.
    """
    return _fit_groups(check_mixtures(X), _as_matrix(Y, "Y"), np.asarray(train_masks, dtype=bool), starts, seed,
                       huber_delta, max_iter, screen_iter, keep)


def _fit_groups(X, Y, masks, starts, seed, huber_delta, max_iter, screen_iter, keep):
    G, T, m = masks.shape[0], Y.shape[1], X.shape[1]
    Xt, YT = torch.from_numpy(X), torch.from_numpy(np.ascontiguousarray(Y.T))
    # Problem (s, g, j) is start s of target j on row subset g; its starts come from its own rows only.
    init = np.stack([loglinear_initial_params(X[mask], Y[mask], starts, seed) for mask in masks], axis=1)
    params = torch.from_numpy(init).reshape(-1, m + 1)  # (starts*G*T, m+1)
    weights = torch.from_numpy(masks.astype(np.float64))
    group = torch.arange(G).repeat_interleave(T).repeat(starts)
    target = torch.arange(T).repeat(G * starts)
    problems = G * T

    def fun(p, ids):
        return _loglinear_value_grad(p, Xt, YT[target[ids]], huber_delta, weights[group[ids]])

    # Why not torch.optim.LBFGS over the summed loss: its single line search and curvature memory
    # serve all problems at once, and problems of very different curvature then converge slowly
    # (measured: 300 starts x 50 targets, 400 iterations, worst target still 3x its optimum).
    kept = max(3, math.ceil(keep * starts))
    if screen_iter and kept < starts:
        params, losses = batched_lbfgs(fun, params, max_iter=screen_iter)
        ranked = torch.nan_to_num(losses.view(starts, problems), nan=math.inf).argsort(dim=0)[:kept]
        chosen = (ranked * problems + torch.arange(problems)).reshape(-1)
        params, group, target, starts = params[chosen], group[chosen], target[chosen], kept
    params, losses = batched_lbfgs(fun, params, max_iter=max_iter)
    best = torch.nan_to_num(losses.view(starts, problems), nan=math.inf).argmin(dim=0)
    rows = best * problems + torch.arange(problems)
    final = params[rows].numpy().reshape(G, T, m + 1)
    return final[..., 0].copy(), final[..., 1:].copy(), losses[rows].numpy().reshape(G, T).copy()


def _torch_lbfgs(params: torch.Tensor, objective, max_iter: int) -> torch.Tensor:
    params = params.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, history_size=10,
                                  tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = objective(params)
        loss.backward()
        return loss

    optimizer.step(closure)
    return params.detach()


@one_thread()  # same threading as the batched fit, for a like-for-like timing
def fit_loglinear_per_start_reference(X: Any, Y: Any, starts: int = 300, seed: int = 0, huber_delta: float = 0.02,
                                      max_iter: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference fitter: one LBFGS per start per target, same starts as :class:`LogLinearLaw`.

    Slow on purpose (a plain loop); tests and the benchmark compare the batched fit against it.
    Returns ``(c (T,), t (T, m), loss (T,))``.
    """
    X, Y = check_mixtures(X), _as_matrix(Y, "Y")
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    init = loglinear_initial_params(X, Y, starts, seed)
    T, m = Y.shape[1], X.shape[1]
    c, t, loss = np.zeros(T), np.zeros((T, m)), np.full(T, np.inf)
    for j in range(T):
        yj = Yt[:, j:j + 1]
        for s in range(starts):
            p = _torch_lbfgs(torch.from_numpy(init[s, j:j + 1]),
                             lambda q, y=yj: _loglinear_losses(q, Xt, y, huber_delta).sum(), max_iter)
            value = float(_loglinear_losses(p, Xt, yj, huber_delta)[0])
            if value < loss[j]:
                loss[j], c[j], t[j] = value, float(p[0, 0]), p[0, 1:].numpy()
    return c, t, loss


class LogLinearLaw(MixingLaw):
    """``L_j(x) = exp(c_j) + exp(t_jᵀx)`` per target (the OP-Mix / Olmix log-linear law).

    Fitted with the Huber loss (``huber_delta``) from ``starts`` random starts (see
    :func:`loglinear_initial_params`), all starts and targets solved together as one batched
    L-BFGS problem (:func:`fit_loglinear_batched`, which documents ``screen_iter`` and ``keep``);
    the best start per target is kept.  Attributes after fitting: ``c`` (T,), ``t`` (T, m), ``loss_`` (T,) mean Huber loss.
    """

    name = "log_linear"

    def __init__(self, starts: int = 300, huber_delta: float = 0.02, max_iter: int = 500,
                 screen_iter: int | None = 20, keep: float = 0.1):
        super().__init__()
        if int(starts) < 1:
            raise ValueError(f"starts={starts}: use at least 1 random start (the papers use 300).")
        if not huber_delta > 0:
            raise ValueError(f"huber_delta={huber_delta}: the Huber threshold must be > 0 (the papers use 0.02).")
        if not 0 < keep <= 1:
            raise ValueError(f"keep={keep}: the fraction of starts kept after screening must be in (0, 1].")
        self.starts, self.huber_delta, self.max_iter = int(starts), float(huber_delta), int(max_iter)
        self.screen_iter, self.keep = (int(screen_iter) if screen_iter else None), float(keep)
        self.c: np.ndarray | None = None
        self.t: np.ndarray | None = None
        self.loss_: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {"starts": self.starts, "huber_delta": self.huber_delta, "max_iter": self.max_iter,
                "screen_iter": self.screen_iter, "keep": self.keep}

    def num_parameters(self, m: int) -> int:
        return m + 1

    def _fit(self, X, Y, seed):
        self.c, self.t, self.loss_ = fit_loglinear_batched(X, Y, self.starts, seed, self.huber_delta, self.max_iter,
                                                           self.screen_iter, self.keep)

    def _predict(self, X):
        return np.exp(self.c)[None, :] + np.exp(X @ self.t.T)

    def _heldout_predictions(self, X, Y, tests, seed):
        # All folds in one batched fit: the same optimum per fold as refitting one by one, far faster.
        masks = np.ones((len(tests), len(X)), dtype=bool)
        for g, test in enumerate(tests):
            masks[g, test] = False
        c, t, _ = fit_loglinear_folds(X, Y, masks, self.starts, seed, self.huber_delta, self.max_iter,
                                      self.screen_iter, self.keep)
        heldout = np.empty_like(Y)
        for g, test in enumerate(tests):
            heldout[test] = np.exp(c[g])[None, :] + np.exp(X[test] @ t[g].T)
        return heldout

    def cvxpy_terms(self, x):
        import cvxpy as cp  # the proposer's dependency; fitting and predicting do not need it

        return cp.exp(self.t @ x)

    def _params(self):
        return {"c": self.c.tolist(), "t": self.t.tolist()}

    def _set_params(self, params):
        self.c = np.asarray(params["c"], dtype=np.float64)
        self.t = np.asarray(params["t"], dtype=np.float64)


class LinearLaw(MixingLaw):
    """``L_j(x) = b_j + a_jᵀx`` per target, by least squares.

    Because mixture weights sum to 1 the intercept is absorbed in ``a`` (minimum-norm solution), so
    the law has ``m`` free parameters per target.  Attributes after fitting: ``b`` (T,), ``a`` (T, m).
    """

    name = "linear"

    def __init__(self):
        super().__init__()
        self.a: np.ndarray | None = None
        self.b: np.ndarray | None = None

    def num_parameters(self, m: int) -> int:
        return m

    def _fit(self, X, Y, seed):
        design = np.hstack([np.ones((X.shape[0], 1)), X])
        coef = np.linalg.lstsq(design, Y, rcond=None)[0]  # (m+1, T)
        self.b, self.a = coef[0].copy(), coef[1:].T.copy()

    def _predict(self, X):
        return self.b[None, :] + X @ self.a.T

    def cvxpy_terms(self, x):
        return self.a @ x

    def _params(self):
        return {"a": self.a.tolist(), "b": self.b.tolist()}

    def _set_params(self, params):
        self.a = np.asarray(params["a"], dtype=np.float64)
        self.b = np.asarray(params["b"], dtype=np.float64)


# -- registry -----------------------------------------------------------------------------------
LAWS: dict[str, type[MixingLaw]] = {}


def register_law(cls: type[MixingLaw]) -> type[MixingLaw]:
    """Add a :class:`MixingLaw` subclass to ``LAWS`` under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, MixingLaw)):
        raise TypeError(f"register_law expects a MixingLaw subclass, got {cls!r}.")
    if cls.name in LAWS and LAWS[cls.name] is not cls:
        raise ValueError(f"A mixing law named {cls.name!r} is already registered ({LAWS[cls.name].__name__}).")
    LAWS[cls.name] = cls
    return cls


for _cls in (LogLinearLaw, LinearLaw):
    register_law(_cls)


def available_laws() -> list[str]:
    """Names accepted by :func:`get_law`."""
    return sorted(LAWS)


def get_law_class(name: str) -> type[MixingLaw]:
    """The law class registered as ``name``; unknown names list the known ones."""
    if name not in LAWS and name == "gaussian_process":
        from . import laws_extra  # noqa: F401  (registers the law; it needs scikit-learn only when built)
    if name in LAWS:
        return LAWS[name]
    hint = difflib.get_close_matches(str(name), list(LAWS), n=1)
    did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ValueError(f"Unknown mixing law {name!r}; known laws: {', '.join(available_laws())}.{did_you_mean}")


def get_law(name: str, **kwargs: Any) -> MixingLaw:
    """A new, unfitted law of the registered type ``name`` built with ``kwargs``."""
    return get_law_class(name)(**kwargs)
