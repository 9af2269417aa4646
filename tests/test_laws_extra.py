import json
import sys

import numpy as np
import pytest
from scipy.special import rel_entr


pytest.importorskip("sklearn")

from hf_datamix import cli
from hf_datamix.laws import MixingLaw, available_laws, get_law
from hf_datamix.laws.gaussian_process import GaussianProcessLaw
from hf_datamix.mixture import Mixture
from hf_datamix.proposer import _project_capped_simplex, propose
from hf_datamix.swarm import swarm_to_csv


def smooth(X):
    """Two smooth, non-log-linear targets on the 3-simplex."""
    return np.column_stack([np.sin(3 * X[:, 0]) + X[:, 1] ** 2, 2.0 - X[:, 2] + 0.5 * (X[:, 0] - 0.3) ** 2])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=40)
    Y = smooth(X) + rng.normal(0.0, 0.002, (40, 2))
    return X, Y


@pytest.fixture(scope="module")
def law(data):
    return GaussianProcessLaw().fit(*data, seed=0)


def test_registered_and_fits_a_smooth_function(law):
    assert "gaussian_process" in available_laws()
    assert isinstance(get_law("gaussian_process", restarts=0), GaussianProcessLaw)
    X_test = np.random.default_rng(1).dirichlet(np.ones(3), size=200)
    error = np.abs(law.predict(X_test) - smooth(X_test))
    assert (error.max(axis=0) < 0.05 * np.ptp(smooth(X_test), axis=0)).all()
    assert law.predict(X_test[0]).shape == (1, 2)
    std = law.predict_std(X_test[:5])
    assert std.shape == (5, 2) and (std >= 0).all()
    assert law.cvxpy_terms(None) is None
    assert law.num_parameters(3) == 5 and GaussianProcessLaw(ard=False).num_parameters(3) == 3


def test_fit_report(law, data):
    report = law.fit_report(*data, seed=0)  # already fitted on these runs: only the folds refit
    assert report["law"] == "gaussian_process" and report["cv"] == "5-fold"
    assert min(report["spearman"]) > 0.9
    json.dumps(report)


def test_to_dict_round_trip_refits_with_stored_kernel(law):
    restored = MixingLaw.from_dict(json.loads(json.dumps(law.to_dict())))
    X_test = np.random.default_rng(2).dirichlet(np.ones(3), size=50)
    np.testing.assert_allclose(restored.predict(X_test), law.predict(X_test), rtol=1e-9, atol=1e-12)
    broken = law.to_dict()
    del broken["params"]["theta"]
    with pytest.raises(ValueError, match="lack 'theta'"):
        MixingLaw.from_dict(broken)


def test_proposer_random_search_honours_caps(law):
    caps = np.array([0.3, 0.5, 0.6])
    proposal = propose(law, np.ones(3) / 3, kl=0.05, caps=caps, domains=["a", "b", "c"], samples=5000)
    assert proposal.status == "sampled" and proposal.solver == "random_search"
    assert (proposal.x <= caps + 1e-9).all() and proposal.x.sum() == pytest.approx(1.0)
    # The search includes the uniform point projected onto the caps, so it can only do better.
    start = _project_capped_simplex(np.ones((1, 3)) / 3, caps)
    start_value = law.predict(start).mean() + 0.05 * rel_entr(start[0], np.ones(3) / 3).sum()
    assert proposal.objective <= start_value + 1e-9
    assert proposal.mixture().domains == ["a", "b", "c"]


def test_cli_fit_with_gaussian_process(data, tmp_path, capsys):
    X, Y = data
    runs = [f"r{i}" for i in range(len(X))]
    swarm_to_csv([Mixture.from_array(["a", "b", "c"], row) for row in X], tmp_path / "ratios.csv", runs)
    (tmp_path / "metrics.csv").write_text(
        "run,l1,l2\n" + "".join(f"{r},{float(y[0])!r},{float(y[1])!r}\n" for r, y in zip(runs, Y))
    )
    rc = cli.main(
        [
            "fit",
            "--ratios",
            str(tmp_path / "ratios.csv"),
            "--metrics",
            str(tmp_path / "metrics.csv"),
            "--out",
            str(tmp_path / "out.json"),
            "--law",
            "gaussian_process",
            "--law-options",
            '{"restarts": 0}',
            "--tokens",
            json_file(tmp_path, {"a": 3, "b": 5, "c": 6}),
            "--target-tokens",
            "40",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    mixture = Mixture.load(tmp_path / "out.json")
    assert (mixture.to_array() <= np.array([0.3, 0.5, 0.6]) + 1e-9).all()
    assert json.loads((tmp_path / "out.json").read_text())["proposal"]["status"] == "sampled"


def json_file(folder, value):
    path = folder / "tokens.json"
    path.write_text(json.dumps(value))
    return str(path)


def test_missing_sklearn_gives_install_hint(monkeypatch):
    for name in [n for n in sys.modules if n == "sklearn" or n.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"pip install scikit-learn.*hf_datamix\[gp\]"):
        GaussianProcessLaw()
