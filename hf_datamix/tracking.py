"""What a decision sends to the trackers (``report_to``: TensorBoard, W&B, ...).

``Trainer.log`` carries only numbers to every tracker alike, so a decision's summary is a flat dict
of scalars under ``decision/``, logged at the step the decision is taken (TensorBoard shows them
as ``train/decision/...``):

* ``decision/weight/<domain>``: the mixture decided (or kept);
* ``decision/changed``: 1 for a new mixture, 0 when the strategy kept the one in force;
* ``decision/predicted_loss/<target>`` and ``decision/predicted_avg_loss``: the law's prediction at
  the chosen mixture (compare with the ``eval/<target>_loss`` curves that follow);
* ``decision/observed_loss/<target>`` and ``decision/observed_avg_loss``: the simulated loss of the
  candidate nearest the chosen mixture, ``decision/nearest_candidate_l1`` its L1 distance to it;
* ``decision/fit_rmse`` (in-sample, mean over targets) and ``decision/fit_heldout_spearman``
  (out-of-fold rank correlation, mean over targets): the law's fit quality;
* ``decision/seconds``: wall time of the decision.

Records without a law fit (fixed strategies, kept mixtures) give only the weights and timing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


PREFIX = "decision/"


def _mean(values: Any) -> float | None:
    kept = [float(v) for v in values or [] if v is not None]
    return float(np.mean(kept)) if kept else None


def decision_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The tracker scalars of one ``mixtures.json`` record (see the module docstring for the keys)."""
    out = {f"{PREFIX}weight/{name}": float(w) for name, w in record["weights"].items()}
    out[f"{PREFIX}changed"] = float(record.get("kind") == "decision")
    if record.get("seconds") is not None:
        out[f"{PREFIX}seconds"] = float(record["seconds"])
    targets = record.get("targets") or []
    proposal = record.get("proposal") or {}
    predicted = proposal.get("predicted")
    if predicted is not None and len(predicted) == len(targets):
        out.update({f"{PREFIX}predicted_loss/{t}": float(v) for t, v in zip(targets, predicted)})
        out[f"{PREFIX}predicted_avg_loss"] = float(np.mean(predicted))
    candidates, observed = record.get("candidates"), record.get("observed")
    if candidates and observed and proposal.get("x") is not None:
        # Nearest in the law's own (collapsed) coordinates, where candidates and proposal both live.
        distance = np.abs(np.asarray(candidates, dtype=float) - np.asarray(proposal["x"], dtype=float)).sum(axis=1)
        nearest = int(np.argmin(distance))
        row = observed[nearest]
        if len(row) == len(targets):
            out.update({f"{PREFIX}observed_loss/{t}": float(v) for t, v in zip(targets, row)})
        out[f"{PREFIX}observed_avg_loss"] = float(np.mean(row))
        out[f"{PREFIX}nearest_candidate_l1"] = float(distance[nearest])
    fit = record.get("fit") or {}
    for key, value in (("fit_rmse", _mean(fit.get("rmse"))), ("fit_heldout_spearman", fit.get("spearman_mean"))):
        if value is not None:
            out[PREFIX + key] = float(value)
    return out
