"""Mixture reuse across DomainSet updates (Olmix), built on ``Mixture.collapse``/``expand``.

When the domain set changes, the unaffected domains D_fix keep their previous internal ratios p̃ as
one *virtual domain* v; only the affected domains D_comp (plus v) are re-simulated and
re-optimised, and the solution is expanded back with ``q_j = r_v · p̃_j``.  The virtual domain's
repetition cap is ``ρ ≤ min_j k·N_j / (R·p̃_j)`` (:func:`hf_datamix.horizon.virtual_cap`).  Removal
needs no new runs.

Modes: ``full`` reopens nothing; ``partial`` also reopens domains the user names; ``auto`` (beyond
the paper) reopens the unaffected domains that the previously fitted law says drive the affected
targets most, and records why.  A reopened domain becomes its own coordinate, whether the previous
fit had it as one or held it inside its virtual domain; the virtual domain keeps the other fixed
domains, their internal ratios renormalised from the previous mixture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .domains import DomainUpdate
from .mixture import Mixture


VIRTUAL = "reuse:fixed"
REUSE_MODES = ("full", "partial", "auto", "recompute")


@dataclass
class ReusePlan:
    """What a reuse step re-simulates.

    Attributes:
        mode: the reuse mode used.
        compute: domains re-simulated and re-optimised (affected + reopened), in the new set's order.
        fixed: unaffected domains folded into the virtual domain (empty for ``recompute``).
        internals: the virtual domain's internal ratios p̃ over ``fixed``.
        reasons: why each reopened domain was reopened (``auto``), or notes.
        no_runs: True when nothing needs simulating (a pure removal).
    """

    mode: str
    compute: list[str]
    fixed: list[str]
    internals: Mixture | None
    reasons: dict[str, Any] = field(default_factory=dict)
    no_runs: bool = False

    @property
    def coordinates(self) -> list[str]:
        """The collapsed coordinates the swarm and the law work in: the virtual domain, then ``compute``."""
        return ([VIRTUAL] if self.fixed else []) + list(self.compute)

    @property
    def groups(self) -> dict[str, Mixture]:
        """``{virtual: p̃}`` for :meth:`Mixture.expand`."""
        return {VIRTUAL: self.internals} if self.fixed else {}

    def expand(self, collapsed: Mixture) -> Mixture:
        """The full mixture from a solution over :attr:`coordinates`."""
        return collapsed.expand(self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "compute": list(self.compute),
            "fixed": list(self.fixed),
            "internals": None if self.internals is None else self.internals.to_dict(),
            "reasons": self.reasons,
            "no_runs": self.no_runs,
        }


def plan_reuse(
    previous: Mixture,
    update: DomainUpdate,
    mode: str = "full",
    reopen: Sequence[str] = (),
    law: Any = None,
    law_domains: Sequence[str] | None = None,
    max_reopen: int = 2,
    min_share: float = 0.25,
    law_targets: Sequence[str] | None = None,
    law_groups: Mapping[str, Mapping[str, float]] | None = None,
) -> ReusePlan:
    """Decide what to re-simulate after ``update``, given the ``previous`` mixture.

    Args:
        previous: the mixture in force before the update (over the previous set's domains).
        update: the :class:`~hf_datamix.domains.DomainUpdate`.
        mode: ``full``, ``partial`` (with ``reopen``), ``auto`` (with ``law``) or ``recompute``.
        reopen: unaffected domains to reopen in ``partial`` mode.
        law: for ``auto``: a fitted log-linear law over ``law_domains`` (the previous coordinates, its
            columns) predicting ``law_targets`` (its rows).
        max_reopen, min_share: ``auto`` reopens at most ``max_reopen`` domains, each holding at least
            ``min_share`` of the affected targets' total sensitivity.
        law_targets: the law's target names.  None: taken to be ``law_domains`` (as state saved before
            the targets were kept assumed), refused when a coordinate is the virtual domain.
        law_groups: ``{virtual coordinate: {member: internal weight}}`` of the previous fit, so that
            ``auto`` can reopen a domain the previous fit held inside its virtual domain.
    """
    if mode not in REUSE_MODES:
        raise ValueError(f"reuse mode {mode!r} is unknown; use one of {list(REUSE_MODES)}.")
    names = update.domains.names
    unaffected = [n for n in update.unaffected if n in previous]
    if mode == "recompute":  # the full-recomputation baseline re-simulates at every update, removals too
        return ReusePlan(mode, list(names), [], None, {"note": "full recomputation"})
    if update.kind == "remove":
        return ReusePlan(mode, [], names, previous.restrict(names), {"note": "removal: no new runs"}, no_runs=True)
    reasons: dict[str, Any] = {}
    if mode == "partial":
        bad = [n for n in reopen if n not in unaffected]
        if bad:
            raise ValueError(f"partial reuse: reopen names {bad}, which are not unaffected domains ({unaffected}).")
        chosen = list(reopen)
        reasons = dict.fromkeys(chosen, "chosen by the user")
    elif mode == "auto":
        fitted = _PreviousLaw.of(law, law_domains, law_targets, law_groups)
        chosen, reasons = _auto_reopen(update, unaffected, fitted, max_reopen, min_share)
    else:
        chosen = []
    fixed = [n for n in unaffected if n not in chosen]
    # A fixed set whose previous weights are all zero carries no ratios worth keeping: reopen it.
    if fixed and sum(previous[n] for n in fixed) <= 0:
        chosen, fixed = chosen + fixed, []
    compute = [n for n in names if n not in fixed]
    internals = previous.restrict(fixed) if fixed else None
    return ReusePlan(mode, compute, fixed, internals, reasons)


@dataclass
class _PreviousLaw:
    """The previous step's fitted log-linear law, with the names of its rows and columns.

    ``t`` is ``(targets, coordinates)``; ``groups`` maps a virtual coordinate to its members'
    internal weights (a coordinate not in ``groups`` is the domain of that name).
    """

    t: np.ndarray
    coordinates: list[str]
    targets: list[str]
    groups: dict[str, dict[str, float]]

    @classmethod
    def of(cls, law, coordinates, targets, groups) -> _PreviousLaw | str:
        """The law with its names, or a note saying why ``auto`` cannot use it."""
        if law is None or getattr(law, "t", None) is None or coordinates is None:
            return "auto: no fitted log-linear law from the previous step; nothing reopened"
        if targets is None:
            # Before the targets were kept they were assumed to be the coordinates, which only holds
            # for a fit without a virtual domain.
            if VIRTUAL in coordinates:
                return (
                    "auto: the previous law's targets were not recorded (state from an older version) and "
                    "its coordinates hold a virtual domain; nothing reopened"
                )
            targets = coordinates
        t = np.asarray(law.t, dtype=float)
        if t.shape != (len(targets), len(coordinates)):
            return (
                f"auto: the previous law's coefficients are {t.shape}, not (targets {len(targets)}, "
                f"coordinates {len(coordinates)}); nothing reopened"
            )
        return cls(t, list(coordinates), list(targets), {v: dict(m) for v, m in (groups or {}).items()})

    def members(self, coordinate: str) -> dict[str, float]:
        """The domains a coordinate holds, with their internal weights (summing to 1)."""
        weights = self.groups.get(coordinate, {coordinate: 1.0})
        total = sum(weights.values()) or 1.0
        return {name: w / total for name, w in weights.items()}


def _auto_reopen(update, unaffected, law, max_reopen, min_share):
    """Reopen unaffected domains whose weight moves the affected targets most under the fitted law."""
    if isinstance(law, str):
        return [], {"note": law}
    # Targets touched by the update: revised domains and partitioned parents had targets before;
    # an added domain had none, so then every previous target counts.
    rows = {name: i for i, name in enumerate(law.targets)}
    touched = [rows[n] for n in list(update.affected) + list(update.removed) if n in rows]
    targets = touched or list(range(len(law.targets)))
    sensitivity = np.abs(law.t[targets]).sum(axis=0)
    # The law saw a virtual domain's weight only as a whole, so its sensitivity is shared among the
    # members by internal weight: the members' scores add up to the coordinate's, and the shares
    # below still divide the law's sensitivity over its columns.
    held: dict[str, float] = {}
    for column, coordinate in enumerate(law.coordinates):
        for name, weight in law.members(coordinate).items():
            held[name] = held.get(name, 0.0) + float(sensitivity[column]) * weight
    scored = {n: held[n] for n in unaffected if n in held}  # ties keep the new set's order
    total = sum(scored.values()) or 1.0
    ranked = sorted(scored, key=scored.get, reverse=True)
    chosen = [n for n in ranked[:max_reopen] if scored[n] / total >= min_share]
    reasons = {
        "targets": [law.targets[i] for i in targets],
        "sensitivity_share": {n: scored[n] / total for n in ranked},
        "rule": (
            f"reopen up to {max_reopen} domains holding >= {min_share:.0%} of |t| over those targets "
            "(a domain inside the virtual domain: its |t| times the domain's internal weight)"
        ),
        "reopened": chosen,
    }
    return chosen, reasons
