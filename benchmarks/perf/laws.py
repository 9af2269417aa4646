"""Part 3: batched log-linear fit vs the per-start loop, and the 64-domain proposal."""

from __future__ import annotations

from .common import (
    Context,
    load_benchmark,
    log,
)


def part_laws(ctx: Context) -> dict:
    import numpy as np

    from hf_datamix.laws import (
        LogLinearLaw,
        fit_loglinear_batched,
        fit_loglinear_per_start_reference,
    )
    from hf_datamix.proposer import propose

    bench = load_benchmark("laws")
    starts = 3 if ctx.quick else 8
    X, Y = bench.synthetic(runs=27, domains=6, targets=2)
    (_, _, ref_loss), ref_s = bench.timed(lambda: fit_loglinear_per_start_reference(X, Y, starts=starts, seed=0))
    (_, _, batch_loss), batch_s = bench.timed(
        lambda: fit_loglinear_batched(X, Y, starts=starts, seed=0, screen_iter=None)
    )
    out = {
        "small_case": {
            "runs": 27,
            "domains": 6,
            "targets": 2,
            "starts": starts,
            "per_start_loop_s": ref_s,
            "batched_s": batch_s,
            "speedup": ref_s / batch_s,
            "loss_ratio_batched_over_loop": [float(v) for v in np.asarray(batch_loss / ref_loss)],
            "note": "benchmarks/laws.py's synthetic data; the loop is fit_loglinear_per_start_reference (one LBFGS "
            "problem per start and target), the batched fit solves them all at once (screen_iter=None: "
            "every start refined, as the loop does)",
        }
    }
    X, Y = bench.synthetic(runs=195, domains=64, targets=8, seed=2)
    law, fit_s = bench.timed(lambda: LogLinearLaw(starts=30).fit(X, Y))
    caps, prior = np.full(64, 0.05), np.full(64, 1 / 64)
    _, first_s = bench.timed(lambda: propose(law, prior, kl=0.05, caps=caps))
    proposal, solve_s = bench.timed(lambda: propose(law, prior, kl=0.05, caps=caps))
    out["proposal_64_domains"] = {
        "runs": 195,
        "targets": 8,
        "law_fit_s": fit_s,
        "law_starts": 30,
        "first_call_s": first_s,
        "seconds": solve_s,
        "solver": proposal.solver,
        "status": proposal.status,
        "caps_respected": bool((proposal.x <= caps + 1e-6).all()),
    }
    log(f"laws: loop {ref_s:.2f}s vs batched {batch_s:.3f}s; 64-domain proposal {solve_s:.3f}s")
    return out
