"""Offline Olmix fit: swarm results in, proposed mixture out (``hf-datamix fit`` and ``olmix_reuse``).

Given each swarm run's mixture (``ratios``) and losses (``metrics``, lower is better), fit a mixing
law (any registered one, :mod:`hf_datamix.laws`, plugins included), report its held-out rank correlation, and propose the mixture
minimising the predicted mean loss plus ``kl``·KL to the prior under repetition caps
``x_j <= k·N_j/R`` (:func:`hf_datamix.proposer.propose`).  Every input is checked, with errors
naming the run, column or domain, before anything is fitted.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .laws import get_law
from .mixture import Mixture
from .proposer import _check_caps, propose
from .swarm import RunTable, _number, check_ratios, read_run_table


logger = logging.getLogger(__name__)

TableLike = Any  # a CSV path, a RunTable, a (column_names, array) pair or {run: {column: value}}


def _describe(value: TableLike) -> str | None:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None


def as_run_table(value: TableLike, what: str) -> RunTable:
    """Coerce the accepted table forms to a :class:`~hf_datamix.swarm.RunTable` (errors name ``what``).

    A ``(column_names, array)`` pair gets run ids ``"0"``, ``"1"``, ... by row.
    """
    if isinstance(value, (str, os.PathLike)):
        return read_run_table(value, what)
    if isinstance(value, RunTable):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        columns = [str(c) for c in value[0]]
        try:
            array = np.asarray(value[1], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: the array of the (columns, array) pair is not numeric.") from None
        if array.ndim != 2 or array.shape[1] != len(columns):
            raise ValueError(
                f"{what}: array of shape {array.shape} does not match its {len(columns)} column names "
                "(need one row per run and one column per name)."
            )
        runs = [str(i) for i in range(len(array))]
        for r, j in np.argwhere(~np.isfinite(array)):
            raise ValueError(f"{what}: run {runs[r]!r}, column {columns[j]!r} is {array[r, j]}, not a finite number.")
        return RunTable(runs, columns, array)
    if isinstance(value, Mapping):
        runs = [str(run) for run in value]
        columns = list(dict.fromkeys(str(c) for row in value.values() for c in row))
        array = np.empty((len(runs), len(columns)))
        for r, (run, row) in enumerate(zip(runs, value.values())):
            for j, column in enumerate(columns):
                if column not in row:
                    raise ValueError(f"{what}: run {run!r} has no value for column {column!r}.")
                array[r, j] = _number(row[column], what, run, column)
        return RunTable(runs, columns, array)
    raise TypeError(
        f"{what} must be a CSV path, a (column_names, array) pair or {{run: {{column: value}}}}, "
        f"got {type(value).__name__}."
    )


def _json_mapping(value: Any, what: str, unwrap: str) -> dict[str, float] | None:
    """A ``{name: number >= 0}`` dict from a mapping or a JSON file (optionally nested under ``unwrap``)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        try:
            with open(value, encoding="utf-8") as handle:
                value = json.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} file {os.fspath(value)!r} does not exist.") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{what} file {os.fspath(value)!r} is not valid JSON: {error}.") from None
    if isinstance(value, Mapping) and isinstance(value.get(unwrap), Mapping):
        value = value[unwrap]
    if not isinstance(value, Mapping):  # a file's content, hence ValueError rather than TypeError
        raise ValueError(f"{what} must be a JSON object {{name: number}}, got {type(value).__name__}.")  # noqa: TRY004
    out = {}
    for name, number in value.items():
        try:
            number = float(number)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number >= 0):
            raise ValueError(f"{what}: the value of {name!r} is {value[name]!r}; it must be a finite number >= 0.")
        out[str(name)] = number
    return out


def _check_names(given: Mapping[str, Any], known: Sequence[str], what: str, where: str, need_all: bool) -> None:
    unknown = [name for name in given if name not in known]
    if unknown:
        raise ValueError(f"{what} names {unknown}, which have no column in {where} (columns: {list(known)}).")
    missing = [name for name in known if name not in given]
    if need_all and missing:
        raise ValueError(f"{what} lacks {missing}: give a value for every column of {where}.")


def _match_runs(ratios: RunTable, metrics: RunTable) -> np.ndarray:
    """Metrics values reordered to the ratios' run order; runs must match one to one."""
    only_ratios = [run for run in ratios.runs if run not in set(metrics.runs)]
    only_metrics = [run for run in metrics.runs if run not in set(ratios.runs)]
    if only_ratios or only_metrics:
        raise ValueError(
            f"The runs of ratios and metrics do not match: runs only in ratios {only_ratios[:20]}, "
            f"runs only in metrics {only_metrics[:20]}. Give every run one row in each file."
        )
    index = {run: i for i, run in enumerate(metrics.runs)}
    return metrics.values[[index[run] for run in ratios.runs]]


def fit_mixture(
    ratios: TableLike,
    metrics: TableLike,
    *,
    prior: Any = None,
    kl: float = 0.05,
    tokens: Any = None,
    target_tokens: float | None = None,
    max_repetition: float = 4.0,
    law: str = "log_linear",
    target_weights: Any = None,
    seed: int = 0,
    law_kwargs: Mapping[str, Any] | None = None,
    folds: int = 5,
) -> dict[str, Any]:
    """Fit a mixing law on swarm runs and propose the next mixture.

    Args:
        ratios: each run's weights: a ``ratios.csv`` path (``run`` + one column per domain), a
            ``(domains, array)`` pair or ``{run: {domain: weight}}``; rows must sum to 1 (±1e-3).
        metrics: each run's losses, same forms (``run`` + one column per target, lower is better).
        prior: ``q`` over the domains (mapping, Mixture or JSON path naming every domain); uniform if None.
        kl: weight λ of ``KL(x ‖ q)`` (Olmix: 0.05).
        tokens, target_tokens, max_repetition: with both ``tokens`` (domain -> available tokens
            N_j, mapping or JSON path) and ``target_tokens`` R, caps ``x_j <= max_repetition·N_j/R``.
        law: a registered law name (``hf_datamix.laws.available_laws()``), built with ``law_kwargs``.
        target_weights: ``{target: w}`` (mapping or JSON path; targets not named weigh 1) or one
            weight per metrics column.
        seed: seed of the law fit, the cross-validation split and any random search.
        folds: cross-validation folds for the fit report (leave-one-out for few runs).

    Returns:
        A JSON-serialisable dict: ``weights``, ``predicted`` (target -> loss at the proposal),
        ``predicted_at_prior``, ``fit`` (the law's ``fit_report``), ``law`` (``to_dict``),
        ``proposal`` (``Proposal.to_dict``), ``best_observed`` and ``settings``.
    """
    ratio_table = check_ratios(as_run_table(ratios, "ratios"), "ratios")
    metric_table = as_run_table(metrics, "metrics")
    domains, targets = ratio_table.columns, metric_table.columns
    X, Y = ratio_table.values, _match_runs(ratio_table, metric_table)
    never = [d for d, column in zip(domains, X.T) if not column.any()]
    if never:
        logger.warning("fit: domains %s have weight 0 in every run: the law cannot learn their effect.", never)

    q = _json_mapping(prior, "prior", "weights")
    if q is not None:
        _check_names(q, domains, "prior", "ratios", need_all=True)
    q = Mixture.uniform(domains) if q is None else Mixture(q, domains=domains)
    if not (isinstance(kl, (int, float)) and math.isfinite(kl) and kl >= 0):
        raise ValueError(f"kl={kl!r}: the KL weight must be a finite number >= 0 (Olmix uses 0.05).")

    caps = None
    token_counts = _json_mapping(tokens, "tokens", "tokens")
    if (token_counts is None) != (target_tokens is None):
        raise ValueError(
            "Caps need both tokens (domain -> available tokens) and target_tokens R; "
            f"got only {'tokens' if target_tokens is None else 'target_tokens'}."
        )
    if token_counts is not None:
        missing = [d for d in domains if d not in token_counts]
        if missing:
            raise ValueError(f"tokens lacks domains {missing}: give the available tokens of every ratios column.")
        if not (math.isfinite(float(target_tokens)) and float(target_tokens) > 0):
            raise ValueError(f"target_tokens={target_tokens!r}: R must be a number > 0.")
        if not (math.isfinite(float(max_repetition)) and float(max_repetition) > 0):
            raise ValueError(f"max_repetition={max_repetition!r}: k must be a number > 0 (Olmix uses 4).")
        caps = {d: float(max_repetition) * token_counts[d] / float(target_tokens) for d in domains}
        _check_caps(np.array(list(caps.values())), domains)  # infeasible caps fail now, not after the fit
    zero = [d for d in domains if q[d] == 0 and (caps is None or caps[d] > 0)]
    if zero and kl > 0:
        raise ValueError(
            f"prior gives {zero} weight 0, so KL(mixture || prior) is infinite wherever they get "
            "weight: give them a positive prior, or use kl=0."
        )

    if isinstance(target_weights, (list, tuple, np.ndarray)):  # one weight per metrics column, in order
        if len(target_weights) != len(targets):
            raise ValueError(
                f"target_weights has {len(target_weights)} values but metrics has {len(targets)} "
                f"target columns {targets}."
            )
        target_weights = dict(zip(targets, target_weights))
    weights = _json_mapping(target_weights, "target_weights", "weights") or {}
    _check_names(weights, targets, "target_weights", "metrics", need_all=False)
    w = np.array([weights.get(t, 1.0) for t in targets])
    if not w.any():
        raise ValueError("target_weights are all 0: give at least one target a positive weight.")

    model = get_law(law, **dict(law_kwargs or {}))
    need = model.num_parameters(len(domains))
    if len(X) < need:
        raise ValueError(
            f"{len(X)} runs are too few: the {law} law has {need} parameters per target for "
            f"{len(domains)} domains, so it needs at least {need} runs (Olmix recommends "
            f"3·(m+1) = {3 * (len(domains) + 1)}). Add runs or choose a law with fewer parameters."
        )

    report = model.fit_report(X, Y, folds=folds, seed=seed)  # fits on all runs, then cross-validates
    proposal = propose(
        model, q, kl=float(kl), caps=caps, target_weights=w, domains=domains, fallback_candidates=(X, Y), seed=seed
    )
    best = int(np.argmin(Y @ w / w.sum()))
    return {
        "weights": proposal.mixture().to_dict(),
        "predicted": dict(zip(targets, map(float, proposal.predicted))),
        "predicted_at_prior": dict(zip(targets, map(float, model.predict(q.to_array(domains)[None])[0]))),
        "fit": report,
        "law": model.to_dict(),
        "proposal": proposal.to_dict(),
        "best_observed": {
            "run": ratio_table.runs[best],
            "weights": dict(zip(domains, map(float, X[best]))),
            "losses": dict(zip(targets, map(float, Y[best]))),
        },
        "settings": {
            "ratios": _describe(ratios),
            "metrics": _describe(metrics),
            "prior": q.to_dict(),
            "kl": kl,
            "tokens": token_counts,
            "target_tokens": target_tokens,
            "max_repetition": max_repetition,
            "caps": caps,
            "law": law,
            "law_kwargs": dict(law_kwargs or {}),
            "target_weights": dict(zip(targets, map(float, w))),
            "seed": seed,
            "folds": folds,
            "runs": len(X),
            "domains": list(domains),
            "targets": list(targets),
        },
    }


def run_fit_command(args: Any) -> dict[str, Any]:
    """``hf-datamix fit``: :func:`fit_mixture` on the parsed arguments, result written to ``args.out``."""
    try:
        law_kwargs = json.loads(args.law_options) if args.law_options else None
    except json.JSONDecodeError as error:
        law_kwargs = error
    if law_kwargs is not None and not isinstance(law_kwargs, dict):
        why = f" ({law_kwargs})" if isinstance(law_kwargs, json.JSONDecodeError) else ""
        raise ValueError(
            f"--law-options must be a JSON object, e.g. '{{\"starts\": 100}}' (keys in double quotes), got "
            f"{args.law_options!r}{why}."
        )
    result = fit_mixture(
        args.ratios,
        args.metrics,
        prior=args.prior,
        kl=args.kl,
        tokens=args.tokens,
        target_tokens=args.target_tokens,
        max_repetition=args.max_repetition,
        law=args.law,
        target_weights=args.target_weights,
        seed=args.seed,
        law_kwargs=law_kwargs,
        folds=args.folds,
    )
    rest = {key: value for key, value in result.items() if key != "weights"}
    Mixture(result["weights"]).save(args.out, **rest)  # the shared writer: Mixture.load reads it back
    return result
