"""mixbench's time budget: a worker does not train a prefix toward a decision point where none of its
units could end before the deadline."""

from __future__ import annotations

import os
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from mixbench.fidelity import FidelityPlan, drop_unreachable  # noqa: E402
from mixbench.runner import Budget  # noqa: E402


def test_units_beyond_a_prefix_that_cannot_fit_are_dropped():
    plan = FidelityPlan(set_name="five")  # 1400 steps: the points are at steps 280 and 700
    costs = dict(plan.units())
    pending = {0.2: [], 0.5: ["0.5/oracle/0", "0.5/sim/branches_quarter"]}
    budget = Budget(100.0)
    budget.observe(cost=100, seconds=10.0)  # 0.1 s per step: 1000 steps fit, with the margin ~870
    skipped = []
    drop_unreachable(pending, 280, plan, budget, skipped.append)
    # 420 prefix steps + 700 oracle steps do not fit; 420 + a quarter-branches unit do.
    assert costs["0.5/oracle/0"] + 420 > 870 > costs["0.5/sim/branches_quarter"] + 420
    assert pending[0.5] == ["0.5/sim/branches_quarter"]
    assert len(skipped) == 1 and "0.5/oracle/0" in skipped[0] and "420 prefix steps" in skipped[0]
    drop_unreachable(pending, 700, plan, budget, skipped.append)  # at the point itself: no prefix left
    assert pending[0.5] == ["0.5/sim/branches_quarter"]
