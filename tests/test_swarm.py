import numpy as np
import pytest

from hf_datamix.mixture import Mixture
from hf_datamix.proposer import InfeasibleCapsError
from hf_datamix.swarm import (
    DEFAULT_CONCENTRATIONS,
    check_ratios,
    default_swarm_size,
    read_ratios_csv,
    read_run_table,
    sample_swarm,
    swarm_to_csv,
)


DOMAINS = ["web", "code", "books", "math", "wiki"]
PRIOR = {"web": 0.4, "code": 0.25, "books": 0.15, "math": 0.12, "wiki": 0.08}


def as_matrix(mixtures, domains=DOMAINS):
    return np.array([m.to_array(domains) for m in mixtures])


def test_defaults_size_sums_sparsity_and_domains():
    swarm = sample_swarm(DOMAINS, PRIOR, seed=0)
    assert len(swarm) == default_swarm_size(5) == 18
    assert len(DEFAULT_CONCENTRATIONS) == 15
    assert DEFAULT_CONCENTRATIONS[0] == pytest.approx(0.1) and DEFAULT_CONCENTRATIONS[-1] == pytest.approx(5.0)
    for mixture in swarm:
        assert isinstance(mixture, Mixture) and mixture.domains == DOMAINS  # zero weights kept
    X = as_matrix(swarm)
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-12)
    assert not ((X > 0) & (X < 0.002)).any()


def test_sparsity_with_large_min_weight_and_deduplication():
    X = as_matrix(sample_swarm(DOMAINS, PRIOR, size=300, min_weight=0.05, seed=1))
    assert not ((X > 0) & (X < 0.05)).any()
    assert (X == 0).any()  # small concentrations do produce sparse mixtures
    keys = {tuple(np.round(row, 4)) for row in X}
    assert len(keys) == len(X)


def test_reproducible_and_seed_dependent():
    a = as_matrix(sample_swarm(DOMAINS, PRIOR, size=30, seed=7))
    b = as_matrix(sample_swarm(DOMAINS, PRIOR, size=30, seed=7))
    c = as_matrix(sample_swarm(DOMAINS, PRIOR, size=30, seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_mean_follows_prior_and_uniform_default():
    # min_weight=0: the mean of Dirichlet(c·q) is q (zeroing small weights shifts it a little).
    X = as_matrix(sample_swarm(DOMAINS, PRIOR, size=4000, min_weight=0.0, seed=2))
    np.testing.assert_allclose(X.mean(axis=0), [PRIOR[d] for d in DOMAINS], atol=0.02)
    U = as_matrix(sample_swarm(DOMAINS, None, size=4000, min_weight=0.0, seed=2))
    np.testing.assert_allclose(U.mean(axis=0), 0.2, atol=0.02)
    # Olmix's Dirichlet(c·q): with a uniform prior c = m is Dirichlet(1,...,1), variance (m-1)/(m²(m+1)).
    D1 = as_matrix(sample_swarm(DOMAINS, None, size=4000, concentrations=[5.0], min_weight=0.0, seed=3))
    np.testing.assert_allclose(D1.var(axis=0), 4 / (25 * 6), rtol=0.15)
    # and c = 1 is Dirichlet(0.2, ...): variance q(1-q)/(c+1) = 0.16/2 (not scaled by the number of domains).
    D02 = as_matrix(sample_swarm(DOMAINS, None, size=4000, concentrations=[1.0], min_weight=0.0, seed=3))
    np.testing.assert_allclose(D02.var(axis=0), 0.16 / 2, rtol=0.15)
    assert default_swarm_size(5, initial=True) == 25 and default_swarm_size(5) == 18


def test_zero_prior_domain_is_never_sampled():
    X = as_matrix(sample_swarm(DOMAINS, {"web": 0.5, "code": 0.5, "books": 0, "math": 0, "wiki": 0}, size=20))
    assert (X[:, 2:] == 0).all()


def test_caps_are_honoured():
    caps = {"web": 0.3, "code": 0.2}
    X = as_matrix(sample_swarm(DOMAINS, PRIOR, size=200, caps=caps, seed=4))
    assert X[:, 0].max() <= 0.3 + 1e-9 and X[:, 1].max() <= 0.2 + 1e-9
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-12)


def test_too_tight_caps_raise_clear_errors():
    with pytest.raises(InfeasibleCapsError, match="sum to 0.5"):
        sample_swarm(DOMAINS, PRIOR, caps=dict.fromkeys(DOMAINS, 0.1))
    # Feasible in principle, but the prior puts almost everything on 'web': rejection runs out of tries.
    prior = {"web": 0.96, "code": 0.01, "books": 0.01, "math": 0.01, "wiki": 0.01}
    with pytest.raises(RuntimeError, match=r"web \(cap 0.05") as info:
        sample_swarm(DOMAINS, prior, caps={"web": 0.05}, concentrations=[5.0], max_tries=500)
    assert "max_tries" in str(info.value)
    with pytest.raises(ValueError, match="unknown domains \\['nope'\\]"):
        sample_swarm(DOMAINS, PRIOR, caps={"nope": 0.5})


def test_hierarchy_groups_follow_group_prior():
    domains = ["web:news", "web:blogs", "web:forums", "code:python", "code:c", "books"]
    prior = {"web:news": 0.3, "web:blogs": 0.2, "web:forums": 0.1, "code:python": 0.2, "code:c": 0.1, "books": 0.1}
    swarm = sample_swarm(domains, prior, size=3000, hierarchical=True, min_weight=0.0, seed=5)
    X = as_matrix(swarm, domains)
    groups = {"web": X[:, :3].sum(axis=1), "code": X[:, 3:5].sum(axis=1), "books": X[:, 5]}
    np.testing.assert_allclose([g.mean() for g in groups.values()], [0.6, 0.3, 0.1], atol=0.02)
    np.testing.assert_allclose(X.mean(axis=0), [prior[d] for d in domains], atol=0.02)
    # Within-group shares are drawn independently of the group's total weight.
    share = X[:, 0] / np.maximum(groups["web"], 1e-300)
    ok = groups["web"] > 1e-6
    assert abs(np.corrcoef(share[ok], groups["web"][ok])[0, 1]) < 0.1
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-12)


def test_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 2 domains"):
        sample_swarm(["only"])
    with pytest.raises(ValueError, match="more than once"):
        sample_swarm(["a", "a", "b"])
    with pytest.raises(ValueError, match="prior names unknown domains \\['zzz'\\]"):
        sample_swarm(DOMAINS, {"zzz": 1.0})
    with pytest.raises(ValueError, match="concentrations"):
        sample_swarm(DOMAINS, concentrations=[0.0, 1.0])
    with pytest.raises(ValueError, match="min_weight"):
        sample_swarm(DOMAINS, min_weight=1.5)


def test_csv_round_trip_and_checks(tmp_path):
    swarm = sample_swarm(DOMAINS, PRIOR, size=12, seed=6)
    path = tmp_path / "ratios.csv"
    swarm_to_csv(swarm, path)
    table = read_ratios_csv(path)
    assert table.runs == [f"run{i:04d}" for i in range(12)] and table.columns == DOMAINS
    np.testing.assert_allclose(table.values, as_matrix(swarm), rtol=0, atol=1e-15)
    path.write_text("run,a,b\nr1,0.5,0.6\n")
    with pytest.raises(ValueError, match=r"run 'r1' sum to 1\.1"):
        read_ratios_csv(path)
    path.write_text("run,a,b\nr1,0.5,x\n")
    with pytest.raises(ValueError, match=r"run 'r1', column 'b' is 'x'"):
        read_run_table(path)
    with pytest.raises(ValueError, match="column 'a' is -0.5"):
        check_ratios(read_run_table(_write(tmp_path / "neg.csv", "run,a,b\nr1,-0.5,1.5\n")))


def _write(path, text):
    path.write_text(text)
    return path
