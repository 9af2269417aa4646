"""``gaussian_process``: a Gaussian-process mixing law (needs scikit-learn).

The module imports without scikit-learn; building the law without it raises an ImportError saying
what to install.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import MixingLaw


_INSTALL_HINT = (
    "The gaussian_process mixing law needs scikit-learn: `pip install scikit-learn` (or `pip install hf_datamix[gp]`)."
)


def _sklearn_gp():
    """The sklearn modules the law uses, or an ImportError with the install command."""
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor, kernels
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return GaussianProcessRegressor, kernels, ConvergenceWarning


def _one_blas_thread():
    # The matrices are runs x runs (tens): BLAS threads cost more than they give, and on a busy
    # machine they made a 40-run fit 10-15x slower (measured: 0.4 s with one thread, 5 s without).
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    return threadpool_limits(1)


class GaussianProcessLaw(MixingLaw):
    """One Gaussian-process regression per target: ``amplitude · RBF + white noise`` on the weights.

    Targets are standardised (``normalize_y``); the RBF has one length scale per domain
    (``ard=True``) or a single one; hyperparameters maximise the marginal likelihood from
    ``1 + restarts`` starts.  The law is not convex in ``x``, so :func:`hf_datamix.proposer.propose`
    uses its random search (``cvxpy_terms`` returns None).

    Serialisation: a GP's prediction depends on its training data, so ``to_dict`` stores the runs
    ``X``, ``Y`` and each target's fitted kernel hyperparameters ``theta`` (log scale, sklearn's
    order); ``from_dict`` refits the GPs with those hyperparameters fixed (no optimisation), which
    reproduces the predictions exactly.  The JSON grows with the number of runs (``R·(m+T)`` numbers).
    """

    name = "gaussian_process"

    def __init__(
        self,
        ard: bool = True,
        restarts: int = 2,
        noise: float = 1e-3,
        length_scale_bounds: tuple[float, float] = (1e-2, 1e3),
    ):
        super().__init__()
        _sklearn_gp()  # fail here, before any data is read, when scikit-learn is missing
        if int(restarts) < 0:
            raise ValueError(f"restarts={restarts}: the number of extra optimiser starts must be >= 0.")
        if not noise > 0:
            raise ValueError(f"noise={noise}: the initial white-noise level must be > 0.")
        low, high = (float(v) for v in length_scale_bounds)
        if not 0 < low < high:
            raise ValueError(f"length_scale_bounds={length_scale_bounds}: need 0 < low < high.")
        self.ard, self.restarts, self.noise = bool(ard), int(restarts), float(noise)
        self.length_scale_bounds = (low, high)
        self.models: list[Any] | None = None
        self._X: np.ndarray | None = None
        self._Y: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {
            "ard": self.ard,
            "restarts": self.restarts,
            "noise": self.noise,
            "length_scale_bounds": list(self.length_scale_bounds),
        }

    def num_parameters(self, m: int) -> int:
        # Kernel hyperparameters: length scale(s), amplitude and noise level.
        return (m if self.ard else 1) + 2

    def _kernel(self, m: int):
        _, kernels, _ = _sklearn_gp()
        length = np.full(m, 0.5) if self.ard else 0.5
        return kernels.ConstantKernel(1.0, (1e-3, 1e5)) * kernels.RBF(
            length, self.length_scale_bounds
        ) + kernels.WhiteKernel(self.noise, (1e-10, 1.0))

    def _regressor(self, kernel, seed: int, optimise: bool):
        GaussianProcessRegressor, _, _ = _sklearn_gp()
        return GaussianProcessRegressor(
            kernel=kernel,
            normalize_y=True,
            random_state=seed,
            n_restarts_optimizer=self.restarts if optimise else 0,
            optimizer="fmin_l_bfgs_b" if optimise else None,
        )

    def _fit(self, X, Y, seed):
        _, _, ConvergenceWarning = _sklearn_gp()
        models = []
        with warnings.catch_warnings(), _one_blas_thread():
            # On nearly noise-free losses the noise level sits at its lower bound and sklearn warns
            # that it converged to a bound; that is the expected optimum, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            for j in range(Y.shape[1]):
                models.append(self._regressor(self._kernel(X.shape[1]), seed, True).fit(X, Y[:, j]))
        self.models, self._X, self._Y = models, X.copy(), Y.copy()

    def _predict(self, X):
        with _one_blas_thread():
            return np.column_stack([model.predict(X) for model in self.models])

    def predict_std(self, X: Any) -> np.ndarray:
        """The GPs' predictive standard deviations, shape (n, T), at mixtures ``X`` (n, m)."""
        self.predict(X)  # validates X and that the law is fitted
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        with _one_blas_thread():
            return np.column_stack([model.predict(X, return_std=True)[1] for model in self.models])

    def cvxpy_terms(self, x):
        return None  # not convex in x: the proposer searches random capped-simplex points

    def _params(self) -> dict[str, Any]:
        return {
            "X": self._X.tolist(),
            "Y": self._Y.tolist(),
            "theta": [model.kernel_.theta.tolist() for model in self.models],
            "kernels": [str(model.kernel_) for model in self.models],
        }  # for people reading the JSON

    def _set_params(self, params: dict[str, Any]) -> None:
        try:
            X = np.asarray(params["X"], dtype=np.float64)
            Y = np.asarray(params["Y"], dtype=np.float64)
            thetas = [np.asarray(theta, dtype=np.float64) for theta in params["theta"]]
        except KeyError as missing:
            raise ValueError(
                f"gaussian_process law params lack {missing}: they need 'X', 'Y' and 'theta' (as written by to_dict)."
            ) from None
        if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y) or len(thetas) != Y.shape[1]:
            raise ValueError(
                f"gaussian_process law params are inconsistent: X {X.shape}, Y {Y.shape}, "
                f"{len(thetas)} kernels (need one row of Y per row of X and one kernel per target)."
            )
        base = self._kernel(X.shape[1])
        wrong = [len(theta) for theta in thetas if len(theta) != base.n_dims]
        if wrong:
            raise ValueError(
                f"gaussian_process law params: a theta has {wrong[0]} entries but the kernel for "
                f"{X.shape[1]} domains (ard={self.ard}) has {base.n_dims} hyperparameters."
            )
        with _one_blas_thread():
            self.models = [
                self._regressor(base.clone_with_theta(theta), 0, False).fit(X, Y[:, j])
                for j, theta in enumerate(thetas)
            ]
        self._X, self._Y = X, Y
