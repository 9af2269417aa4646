import json
import logging
import time

import cvxpy as cp
import numpy as np
import pytest
from scipy.special import rel_entr

from hf_datamix.laws import LinearLaw, LogLinearLaw, MixingLaw
from hf_datamix.mixture import Mixture, expansion_matrix
from hf_datamix.proposer import (
    InfeasibleCapsError,
    Proposal,
    _project_capped_simplex,
    propose,
)


def loglinear_law(c, t):
    t = np.asarray(t, dtype=float)
    return MixingLaw.from_dict(
        {
            "name": "log_linear",
            "config": {},
            "domains": t.shape[1],
            "targets": t.shape[0],
            "params": {"c": list(c), "t": t.tolist()},
        }
    )


def linear_law(a, b):
    a = np.asarray(a, dtype=float)
    return MixingLaw.from_dict(
        {
            "name": "linear",
            "config": {},
            "domains": a.shape[1],
            "targets": a.shape[0],
            "params": {"a": a.tolist(), "b": list(b)},
        }
    )


def simplex_grid(step=0.01):
    k = round(1 / step)
    return np.array([(i, j, k - i - j) for i in range(k + 1) for j in range(k + 1 - i)], dtype=float) / k


def brute_force(law, prior, kl, caps=None, E=None, w=None):
    grid = simplex_grid()
    if caps is not None:
        grid = grid[(grid <= np.asarray(caps) + 1e-12).all(axis=1)]
    E = np.eye(3) if E is None else E
    w = np.ones(law.T) if w is None else np.asarray(w)
    values = law.predict(grid) @ w / law.T + kl * rel_entr(grid @ E.T, prior).sum(axis=1)
    best = int(np.argmin(values))
    return grid[best], values[best]


LAW3 = loglinear_law([0.5, 0.7], [[1.2, -0.8, 0.3], [-0.5, 0.9, -1.1]])
# One virtual coordinate "old" made of three members (ratios 0.5/0.3/0.2) plus two plain domains.
INTERNALS = {"old": {"a": 0.5, "b": 0.3, "c": 0.2}}
FULL = ["a", "b", "c", "d", "e"]
E5 = expansion_matrix(["old", "d", "e"], INTERNALS, FULL)


@pytest.mark.parametrize(
    "law, prior, kl, caps, E, w",
    [
        (LAW3, np.ones(3) / 3, 0.05, None, None, None),
        (LAW3, np.array([0.6, 0.3, 0.1]), 0.05, [0.3, 0.6, 0.5], None, None),
        (LAW3, np.array([0.6, 0.3, 0.1]), 0.5, None, None, [3.0, 1.0]),
        (LAW3, np.array([0.2, 0.1, 0.3, 0.25, 0.15]), 0.05, None, E5, None),
        (LAW3, np.array([0.2, 0.1, 0.3, 0.25, 0.15]), 0.2, [0.35, 0.5, 0.4], E5, None),
        (
            linear_law([[1.0, 2.0, 3.0], [2.0, 0.5, 1.0]], [0.0, 0.0]),
            np.ones(3) / 3,
            0.05,
            [0.5, 0.4, 0.6],
            None,
            None,
        ),
        (linear_law([[1.0, 2.0, 3.0], [2.0, 0.5, 1.0]], [0.0, 0.0]), np.ones(3) / 3, 0.0, [0.5, 0.4, 0.6], None, None),
    ],
)
def test_matches_brute_force_grid(law, prior, kl, caps, E, w):
    proposal = propose(law, prior, kl=kl, caps=caps, expansion=E, target_weights=w)
    x_grid, v_grid = brute_force(law, prior, kl, caps, E, w)
    assert proposal.status == "optimal" and proposal.fallback_reason is None
    assert proposal.objective <= v_grid + 1e-9  # the continuous optimum is at least as good as any grid point
    assert np.abs(proposal.x - x_grid).max() <= 0.011
    assert proposal.x.sum() == pytest.approx(1.0) and proposal.x.min() >= 0
    if caps is not None:
        assert np.all(proposal.x <= np.asarray(caps) + 1e-9)
    np.testing.assert_allclose(proposal.x_full, (np.eye(3) if E is None else E) @ proposal.x)
    np.testing.assert_allclose(proposal.predicted, law.predict(proposal.x[None])[0])


def test_expansion_gives_full_mixture_and_json():
    prior = {"a": 0.2, "b": 0.1, "c": 0.3, "d": 0.25, "e": 0.15}
    proposal = propose(
        LAW3, prior, caps={"old": 0.35, "d": 0.5, "e": 0.4}, expansion=E5, domains=["old", "d", "e"], full_domains=FULL
    )
    full = proposal.mixture()
    assert isinstance(full, Mixture) and full.domains == FULL
    assert full["a"] / full["b"] == pytest.approx(0.5 / 0.3)  # internal ratios of the virtual domain kept
    assert proposal.mixture(full=False)["old"] <= 0.35 + 1e-9
    record = json.loads(json.dumps(proposal.to_dict()))
    assert record["status"] == "optimal" and record["domains"] == ["old", "d", "e"] and len(record["x_full"]) == 5


def test_infeasible_caps_name_domains_and_shortfall():
    with pytest.raises(InfeasibleCapsError) as info:
        propose(LAW3, np.ones(3) / 3, caps=[0.3, 0.28, 0.25], domains=["web", "code", "math"])
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "caps sum to 0.83 < 1" in message and "0.17" in message
    assert "web=0.3" in message and "code=0.28" in message and "math=0.25" in message


@pytest.mark.parametrize(
    "caps, message",
    [
        ([0.5, -0.1, 1.0], "caps of code is -0.1"),
        ([0.5, np.nan, 1.0], "caps of code is nan"),
        ([0.5, 0.5], "caps has 2 entries but 3"),
    ],
)
def test_bad_caps(caps, message):
    with pytest.raises(ValueError, match=message):
        propose(LAW3, np.ones(3) / 3, caps=caps, domains=["web", "code", "math"])


def test_bad_prior_and_expansion():
    with pytest.raises(ValueError, match="prior of 'b' is 0"):
        propose(LAW3, [0.5, 0.0, 0.5], domains=["a", "b", "c"], full_domains=["a", "b", "c"])
    # A zero prior is fine where the caps keep the mixture at 0.
    assert propose(LAW3, [0.5, 0.0, 0.5], caps=[1.0, 0.0, 1.0]).x[1] == 0
    with pytest.raises(ValueError, match="sums to 0.9"):
        propose(LAW3, np.ones(3) / 3, expansion=np.diag([1.0, 1.0, 0.9]))
    with pytest.raises(ValueError, match="not fitted"):
        propose(LogLinearLaw(), np.ones(3) / 3)


def failing_solve(self, *args, **kwargs):
    raise cp.error.SolverError("simulated solver crash")


def test_solver_failure_falls_back_to_best_candidate(monkeypatch, caplog):
    monkeypatch.setattr(cp.Problem, "solve", failing_solve)
    X = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    Y = np.array([[1.0, 1.0], [3.0, 3.0], [2.0, 2.2], [2.5, 2.0]])  # row 0 is best but breaks the cap
    with caplog.at_level(logging.WARNING, logger="hf_datamix.proposer"):
        proposal = propose(LAW3, np.ones(3) / 3, caps=[0.5, 1.0, 1.0], fallback_candidates=(X, Y))
    assert proposal.status == "fallback_candidate" and proposal.solver == "fallback"
    np.testing.assert_allclose(proposal.x, X[2])
    assert "every solver failed" in proposal.fallback_reason and "row 2" in proposal.fallback_reason
    assert "simulated solver crash" in proposal.fallback_reason
    assert any("every solver failed" in r.message for r in caplog.records)
    assert set(proposal.solver_errors) >= {"CLARABEL"}


def test_solver_failure_without_candidates_samples(monkeypatch):
    monkeypatch.setattr(cp.Problem, "solve", failing_solve)
    proposal = propose(LAW3, np.ones(3) / 3, caps=[0.5, 1.0, 1.0])
    assert proposal.status == "fallback_sampled" and "no fallback candidates" in proposal.fallback_reason
    assert proposal.x[0] <= 0.5 + 1e-9
    _, v_grid = brute_force(LAW3, np.ones(3) / 3, 0.05, [0.5, 1.0, 1.0])
    assert proposal.objective <= v_grid + 1e-3


def test_unknown_solver_is_skipped():
    proposal = propose(LAW3, np.ones(3) / 3, solvers=["NOT_A_SOLVER", "CLARABEL"])
    assert proposal.solver == "CLARABEL" and "not installed" in proposal.solver_errors["NOT_A_SOLVER"]


class NonConvexLaw(LinearLaw):
    """A law without a cvxpy form: the proposer must search random points."""

    name = "test_nonconvex"

    def _predict(self, X):
        return super()._predict(X) + 0.3 * np.sin(7 * X[:, :1])

    def cvxpy_terms(self, x):
        return None


def test_law_without_cvxpy_form_uses_random_search():
    law = NonConvexLaw()
    law._set_params({"a": [[1.0, 2.0, 3.0]], "b": [0.0]})
    law.m, law.T = 3, 1
    proposal = propose(law, np.ones(3) / 3, caps=[0.6, 0.6, 0.6])
    _, v_grid = brute_force(law, np.ones(3) / 3, 0.05, [0.6, 0.6, 0.6])
    assert proposal.status == "sampled" and proposal.fallback_reason is None
    assert proposal.objective <= v_grid + 2e-3 and np.all(proposal.x <= 0.6 + 1e-9)


def test_64_domains_with_caps_solves_fast():
    rng = np.random.default_rng(0)
    m = 64
    law = loglinear_law(np.log(rng.uniform(1.5, 2.5, m)), rng.normal(0, 1, (m, m)))
    caps = np.where(np.arange(m) < 10, 0.2, 0.02)
    prior = rng.dirichlet(np.full(m, 2.0))
    propose(law, prior, caps=caps)  # first call pays cvxpy's one-off set-up
    start = time.perf_counter()
    proposal = propose(law, prior, caps=caps)
    elapsed = time.perf_counter() - start
    assert proposal.status == "optimal" and isinstance(proposal, Proposal)
    assert np.all(proposal.x <= caps + 1e-9) and proposal.x.sum() == pytest.approx(1.0)
    assert elapsed < 5.0, elapsed  # typically ~0.05 s; generous for loaded CI machines
    # No random feasible point does better (points projected onto the capped simplex).
    points = _project_capped_simplex(rng.dirichlet(np.ones(m), size=2000), caps)
    assert np.all(points <= caps + 1e-12) and np.allclose(points.sum(axis=1), 1.0)
    values = law.predict(points).mean(axis=1) + 0.05 * rel_entr(points, prior).sum(axis=1)
    assert proposal.objective <= values.min() + 1e-9


def test_caps_summing_to_one_force_the_caps_and_mappings_work():
    proposal = propose(
        LAW3, Mixture.uniform(["a", "b", "c"]), caps={"a": 0.5, "b": 0.3, "c": 0.2}, domains=["a", "b", "c"]
    )
    np.testing.assert_allclose(proposal.x, [0.5, 0.3, 0.2], atol=1e-6)
    assert proposal.mixture().domains == ["a", "b", "c"]
    capped = propose(LAW3, np.ones(3) / 3, caps={"a": 0.1}, domains=["a", "b", "c"])  # b, c uncapped
    assert capped.x[0] <= 0.1 + 1e-9
