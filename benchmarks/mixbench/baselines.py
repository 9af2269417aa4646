"""natural vs uniform end to end over seeds: the paired difference and the noise floor (protocol rule 1).

The quality runner (:mod:`.quality`) restricted to two arms, ``natural`` and ``uniform`` as the first
units ran them (``plan_caps`` off: quality's ``natural_unplanned`` / ``uniform_unplanned``).  Its store
settings are the ones those units were stored under (no arm table: these two arms are fixed here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from . import stats
from .quality import ARMS as QUALITY_ARMS
from .quality import QualityPlan, resolve, run_worker  # noqa: F401 (run_worker: this kind's worker)
from .quality_report import arm_summary


#: arm -> the quality arm it is
ARMS = {"natural": "natural_unplanned", "uniform": "uniform_unplanned"}


@dataclass
class BaselinePlan(QualityPlan):
    """natural and uniform, each trained from scratch for the whole run, on every seed (paired by seed)."""

    kind: ClassVar[str] = "baselines"
    extensible: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        self.arms = {arm: resolve(QUALITY_ARMS[same], self.shape) for arm, same in ARMS.items()}
        super().__post_init__()

    def settings(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "set_name": self.set_name,
            "seeds": list(self.seeds),
            "shape": asdict(self.shape),
            "domains": list(self.domains),
        }


def report(plans_and_units: list[tuple[BaselinePlan, dict[str, Any], dict[str, list]]]) -> dict[str, Any]:
    """The ``mixbench_baselines.json`` body: per set, each arm's per-seed results and natural − uniform."""
    out: dict[str, Any] = {"domain_sets": {}, "complete": bool(plans_and_units)}
    for plan, units, _ in plans_and_units:
        complete = all(key in units for key in plan.unit_keys())
        out["complete"] &= complete
        entry: dict[str, Any] = {
            "seeds": list(plan.seeds),
            "settings": plan.settings(),
            "complete": complete,
            "domains": list(plan.domains),
            "arms": {arm: arm_summary(plan, arm, units) for arm in ARMS},
        }
        if complete:
            natural, uniform = (entry["arms"][a]["mean_test_loss"] for a in ARMS)
            entry["natural_minus_uniform"] = stats.paired_difference(natural, uniform, seed=0)
        out["domain_sets"][plan.set_name] = entry
    return out
