"""Benchmark: the batched log-linear fit against a per-start LBFGS loop, and the proposer at 64 domains.

    python benchmarks/laws.py

The reference loop fits one (start, target) problem after another with torch.optim.LBFGS; it is
timed on a small case and per problem, and the batched fit on the same data and starts (equal or
better loss is checked) and on the 300 starts x 50 targets case.  Writes benchmarks/results/laws.json.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from hf_datamix.laws import LogLinearLaw, fit_loglinear_batched, fit_loglinear_per_start_reference
from hf_datamix.proposer import propose


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import provenance  # noqa: E402


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "laws.json")


def synthetic(runs: int, domains: int, targets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(domains), size=runs)
    c = np.log(rng.uniform(1.0, 2.0, targets))
    t = rng.normal(0.0, 1.0, (targets, domains))
    Y = np.exp(c) + np.exp(X @ t.T) + rng.normal(0.0, 0.01, (runs, targets))
    return X, Y


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    result = provenance("laws")
    # Small case, same starts for both: per-problem cost of the reference loop and loss comparison.
    X, Y = synthetic(runs=27, domains=6, targets=2)
    starts = 20
    (_, _, ref_loss), ref_s = timed(lambda: fit_loglinear_per_start_reference(X, Y, starts=starts, seed=0))
    (_, _, batch_loss), batch_s = timed(lambda: fit_loglinear_batched(X, Y, starts=starts, seed=0, screen_iter=None))
    result["small_case"] = {
        "runs": 27,
        "domains": 6,
        "targets": 2,
        "starts": starts,
        "reference_loop_s": ref_s,
        "reference_s_per_start_target": ref_s / (starts * 2),
        "batched_s": batch_s,
        "speedup": ref_s / batch_s,
        "loss_ratio_batched_over_reference": (batch_loss / ref_loss).tolist(),
    }
    # The scale of the issue: 300 starts x 50 targets, ~30 runs, 8 domains.
    X, Y = synthetic(runs=30, domains=8, targets=50, seed=1)
    _, big_s = timed(lambda: LogLinearLaw(starts=300).fit(X, Y))
    reference_estimate = result["small_case"]["reference_s_per_start_target"] * 300 * 50
    result["large_case"] = {
        "runs": 30,
        "domains": 8,
        "targets": 50,
        "starts": 300,
        "batched_fit_s": big_s,
        "reference_loop_estimate_s": reference_estimate,
        "estimate_note": "reference = its measured seconds per (start, target) problem x 15000 problems",
        "speedup_estimate": reference_estimate / big_s,
    }
    # The proposer: 64 domains, caps, KL to a prior.
    X, Y = synthetic(runs=195, domains=64, targets=8, seed=2)
    law = LogLinearLaw(starts=30).fit(X, Y)
    caps = np.full(64, 0.05)
    prior = np.full(64, 1 / 64)
    propose(law, prior, kl=0.05, caps=caps)  # first call pays cvxpy's set-up
    proposal, solve_s = timed(lambda: propose(law, prior, kl=0.05, caps=caps))
    result["proposer_64_domains"] = {
        "seconds": solve_s,
        "solver": proposal.solver,
        "status": proposal.status,
        "max_weight": float(proposal.x.max()),
        "caps_respected": bool((proposal.x <= caps + 1e-6).all()),
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
