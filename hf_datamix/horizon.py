"""Repetition caps applied when a mixture is planned, over the horizon it will be trained for.

A domain may give at most ``k`` epochs of its blocks (``max_repetitions``).  Trained at a weight
that exhausts that budget early, a small domain runs dry part-way, its weight goes to the others,
and it is forgotten by the end of the run (measured: ``benchmarks/results/mixbench_fidelity.json``).
Planned over the horizon instead, its weight is lowered to what its remaining blocks can sustain
until the end, and the excess is shared out over the other domains of the mixture in proportion to
their weights (water-filling), so every domain is trained all the way through.

The same caps bound what a decision may propose: :func:`caps_for` over a simulation's coordinates
(a virtual coordinate is capped by its tightest member), :func:`decision_caps` for a decision context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .mixture import Mixture


def fit_to_horizon(
    mixture: Mixture, blocks_left: Mapping[str, float | None], horizon: float
) -> tuple[Mixture, dict[str, float]]:
    """``mixture`` with no domain drawn more than its ``blocks_left`` over ``horizon`` draws (in expectation).

    Returns the planned mixture and ``{domain: requested weight}`` for every domain whose weight was
    lowered.  ``blocks_left[d]`` None means no cap.  When the domains of the mixture cannot absorb
    the excess (their caps sum to less than 1), the mixture is capped as far as it can be and the
    rest stays on the capped domains: the stream then runs them dry, as without planning.
    """
    names = mixture.domains
    if horizon <= 0:
        return mixture, {}
    weights = mixture.to_array(names).astype(float)
    caps = np.array(
        [np.inf if blocks_left.get(n) is None else max(0.0, float(blocks_left[n])) / horizon for n in names]
    )
    lowered = np.zeros(len(names), dtype=bool)
    for _ in range(len(names)):
        over = (weights > caps + 1e-12) & ~lowered
        if not over.any():
            break
        excess = float((weights[over] - caps[over]).sum())
        weights[over] = caps[over]
        lowered |= over
        free = ~lowered & (weights > 0)
        if not free.any():
            weights[over] += excess * (mixture.to_array(names)[over] / mixture.to_array(names)[over].sum())
            break
        weights[free] += excess * weights[free] / weights[free].sum()
    planned = Mixture.from_array(names, weights / weights.sum())
    changed = {n: float(mixture[n]) for n, low in zip(names, lowered) if low and planned[n] < mixture[n] - 1e-12}
    return (planned, changed) if changed else (mixture, {})


def virtual_cap(
    internals: Mapping[str, float],
    tokens: Mapping[str, float],
    target_tokens: float,
    k: float,
    drawn: Mapping[str, float] | None = None,
) -> float:
    """The virtual domain's repetition cap ``min_j (k·N_j − D_j) / (R·p̃_j)`` over members with p̃_j > 0,
    ``D_j`` the tokens already drawn from member j (none by default)."""
    drawn = drawn or {}
    bounds = [
        max(0.0, k * tokens[n] - drawn.get(n, 0.0)) / (target_tokens * share)
        for n, share in internals.items()
        if share > 0
    ]
    return min(bounds) if bounds else float("inf")


def caps_for(
    coordinates: Sequence[str],
    groups: Mapping[str, Mapping[str, float]],
    tokens: Mapping[str, float],
    target_tokens: float,
    k: float | None,
    drawn: Mapping[str, float] | None = None,
) -> np.ndarray | None:
    """Repetition caps over collapsed ``coordinates`` for the next ``target_tokens`` tokens:
    ``(k·N_j − D_j)/R`` for a domain (``D_j`` tokens already drawn from it), :func:`virtual_cap` for a group.

    Shared by every decision (:func:`hf_datamix.proposer.decide`): op_mix's "old"/"new" coordinates and
    Olmix reuse's fixed virtual domain.  Domains of unknown size (``tokens[j]`` None) are uncapped.
    """
    if k is None:
        return None
    caps = []
    for name in coordinates:
        members = groups.get(name, {name: 1.0})
        known = {n: share for n, share in members.items() if tokens.get(n) is not None}
        caps.append(virtual_cap(known, tokens, target_tokens, k, drawn) if known else float("inf"))
    return np.minimum(np.asarray(caps, dtype=np.float64), 1.0)


def decision_caps(coordinates: Sequence[str], groups: Mapping[str, Mapping[str, float]], context) -> np.ndarray | None:
    """The caps of a decision over ``coordinates``: :func:`caps_for` with k = ``context.max_repetitions``
    over the ``context.remaining_tokens``, less the tokens already drawn (None without a cap or a horizon)."""
    if context.max_repetitions is None or context.remaining_tokens is None:
        return None
    return caps_for(
        coordinates,
        groups,
        context.token_counts,
        context.remaining_tokens,
        context.max_repetitions,
        drawn=context.drawn_tokens,
    )
