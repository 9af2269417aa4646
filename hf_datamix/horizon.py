"""Repetition caps applied when a mixture is planned, over the horizon it will be trained for.

A domain may give at most ``k`` epochs of its blocks (``max_repetitions``).  Trained at a weight
that exhausts that budget early, a small domain runs dry part-way, its weight goes to the others,
and it is forgotten by the end of the run (measured: ``benchmarks/results/mixbench_fidelity.json``).
Planned over the horizon instead, its weight is lowered to what its remaining blocks can sustain
until the end, and the excess is shared out over the other domains of the mixture in proportion to
their weights (water-filling), so every domain is trained all the way through.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .mixture import Mixture


def fit_to_horizon(mixture: Mixture, blocks_left: Mapping[str, float | None], horizon: float
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
    caps = np.array([np.inf if blocks_left.get(n) is None else max(0.0, float(blocks_left[n])) / horizon
                     for n in names])
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
