"""The simulator interface: how a decision gets scores for candidate mixtures it has not trained on.

Every mixing method here is the loop *simulate candidates → fit a law → propose → train*.  A
:class:`Simulator` is the first step: given the decision context and the mixture in force, it
returns a :class:`Simulation` — candidates in its own coordinates (domains, or virtual domains such
as op_mix's "old" probe), how those coordinates expand to domains, and each candidate's scores per
target domain on the *decision* split (lower is better).  The law and the proposer take it from there.

``simulate(context, around, candidates=[...])`` scores exactly the given data mixtures instead of
the simulator's own candidate design; benchmarks use it to compare simulators on the same mixtures
(``benchmarks/mixbench``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..mixture import Mixture, expansion_matrix


@dataclass
class Simulation:
    """Candidates of one decision and their simulated scores.

    Attributes:
        coordinates: names of the columns of ``X``: domains, or virtual coordinates listed in ``groups``.
        groups: ``{virtual coordinate: its internal ratios over domains}``.
        domains: the full domains (columns of :meth:`mixtures`).
        X: ``(C, m)`` candidate weights over ``coordinates`` (rows on the simplex).
        Y: ``(C, T)`` scores of each candidate per target (lower is better), on the decision split.
        targets: the target names (columns of ``Y``).
        record: what to keep in ``mixtures.json`` (probes, branches, their costs ...).
    """

    coordinates: list[str]
    groups: dict[str, Mixture]
    domains: list[str]
    X: np.ndarray
    Y: np.ndarray
    targets: list[str]
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.X, self.Y = np.asarray(self.X, dtype=float), np.asarray(self.Y, dtype=float)
        if self.X.ndim != 2 or self.X.shape[1] != len(self.coordinates):
            raise ValueError(f"Simulation.X has shape {self.X.shape}; expected (candidates, {len(self.coordinates)}).")
        if self.Y.shape != (len(self.X), len(self.targets)):
            raise ValueError(f"Simulation.Y has shape {self.Y.shape}; expected ({len(self.X)}, {len(self.targets)}).")

    def mixtures(self) -> np.ndarray:
        """``(C, len(domains))``: the data mixture each candidate stands for (virtual coordinates expanded)."""
        return self.X @ expansion_matrix(self.coordinates, self.groups, self.domains).T

    def mean_scores(self) -> np.ndarray:
        """The candidates' mean score over targets (what the proposer minimises with equal target weights)."""
        return self.Y.mean(axis=1)


class Simulator:
    """Base class of simulators (see the module docstring).

    Subclasses set ``name`` and implement :meth:`simulate`; settings go in a dataclass ``config``.
    """

    #: Registry name (``simulator=<name>`` in a strategy's settings).
    name: ClassVar[str] = ""
    #: True if every process must call :meth:`simulate` together (it uses collectives).
    collective: bool = False

    def simulate(self, context, around: Mixture, candidates: Sequence[Mapping[str, float]] | None = None
                 ) -> Simulation | None:
        """Simulate around the mixture in force ``around``; score ``candidates`` (data mixtures) if given.

        Returns None when the simulation failed (e.g. every probe diverged); the mixture is then kept.
        """
        raise NotImplementedError


def data_mixtures(candidates: Sequence[Mapping[str, float]], domains: Sequence[str]) -> list[Mixture]:
    """Validated data mixtures over exactly ``domains`` (absent domains get 0)."""
    out = []
    for i, candidate in enumerate(candidates):
        unknown = sorted(set(candidate) - set(domains))
        if unknown:
            raise ValueError(f"candidate {i} names domains {unknown} that are not in this run ({list(domains)}).")
        out.append(Mixture({name: float(candidate.get(name, 0.0)) for name in domains}))
    return out
