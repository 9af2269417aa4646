"""The oracle sweep's mixtures (protocol rule 4): uniform, natural, one tilt per domain, Dirichlet draws."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


MIN_MIXTURES = 12
TILT = 0.5
MIN_SHARE = 0.05


def oracle_mixtures(
    domains: Sequence[str], token_counts: Mapping[str, int], count: int = MIN_MIXTURES, seed: int = 0
) -> list[dict]:
    """``[{"name", "weights"}]``: uniform, natural (token-proportional), ``domain`` tilted to 0.5 with the rest
    uniform, then Dirichlet(1) draws with every share >= 0.05 up to ``count`` mixtures (seeded)."""
    names = list(domains)
    k = len(names)
    out = [{"name": "uniform", "weights": dict.fromkeys(names, 1.0 / k)}]
    total = sum(token_counts[n] for n in names)
    out.append({"name": "natural", "weights": {n: token_counts[n] / total for n in names}})
    for name in names:
        rest = (1 - TILT) / (k - 1)
        out.append({"name": f"tilt:{name}", "weights": {n: TILT if n == name else rest for n in names}})
    rng = np.random.default_rng([seed, 0x0AC1E])
    while len(out) < count:
        draw = rng.dirichlet(np.ones(k))
        if draw.min() >= MIN_SHARE:
            out.append({"name": f"dirichlet:{len(out)}", "weights": dict(zip(names, draw.tolist()))})
    return out
