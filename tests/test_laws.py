import json
import time

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from hf_datamix.laws import (
    LAWS,
    LinearLaw,
    LogLinearLaw,
    MixingLaw,
    _loglinear_losses,
    _loglinear_value_grad,
    available_laws,
    batched_lbfgs,
    fit_loglinear_batched,
    fit_loglinear_per_start_reference,
    get_law,
)


def loglinear_data(runs=25, m=4, targets=3, noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(m), size=runs)
    c = np.log(rng.uniform(1.5, 2.5, targets))
    t = rng.normal(0.0, 1.0, (targets, m))
    clean = np.exp(c) + np.exp(X @ t.T)
    return X, clean + rng.normal(0.0, noise, clean.shape), c, t


def test_loglinear_recovers_known_law():
    X, Y, c, t = loglinear_data()
    law = LogLinearLaw(starts=100).fit(X, Y)
    X_new = np.random.default_rng(1).dirichlet(np.ones(4), size=200)
    truth = np.exp(c) + np.exp(X_new @ t.T)
    predicted = law.predict(X_new)
    assert np.abs(predicted - truth).max() < 0.05
    for j in range(3):
        assert spearmanr(predicted[:, j], truth[:, j]).statistic > 0.99
    assert law.c.shape == (3,) and law.t.shape == (3, 4) and law.loss_.shape == (3,)


def test_value_grad_matches_autograd():
    X, Y, _, _ = loglinear_data(runs=10, m=3, targets=1)
    params = torch.randn(7, 4, dtype=torch.float64)
    rows = torch.from_numpy(Y[:, 0]).expand(7, -1)
    loss, grad = _loglinear_value_grad(params, torch.from_numpy(X), rows, 0.02)
    auto = params.clone().requires_grad_(True)
    total = _loglinear_losses(auto[:, None, :], torch.from_numpy(X), torch.from_numpy(Y), 0.02)
    total.sum().backward()
    assert torch.allclose(loss, total.detach()[:, 0])
    assert torch.allclose(grad, auto.grad)


def test_batched_lbfgs_solves_independent_problems():
    # Rosenbrock valleys with different minima (a, a^2): each problem must reach its own minimum.
    a = torch.linspace(-1.0, 2.0, 9, dtype=torch.float64)

    def fun(x, ids):
        ai = a[ids]
        u, v = x[:, 0], x[:, 1]
        value = (ai - u) ** 2 + 10 * (v - u**2) ** 2
        grad = torch.stack([-2 * (ai - u) - 40 * u * (v - u**2), 20 * (v - u**2)], dim=1)
        return value, grad

    x, f = batched_lbfgs(fun, torch.zeros(9, 2, dtype=torch.float64), ftol=1e-14)
    assert torch.allclose(x[:, 0], a, atol=1e-4) and torch.allclose(x[:, 1], a**2, atol=1e-3)
    assert f.max() < 1e-8


def test_batched_fit_no_worse_than_reference_loop():
    X, Y, _, _ = loglinear_data(runs=12, m=3, targets=2, noise=0.005, seed=3)
    _, _, reference = fit_loglinear_per_start_reference(X, Y, starts=6, seed=0, max_iter=300)
    for screen in (None, 2):  # every start to convergence, and the screened default path
        _, _, batched = fit_loglinear_batched(X, Y, starts=6, seed=0, screen_iter=screen, keep=0.5)
        assert np.all(batched <= reference * 1.0001), (screen, batched, reference)


def test_batched_fit_300_starts_50_targets_is_fast():
    X, Y, _, _ = loglinear_data(runs=30, m=8, targets=50, noise=0.005, seed=4)
    start = time.perf_counter()
    law = LogLinearLaw(starts=300).fit(X, Y)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, elapsed
    assert np.sqrt(np.mean((law.predict(X) - Y) ** 2)) < 0.01


def test_fit_report_on_clean_data():
    X, Y, _, _ = loglinear_data(runs=30, m=4, targets=3, noise=0.0005)
    law = LogLinearLaw(starts=30)
    report = law.fit_report(X, Y, folds=5)
    json.dumps(report)
    assert report["cv"] == "5-fold"
    assert all(s > 0.95 for s in report["spearman"]) and report["spearman_mean"] > 0.95
    assert report["spearman_average_loss"] > 0.95
    assert max(report["rmse"]) < 0.005 and len(report["max_abs_residual"]) == 3
    assert law.is_fitted  # the report fits the law on all runs


def test_fit_report_small_r_uses_leave_one_out_and_too_few_runs_says_so():
    X, Y, _, _ = loglinear_data(runs=9, m=3, targets=2, noise=0.0005)
    assert LogLinearLaw(starts=10).fit_report(X, Y)["cv"] == "leave-one-out"
    report = LogLinearLaw(starts=10).fit_report(X[:4], Y[:4])
    assert report["cv"] is None and "too few runs" in report["note"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda X, Y: (X[:3], Y[:3]), "needs at least 5 runs; 3 were given"),
        (lambda X, Y: (X * np.array([[1.0], [1.1]] + [[1.0]] * (len(X) - 2)), Y), "row 1 sums to 1.1"),
        (lambda X, Y: (X, np.where(np.arange(Y.size).reshape(Y.shape) == 1, np.nan, Y)), "Y[0, 1] is nan"),
        (lambda X, Y: (X, Y[:-1]), "X has 10 runs (rows) but Y has 9"),
        (lambda X, Y: (X - np.eye(len(X), X.shape[1]) * 0.5, Y), "negative weight"),
    ],
)
def test_validation_errors_name_the_problem(mutate, message):
    X, Y, _, _ = loglinear_data(runs=10, m=4, targets=2)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        LogLinearLaw(starts=2).fit(*mutate(X, Y))


def test_predict_before_fit_and_wrong_width():
    with pytest.raises(ValueError, match="not fitted"):
        LogLinearLaw().predict(np.ones((1, 3)) / 3)
    X, Y, _, _ = loglinear_data(runs=10, m=4, targets=1)
    with pytest.raises(ValueError, match="3 columns but the law was fitted on 4"):
        LinearLaw().fit(X, Y).predict(np.ones((1, 3)) / 3)


@pytest.mark.parametrize("name", sorted(LAWS))
def test_to_dict_round_trip(name):
    X, Y, _, _ = loglinear_data(runs=12, m=3, targets=2)
    law = get_law(name, **({"starts": 10} if name == "log_linear" else {})).fit(X, Y)
    loaded = MixingLaw.from_dict(json.loads(json.dumps(law.to_dict())))
    assert type(loaded) is type(law) and loaded.config() == law.config()
    np.testing.assert_allclose(loaded.predict(X), law.predict(X))


def test_registry_and_did_you_mean():
    assert set(available_laws()) >= {"log_linear", "linear"}
    assert isinstance(get_law("log_linear", starts=5), LogLinearLaw)
    with pytest.raises(ValueError, match="Did you mean 'log_linear'"):
        get_law("log_linar")
    with pytest.raises(ValueError, match=r"Known mixing laws: \['gaussian_process', 'linear', 'log_linear'"):
        get_law("gp")


def test_linear_law_is_exact_on_linear_data():
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(5), size=8)
    a = rng.normal(size=(2, 5))
    law = LinearLaw().fit(X, 3.0 + X @ a.T)
    X_new = rng.dirichlet(np.ones(5), size=20)
    np.testing.assert_allclose(law.predict(X_new), 3.0 + X_new @ a.T, atol=1e-10)
    assert law.num_parameters(5) == 5


def test_batched_cross_validation_equals_refitting_fold_by_fold():
    from hf_datamix.laws import MixingLaw

    rng = np.random.default_rng(3)
    X = rng.dirichlet(np.ones(4), size=11)
    Y = np.exp(rng.uniform(0, 0.5, 3)) + np.exp(X @ rng.normal(0, 1, (3, 4)).T) + rng.normal(0, 0.01, (11, 3))
    law = LogLinearLaw(starts=40).fit(X, Y)
    tests = np.array_split(np.random.default_rng(0).permutation(11), 11)
    batched = law._heldout_predictions(X, Y, tests, seed=0)
    one_by_one = MixingLaw._heldout_predictions(law, X, Y, tests, seed=0)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4)


def test_a_large_batched_fit_runs_on_the_process_s_cores_and_finds_the_same_law(monkeypatch):
    from hf_datamix import lbfgs
    from hf_datamix.laws.log_linear import fit_loglinear_batched

    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(4), size=24)
    Y = 2.0 + np.exp(X @ rng.normal(scale=0.3, size=(4, 3)))
    alone = fit_loglinear_batched(X, Y, starts=20)  # 20 x 3 x 24 elements: one thread
    assert lbfgs.threads_for(20 * 3 * 24) == 1
    before, seen = torch.get_num_threads(), []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n))[1])
    monkeypatch.setattr(lbfgs, "THREADED_FROM", 100)
    monkeypatch.setattr(lbfgs.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    share = min(before, 4)  # 8 cores shared by 2 processes on the node, at most torch's default
    assert lbfgs.threads_for(20 * 3 * 24) == share
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert lbfgs.threads_for(20 * 3 * 24) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    threaded = fit_loglinear_batched(X, Y, starts=20)
    assert seen == [share, before] and torch.get_num_threads() == before  # restored afterwards
    for a, b in zip(alone, threaded):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_fit_device_keeps_small_fits_on_the_cpu_and_sends_large_ones_to_the_gpu(monkeypatch):
    from hf_datamix import lbfgs

    assert lbfgs.fit_device(10, "auto").type == "cpu"
    assert lbfgs.fit_device(10**9, "cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lbfgs.fit_device(10**9, "auto").type == "cpu"  # no GPU: the CPU, whatever the size
    with pytest.raises(ValueError, match="device='cuda' but torch sees no CUDA device"):
        lbfgs.fit_device(10, "cuda")
    with pytest.raises(ValueError, match="device='gpu'"):
        lbfgs.fit_device(10, "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)  # e.g. LOCAL_RANK 3's GPU
    assert lbfgs.fit_device(lbfgs.THREADED_FROM - 1, "auto").type == "cpu"
    assert lbfgs.fit_device(lbfgs.THREADED_FROM, "auto") == torch.device("cuda", 3)
    assert lbfgs.fit_device(10, "cuda") == torch.device("cuda", 3)


def test_a_law_fit_makes_every_tensor_on_its_fit_device(monkeypatch):
    # With torch's default device set to "meta", any tensor the fit made without naming its device would
    # land there and fail against the CPU tensors: so the fit also runs whole on a GPU named as its device.
    import hf_datamix.laws.log_linear as log_linear

    X, Y, _, _ = loglinear_data(runs=24, m=3, targets=2)
    expected = fit_loglinear_batched(X, Y, starts=8, device="cpu")
    monkeypatch.setattr(log_linear, "fit_device", lambda elements, requested: torch.device("cpu"))
    torch.set_default_device("meta")
    try:
        found = fit_loglinear_batched(X, Y, starts=8, device="cuda")
        folds = log_linear.fit_loglinear_folds(X, Y, np.eye(2, 24, dtype=bool) == 0, starts=8, device="cuda")
    finally:
        torch.set_default_device(None)
    for a, b in zip(expected, found):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert folds[0].shape == (2, 2) and np.isfinite(folds[2]).all()


def test_log_linear_law_names_a_bad_fit_device_and_loads_laws_recorded_before_it():
    with pytest.raises(ValueError, match="device='gpu'"):
        LogLinearLaw(device="gpu")
    law = LogLinearLaw(starts=8).fit(*loglinear_data(runs=24, m=3, targets=2)[:2])
    record = law.to_dict()
    assert record["config"]["device"] == "auto"
    del record["config"]["device"]  # a mixtures.json written before the setting existed
    np.testing.assert_allclose(MixingLaw.from_dict(record).predict([[0.2, 0.3, 0.5]]), law.predict([[0.2, 0.3, 0.5]]))


def test_a_law_fit_that_runs_out_of_gpu_memory_is_fitted_on_the_cpu(monkeypatch, caplog):
    import hf_datamix.laws.log_linear as log_linear

    X, Y, _, _ = loglinear_data(runs=24, m=3, targets=2)
    expected = fit_loglinear_batched(X, Y, starts=8, device="cpu")
    real, devices = log_linear._fit_groups_on, []

    def fit_on(on, *args):
        devices.append(on.type)
        if on.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (the model being trained holds it)")
        return real(on, *args)

    monkeypatch.setattr(log_linear, "fit_device", lambda elements, requested: torch.device("cuda", 0))
    monkeypatch.setattr(log_linear, "_fit_groups_on", fit_on)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with caplog.at_level("WARNING", logger="hf_datamix.laws.log_linear"):
        found = fit_loglinear_batched(X, Y, starts=8)
    assert devices == ["cuda", "cpu"] and "ran out of GPU memory" in caplog.text
    for a, b in zip(expected, found):
        np.testing.assert_allclose(a, b, rtol=1e-12)
