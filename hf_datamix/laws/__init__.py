"""Mixing laws: regressions from mixture weights to losses (one module per law).

* :mod:`~hf_datamix.laws.base`: the :class:`MixingLaw` interface and the :data:`LAWS` registry;
* :mod:`~hf_datamix.laws.log_linear`: ``exp(c) + exp(tᵀx)`` (OP-Mix, Olmix), fitted batched;
* :mod:`~hf_datamix.laws.linear`: least squares;
* :mod:`~hf_datamix.laws.gaussian_process`: a Gaussian process (scikit-learn), loaded when asked for.

Another package adds a law by declaring its class under the entry-point group ``hf_datamix.laws``.
"""

from ..lbfgs import batched_lbfgs
from .base import (
    BUILTIN_LAWS,
    LAWS,
    MixingLaw,
    available_laws,
    check_mixtures,
    get_law,
    get_law_class,
    register_law,
)
from .linear import LinearLaw
from .log_linear import (
    LogLinearLaw,
    _loglinear_losses,
    _loglinear_value_grad,
    fit_loglinear_batched,
    fit_loglinear_folds,
    fit_loglinear_per_start_reference,
    loglinear_initial_params,
)


__all__ = [
    "BUILTIN_LAWS",
    "LAWS",
    "LinearLaw",
    "LogLinearLaw",
    "MixingLaw",
    "available_laws",
    "batched_lbfgs",
    "check_mixtures",
    "fit_loglinear_batched",
    "fit_loglinear_folds",
    "fit_loglinear_per_start_reference",
    "get_law",
    "get_law_class",
    "loglinear_initial_params",
    "register_law",
    "_loglinear_losses",
    "_loglinear_value_grad",
]
