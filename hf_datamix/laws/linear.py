"""``linear``: ``L_j(x) = b_j + a_jᵀx`` per target, by least squares."""

from __future__ import annotations

import numpy as np

from .base import MixingLaw


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
