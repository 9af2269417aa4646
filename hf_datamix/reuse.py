"""Mixture reuse across DomainSet updates (Olmix), built on ``Mixture.collapse``/``expand``.

When the domain set changes, the unaffected domains D_fix keep their previous internal ratios p̃ as
one *virtual domain* v; only the affected domains D_comp (plus v) are re-simulated and
re-optimised, and the solution is expanded back with ``q_j = r_v · p̃_j``.  The virtual domain's
repetition cap is ``ρ ≤ min_j k·N_j / (R·p̃_j)`` (:func:`hf_datamix.horizon.virtual_cap`).  Removal
needs no new runs.

Modes: ``full`` reopens nothing; ``partial`` also reopens domains the user names; ``auto`` (beyond
the paper) reopens the unaffected domains that the previously fitted law says drive the affected
targets most, and records why.
"""

from __future__ import annotations

from collections.abc import Sequence
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
) -> ReusePlan:
    """Decide what to re-simulate after ``update``, given the ``previous`` mixture.

    Args:
        previous: the mixture in force before the update (over the previous set's domains).
        update: the :class:`~hf_datamix.domains.DomainUpdate`.
        mode: ``full``, ``partial`` (with ``reopen``), ``auto`` (with ``law``) or ``recompute``.
        reopen: unaffected domains to reopen in ``partial`` mode.
        law: for ``auto``: a fitted log-linear law over ``law_domains`` (the previous coordinates).
        max_reopen, min_share: ``auto`` reopens at most ``max_reopen`` domains, each holding at least
            ``min_share`` of the affected targets' total sensitivity.
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
        chosen, reasons = _auto_reopen(update, unaffected, law, law_domains, max_reopen, min_share)
    else:
        chosen = []
    fixed = [n for n in unaffected if n not in chosen]
    # A fixed set whose previous weights are all zero carries no ratios worth keeping: reopen it.
    if fixed and sum(previous[n] for n in fixed) <= 0:
        chosen, fixed = chosen + fixed, []
    compute = [n for n in names if n not in fixed]
    internals = previous.restrict(fixed) if fixed else None
    return ReusePlan(mode, compute, fixed, internals, reasons)


def _auto_reopen(update, unaffected, law, law_domains, max_reopen, min_share):
    """Reopen unaffected domains whose weight moves the affected targets most under the fitted law."""
    if law is None or getattr(law, "t", None) is None or law_domains is None:
        return [], {"note": "auto: no fitted log-linear law from the previous step; nothing reopened"}
    index = {name: i for i, name in enumerate(law_domains)}
    # Targets touched by the update: revised domains and partitioned parents had targets before;
    # an added domain had none, so then every previous target counts.
    touched = [index[n] for n in list(update.affected) + list(update.removed) if n in index]
    targets = touched or list(range(law.t.shape[0]))
    sensitivity = np.abs(np.asarray(law.t)[targets]).sum(axis=0)
    scored = {n: float(sensitivity[index[n]]) for n in unaffected if n in index}
    total = sum(scored.values()) or 1.0
    ranked = sorted(scored, key=scored.get, reverse=True)
    chosen = [n for n in ranked[:max_reopen] if scored[n] / total >= min_share]
    reasons = {
        "targets": [law_domains[i] if i < len(law_domains) else i for i in targets],
        "sensitivity_share": {n: scored[n] / total for n in ranked},
        "rule": f"reopen up to {max_reopen} domains holding >= {min_share:.0%} of |t| over those targets",
        "reopened": chosen,
    }
    return chosen, reasons
