"""``log_linear``: ``L_j(x) = exp(c_j) + exp(t_jᵀx)`` per target (the OP-Mix / Olmix law), fitted batched."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import numpy as np
import torch

from ..lbfgs import FIT_DEVICES, batched_lbfgs, fit_device, fit_threads, one_thread
from .base import MixingLaw, _as_matrix, check_mixtures


logger = logging.getLogger(__name__)


#: exp() arguments are clipped here while fitting so that wild random starts stay finite (exp(60) ~ 1e26)
#: instead of producing inf/NaN losses.
_MAX_EXPONENT = 60.0


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


def _loglinear_value_grad(
    params: torch.Tensor, X: torch.Tensor, Y_rows: torch.Tensor, delta: float, W_rows: torch.Tensor | None = None
):
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


def fit_loglinear_batched(
    X: np.ndarray,
    Y: np.ndarray,
    starts: int = 300,
    seed: int = 0,
    huber_delta: float = 0.02,
    max_iter: int = 500,
    screen_iter: int | None = 20,
    keep: float = 0.1,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``exp(c_j) + exp(t_jᵀx)`` for all starts and targets as one batched problem.

    All ``starts x T`` problems (parameters of shape (starts, T, m+1)) are optimised together by
    :func:`batched_lbfgs`.  With ``screen_iter`` set, every start first runs ``screen_iter``
    iterations and only the best ``keep`` fraction per target (at least 3 starts) runs on to
    convergence; ``screen_iter=None`` runs every start to convergence.  ``device``: see
    :func:`~hf_datamix.lbfgs.fit_device` (a large fit goes to the GPU when there is one).  Returns
    ``(c (T,), t (T, m), loss (T,))`` from the best start per target (``loss`` = mean Huber loss).
    """
    X, Y = check_mixtures(X), _as_matrix(Y, "Y")
    c, t, loss = _fit_groups(
        X, Y, np.ones((1, X.shape[0]), dtype=bool), starts, seed, huber_delta, max_iter, screen_iter, keep, device
    )
    return c[0], t[0], loss[0]


def fit_loglinear_folds(
    X: np.ndarray,
    Y: np.ndarray,
    train_masks: np.ndarray,
    starts: int = 300,
    seed: int = 0,
    huber_delta: float = 0.02,
    max_iter: int = 500,
    screen_iter: int | None = 20,
    keep: float = 0.1,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the law once per row subset (``train_masks`` (G, R) booleans), all in one batched problem.

    Cross-validation folds are fitted together instead of one refit after another.  Returns
    ``(c (G, T), t (G, T, m), loss (G, T))``.
    """
    return _fit_groups(
        check_mixtures(X),
        _as_matrix(Y, "Y"),
        np.asarray(train_masks, dtype=bool),
        starts,
        seed,
        huber_delta,
        max_iter,
        screen_iter,
        keep,
        device,
    )


def _fit_groups(X, Y, masks, starts, seed, huber_delta, max_iter, screen_iter, keep, device="auto"):
    elements = starts * masks.shape[0] * Y.shape[1] * X.shape[0]
    on = fit_device(elements, device)
    if on.type != "cpu":
        try:
            return _fit_groups_on(on, elements, X, Y, masks, starts, seed, huber_delta, max_iter, screen_iter, keep)
        except torch.cuda.OutOfMemoryError:
            # The GPU also holds the model being trained: a decision must not die for want of memory there.
            torch.cuda.empty_cache()
            logger.warning(
                "The law fit (%d elements) ran out of GPU memory on %s: fitting it on the CPU.", elements, on
            )
            on = torch.device("cpu")
    return _fit_groups_on(on, elements, X, Y, masks, starts, seed, huber_delta, max_iter, screen_iter, keep)


def _fit_groups_on(on, elements, X, Y, masks, starts, seed, huber_delta, max_iter, screen_iter, keep):
    # on the CPU: one thread for the usual small fit, the process's cores for a large one (64 domains, 5-fold CV)
    with fit_threads(elements) if on.type == "cpu" else contextlib.nullcontext():
        G, T, m = masks.shape[0], Y.shape[1], X.shape[1]
        Xt, YT = torch.from_numpy(X).to(on), torch.from_numpy(np.ascontiguousarray(Y.T)).to(on)
        # Problem (s, g, j) is start s of target j on row subset g; its starts come from its own rows only.
        init = np.stack([loglinear_initial_params(X[mask], Y[mask], starts, seed) for mask in masks], axis=1)
        params = torch.from_numpy(init).reshape(-1, m + 1).to(on)  # (starts*G*T, m+1)
        weights = torch.from_numpy(masks.astype(np.float64)).to(on)
        group = torch.arange(G, device=on).repeat_interleave(T).repeat(starts)
        target = torch.arange(T, device=on).repeat(G * starts)
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
            chosen = (ranked * problems + torch.arange(problems, device=on)).reshape(-1)
            params, group, target, starts = params[chosen], group[chosen], target[chosen], kept
        params, losses = batched_lbfgs(fun, params, max_iter=max_iter)
        best = torch.nan_to_num(losses.view(starts, problems), nan=math.inf).argmin(dim=0)
        rows = best * problems + torch.arange(problems, device=on)
        final = params[rows].cpu().numpy().reshape(G, T, m + 1)
        return final[..., 0].copy(), final[..., 1:].copy(), losses[rows].cpu().numpy().reshape(G, T).copy()


def _torch_lbfgs(params: torch.Tensor, objective, max_iter: int) -> torch.Tensor:
    params = params.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [params],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        history_size=10,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = objective(params)
        loss.backward()
        return loss

    optimizer.step(closure)
    return params.detach()


@one_thread()  # the batched fit's threading at the laws benchmark's sizes, for a like-for-like timing
def fit_loglinear_per_start_reference(
    X: Any, Y: Any, starts: int = 300, seed: int = 0, huber_delta: float = 0.02, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        yj = Yt[:, j : j + 1]
        for s in range(starts):
            p = _torch_lbfgs(
                torch.from_numpy(init[s, j : j + 1]),
                lambda q, y=yj: _loglinear_losses(q, Xt, y, huber_delta).sum(),
                max_iter,
            )
            value = float(_loglinear_losses(p, Xt, yj, huber_delta)[0])
            if value < loss[j]:
                loss[j], c[j], t[j] = value, float(p[0, 0]), p[0, 1:].numpy()
    return c, t, loss


class LogLinearLaw(MixingLaw):
    """``L_j(x) = exp(c_j) + exp(t_jᵀx)`` per target (the OP-Mix / Olmix log-linear law).

    Fitted with the Huber loss (``huber_delta``) from ``starts`` random starts (see
    :func:`loglinear_initial_params`), all starts and targets solved together as one batched
    L-BFGS problem (:func:`fit_loglinear_batched`, which documents ``screen_iter`` and ``keep``);
    the best start per target is kept.  ``device`` (``auto``, ``cpu``, ``cuda``): where the fit runs;
    ``auto`` sends only a large fit (e.g. 64 domains) to this process's GPU (:func:`~hf_datamix.lbfgs.fit_device`).
    Attributes after fitting: ``c`` (T,), ``t`` (T, m), ``loss_`` (T,) mean Huber loss.
    """

    name = "log_linear"

    def __init__(
        self,
        starts: int = 300,
        huber_delta: float = 0.02,
        max_iter: int = 500,
        screen_iter: int | None = 20,
        keep: float = 0.1,
        device: str = "auto",
    ):
        super().__init__()
        if int(starts) < 1:
            raise ValueError(f"starts={starts}: use at least 1 random start (the papers use 300).")
        if not huber_delta > 0:
            raise ValueError(f"huber_delta={huber_delta}: the Huber threshold must be > 0 (the papers use 0.02).")
        if not 0 < keep <= 1:
            raise ValueError(f"keep={keep}: the fraction of starts kept after screening must be in (0, 1].")
        if device not in FIT_DEVICES:
            raise ValueError(
                f"device={device!r}: fit the law on one of {FIT_DEVICES} ('auto': a large fit on the GPU)."
            )
        self.device = device
        self.starts, self.huber_delta, self.max_iter = int(starts), float(huber_delta), int(max_iter)
        self.screen_iter, self.keep = (int(screen_iter) if screen_iter else None), float(keep)
        self.c: np.ndarray | None = None
        self.t: np.ndarray | None = None
        self.loss_: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {
            "starts": self.starts,
            "huber_delta": self.huber_delta,
            "max_iter": self.max_iter,
            "screen_iter": self.screen_iter,
            "keep": self.keep,
            "device": self.device,
        }

    def num_parameters(self, m: int) -> int:
        return m + 1

    def _fit(self, X, Y, seed):
        self.c, self.t, self.loss_ = fit_loglinear_batched(
            X, Y, self.starts, seed, self.huber_delta, self.max_iter, self.screen_iter, self.keep, self.device
        )

    def _predict(self, X):
        return np.exp(self.c)[None, :] + np.exp(X @ self.t.T)

    def _heldout_predictions(self, X, Y, tests, seed):
        # All folds in one batched fit: the same optimum per fold as refitting one by one, far faster.
        masks = np.ones((len(tests), len(X)), dtype=bool)
        for g, test in enumerate(tests):
            masks[g, test] = False
        c, t, _ = fit_loglinear_folds(
            X, Y, masks, self.starts, seed, self.huber_delta, self.max_iter, self.screen_iter, self.keep, self.device
        )
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
