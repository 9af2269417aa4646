"""Swarm generation (Olmix): the mixtures a swarm of proxy runs is trained on, and their CSV files.

Samples come from a Dirichlet centred on a prior (usually the natural, token-share mixture) with a
concentration drawn per sample, optionally hierarchical over ``group:topic`` names, sparsified,
checked against repetition caps and de-duplicated.  The CSV helpers read and write the
``run,<domain>,...`` tables that ``hf-datamix fit`` consumes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .constants import CAP_TOLERANCE
from .mixture import Mixture, check_domain_name
from .proposer import _check_caps


logger = logging.getLogger(__name__)

#: Olmix draws each sample's concentration from 15 log-spaced values in [0.1, 5].
DEFAULT_CONCENTRATIONS = tuple(float(c) for c in np.geomspace(0.1, 5.0, 15))
DEDUP_DECIMALS = 4
RUN_COLUMN = "run"


def default_swarm_size(m: int, initial: bool = False) -> int:
    """Olmix's swarm size for ``m`` domains: ``3·(m+1)`` (the fewest runs it recommends; its updates),
    or ``5·m`` for a first swarm over a whole domain set (its case study: 128 runs for 24 domains)."""
    return 5 * int(m) if initial else 3 * (int(m) + 1)


def _group_of(name: str) -> str:
    # Same rule as DomainSpec.group: the prefix before the first ':' (the name itself if none).
    return name.split(":", 1)[0]


def _check_domains(domains: Sequence[str]) -> list[str]:
    names = [check_domain_name(name, "swarm domain") for name in domains]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"sample_swarm: domains {duplicates} are listed more than once.")
    if len(names) < 2:
        raise ValueError(f"sample_swarm needs at least 2 domains to mix, got {names}.")
    return names


def _prior_vector(prior: Mixture | Mapping[str, float] | None, names: list[str]) -> np.ndarray:
    if prior is None:
        return np.full(len(names), 1.0 / len(names))
    unknown = sorted(set(prior) - set(names))
    if unknown:
        raise ValueError(f"sample_swarm: prior names unknown domains {unknown}; the swarm's domains are {names}.")
    q = Mixture(dict(prior), domains=names).to_array(names)
    zero = [name for name, value in zip(names, q) if value <= 0]
    if zero:
        logger.warning("sample_swarm: domains %s have prior weight 0 and get weight 0 in every sample.", zero)
    return q


def _dirichlet_rows(rng: np.random.Generator, centre: np.ndarray, conc: np.ndarray) -> np.ndarray:
    """One Dirichlet(c_i · centre) row per concentration (Olmix's strength · prior); zero-centre entries stay 0."""
    n_rows, live = len(conc), centre > 0
    out = np.zeros((n_rows, len(centre)))
    k = int(live.sum())
    if k == 1:
        out[:, live] = 1.0
        return out
    # Gamma draws normalised by their sum are Dirichlet; with tiny shapes every draw can underflow
    # to 0, such rows are marked NaN and rejected by the caller.
    shapes = conc[:, None] * centre[live][None, :]
    draws = rng.standard_gamma(shapes)
    totals = draws.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, live] = np.where(totals > 0, draws / totals, np.nan)
    return out


def _draw(rng, q, conc, groups, min_weight):
    """A batch of candidate mixtures (rows), before the cap and de-duplication checks."""
    if groups is None:
        X = _dirichlet_rows(rng, q, conc)
    else:
        shares = np.array([q[idx].sum() for idx in groups])
        top = _dirichlet_rows(rng, shares / shares.sum(), conc)
        X = np.zeros((len(conc), len(q)))
        for g, idx in enumerate(groups):
            if shares[g] > 0:
                X[:, idx] = top[:, g : g + 1] * _dirichlet_rows(rng, q[idx] / shares[g], conc)
    largest = np.argmax(np.nan_to_num(X, nan=-1.0), axis=1)
    X[X < min_weight] = 0.0  # sparsify (NaN rows stay NaN and are rejected)
    empty = X.sum(axis=1) <= 0
    # Every weight under min_weight (possible only for m > 1/min_weight): keep the largest one.
    X[empty, largest[empty]] = 1.0
    return X / X.sum(axis=1, keepdims=True)


def sample_swarm(
    domains: Sequence[str],
    prior: Mixture | Mapping[str, float] | None = None,
    size: int | None = None,
    *,
    concentrations: Sequence[float] | None = None,
    min_weight: float = 0.002,
    caps: Mapping[str, float] | None = None,
    hierarchical: bool = False,
    seed: int = 0,
    max_tries: int = 100_000,
) -> list[Mixture]:
    """Sample ``size`` distinct swarm mixtures over ``domains`` (Olmix's swarm).

    Each sample draws a strength ``c`` uniformly from ``concentrations`` (default: Olmix's 15
    log-spaced values in [0.1, 5]) and then ``x ~ Dirichlet(c · q)`` for the prior ``q`` (Olmix's
    swarm distribution), so the mean is ``q``; with a uniform prior over ``m`` domains ``c = m`` is
    ``Dirichlet(1, ..., 1)``.  Small ``c`` gives sparse, extreme mixtures, large ``c`` mixtures
    closer to ``q``.

    Args:
        domains: the domain names; every returned Mixture has exactly these (zero weights kept).
        prior: ``q`` (e.g. ``Mixture.proportional(token_counts)``), normalised; uniform if None.
            A domain with prior 0 (or missing from a mapping) gets weight 0 in every sample.
        size: number of mixtures, default ``3·(m+1)``.
        concentrations: the values ``c`` is drawn from (all > 0).
        min_weight: weights below it are set to 0 and the rest renormalised, so no weight lies in
            ``(0, min_weight)``.
        caps: ``{domain: max weight}`` (e.g. ``k·N_j/R``); samples over a cap are redrawn.
        hierarchical: names ``group:topic`` share a group (a name without ``:`` is its own group);
            group weights are drawn first from ``Dirichlet(c · q_group)`` (``q_group`` the groups'
            prior shares), then each group's internal weights from ``Dirichlet(c · q_within)``, with
            the same ``c``; the weight is their product.
        seed: the same seed and arguments give the same swarm.
        max_tries: the most candidates drawn in total (rejected and duplicate ones included).

    Raises:
        hf_datamix.proposer.InfeasibleCapsError: the caps sum to less than 1.
        RuntimeError: ``max_tries`` candidates did not give ``size`` distinct samples honouring the
            caps; the message names the caps that rejected most samples.
    """
    names = _check_domains(domains)
    m = len(names)
    size = default_swarm_size(m) if size is None else int(size)
    if size < 1:
        raise ValueError(f"sample_swarm: size={size}; ask for at least 1 mixture.")
    conc = np.asarray(DEFAULT_CONCENTRATIONS if concentrations is None else concentrations, dtype=np.float64)
    if conc.ndim != 1 or conc.size == 0 or not (np.isfinite(conc).all() and (conc > 0).all()):
        raise ValueError(f"sample_swarm: concentrations {conc.tolist()} must be a non-empty list of numbers > 0.")
    if not 0 <= min_weight < 1:
        raise ValueError(f"sample_swarm: min_weight={min_weight} must be in [0, 1) (Olmix uses 0.002).")
    q = _prior_vector(prior, names)
    cap = np.ones(m)
    if caps is not None:
        unknown = sorted(set(caps) - set(names))
        if unknown:
            raise ValueError(f"sample_swarm: caps name unknown domains {unknown}; the swarm's domains are {names}.")
        for name, value in caps.items():
            value = float(value)
            if math.isnan(value) or value < 0:
                raise ValueError(f"sample_swarm: cap of {name!r} is {value}; caps must be numbers >= 0.")
            cap[names.index(name)] = min(value, 1.0)
        live = q > 0  # a zero-prior domain never takes weight, so its cap cannot help
        _check_caps(cap[live], [name for name, keep in zip(names, live) if keep])
    groups = None
    if hierarchical:
        order = list(dict.fromkeys(_group_of(name) for name in names))
        groups = [np.array([i for i, name in enumerate(names) if _group_of(name) == g]) for g in order]

    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    seen: set[tuple[float, ...]] = set()
    violations = np.zeros(m, dtype=np.int64)
    tries = duplicates = 0
    while len(kept) < size and tries < max_tries:
        batch = min(max(64, 2 * (size - len(kept))), max_tries - tries)
        tries += batch
        X = _draw(rng, q, rng.choice(conc, size=batch), groups, min_weight)
        for row in X:
            if not np.isfinite(row).all():
                continue
            over = row > cap + CAP_TOLERANCE
            if over.any():
                violations += over
                continue
            key = tuple(np.round(row, DEDUP_DECIMALS).tolist())
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            kept.append(row)
            if len(kept) == size:
                break
    if len(kept) < size:
        raise RuntimeError(_shortfall_message(names, cap, violations, duplicates, tries, len(kept), size))
    return [Mixture.from_array(names, row) for row in kept]


def _shortfall_message(names, cap, violations, duplicates, tries, got, size) -> str:
    text = f"sample_swarm: only {got} of {size} distinct mixtures after {tries} tries (max_tries)."
    if violations.any():
        worst = np.argsort(-violations)[:5]
        listing = ", ".join(
            f"{names[i]} (cap {cap[i]:.4g}, broken {violations[i]} times)" for i in worst if violations[i]
        )
        text += (
            f" Caps that rejected samples (too tight for this prior): {listing}. Raise those caps (more tokens N_j, fewer "
            "target tokens R or a larger max repetition k), move the prior below them, or raise max_tries."
        )
    if duplicates:
        text += (
            f" {duplicates} samples were duplicates (rounded to {DEDUP_DECIMALS} decimals): with few "
            "domains or a large min_weight there are few distinct mixtures; ask for a smaller size."
        )
    return text


# -- CSV I/O ------------------------------------------------------------------------------------
class RunTable(NamedTuple):
    """A ``run,<col>,...`` table: run ids, column names and the (runs, columns) float values."""

    runs: list[str]
    columns: list[str]
    values: np.ndarray


def swarm_to_csv(
    mixtures: Sequence[Mapping[str, float]], path: str | os.PathLike, runs: Sequence[str] | None = None
) -> None:
    """Write mixtures as ``ratios.csv``: a ``run`` column (default ``run0000``, ...) plus one per domain."""
    if not mixtures:
        raise ValueError("swarm_to_csv: no mixtures to write.")
    names = list(mixtures[0])
    for i, mixture in enumerate(mixtures):
        if set(mixture) != set(names):
            raise ValueError(
                f"swarm_to_csv: mixture {i} has domains {sorted(mixture)}, mixture 0 has {sorted(names)}; "
                "every mixture must name the same domains (zero weights included)."
            )
    runs = [f"run{i:04d}" for i in range(len(mixtures))] if runs is None else [str(r) for r in runs]
    if len(runs) != len(mixtures):
        raise ValueError(f"swarm_to_csv: {len(runs)} run ids for {len(mixtures)} mixtures.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([RUN_COLUMN, *names])
        for run, mixture in zip(runs, mixtures):
            writer.writerow([run, *(repr(float(mixture[name])) for name in names)])  # repr: exact round trip


def read_run_table(path: str | os.PathLike, what: str = "table") -> RunTable:
    """Read a ``run,<col>,...`` CSV; errors name the file (as ``what``), the run and the column."""
    label = f"{what} file {os.fspath(path)!r}"
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise FileNotFoundError(f"{label} does not exist.") from None
    if not rows:
        raise ValueError(f"{label} is empty: it needs a header 'run,<column>,...' and one row per run.")
    header = [cell.strip() for cell in rows[0]]
    if RUN_COLUMN not in header:
        raise ValueError(
            f"{label} has no {RUN_COLUMN!r} column (header: {header}); the first row must name a "
            f"{RUN_COLUMN!r} column plus one column per domain or target."
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated or "" in header:
        raise ValueError(
            f"{label}: columns {duplicated or ['(empty name)']} appear twice or are unnamed; "
            "give every column one distinct name."
        )
    run_at = header.index(RUN_COLUMN)
    columns = [c for c in header if c != RUN_COLUMN]
    if not columns:
        raise ValueError(f"{label} has only a {RUN_COLUMN!r} column: add one column per domain or target.")
    if len(rows) < 2:
        raise ValueError(f"{label} has a header but no runs.")
    runs: list[str] = []
    values = np.empty((len(rows) - 1, len(columns)))
    for r, row in enumerate(rows[1:]):
        cells = [cell.strip() for cell in row]
        run = cells[run_at] if run_at < len(cells) else ""
        where = f"run {run!r}" if run else f"line {r + 2}"
        if not run:
            raise ValueError(f"{label}: line {r + 2} has an empty {RUN_COLUMN!r} cell; give every run an id.")
        if len(cells) != len(header):
            raise ValueError(f"{label}: {where} has {len(cells)} cells but the header has {len(header)} columns.")
        if run in runs:
            raise ValueError(f"{label}: run {run!r} appears twice; run ids must be unique.")
        runs.append(run)
        for j, column in enumerate(columns):
            values[r, j] = _number(cells[header.index(column)], label, run, column)
    return RunTable(runs, columns, values)


def _number(cell: Any, label: str, run: str, column: str) -> float:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value):
        shown = "empty" if cell in ("", None) else repr(cell)
        raise ValueError(f"{label}: run {run!r}, column {column!r} is {shown}, not a finite number.")
    return value


def check_ratios(table: RunTable, what: str = "ratios", tolerance: float = 1e-3) -> RunTable:
    """Check that every run's weights are >= 0 and sum to 1 within ``tolerance``; returns ``table``
    with the rows renormalised exactly (errors name the run, column or sum)."""
    for name in table.columns:
        check_domain_name(name, f"{what} column")
    for run, row in zip(table.runs, table.values):
        negative = np.flatnonzero(row < 0)
        if len(negative):
            column = table.columns[negative[0]]
            raise ValueError(f"{what}: run {run!r}, column {column!r} is {row[negative[0]]}: weights must be >= 0.")
        total = float(row.sum())
        if abs(total - 1.0) > tolerance:
            raise ValueError(
                f"{what}: the weights of run {run!r} sum to {total:.6g}, not 1 (tolerance {tolerance}); "
                "each row must be that run's mixture over the domain columns."
            )
    return RunTable(list(table.runs), list(table.columns), table.values / table.values.sum(axis=1, keepdims=True))


def read_ratios_csv(path: str | os.PathLike) -> RunTable:
    """Read and check a ``ratios.csv`` (``run`` + one weight column per domain)."""
    return check_ratios(read_run_table(path, "ratios"), f"ratios file {os.fspath(path)!r}")
