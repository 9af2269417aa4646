import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import rel_entr

from hf_datamix import cli
from hf_datamix.fit import fit_mixture
from hf_datamix.laws import LinearLaw, LogLinearLaw
from hf_datamix.mixture import Mixture
from hf_datamix.swarm import sample_swarm, swarm_to_csv


# A known log-linear law over 4 domains and 3 targets: L_i(x) = exp(c_i) + exp(t_iᵀx).
DOMAINS = ["web", "code", "books", "math"]
TARGETS = ["t_web", "t_code", "t_math"]
C = np.log([1.8, 1.5, 1.2])
T = np.array([[-1.6, 0.4, -0.6, 0.5], [0.5, -1.8, 0.2, -0.4], [0.4, -0.3, 0.6, -1.7]])
PRIOR = {"web": 0.4, "code": 0.25, "books": 0.2, "math": 0.15}
Q = np.array([PRIOR[d] for d in DOMAINS])
# k·N_j/R with k=4, R=100: only code's cap (0.25) binds at the optimum.
TOKENS = {"web": 100, "code": 6.25, "books": 100, "math": 100}
CAPS = np.array([1.0, 0.25, 1.0, 1.0])


def true_law(X):
    return np.exp(C) + np.exp(X @ T.T)


def brute_force(kl=0.05, caps=None, step=0.01):
    k = round(1 / step)
    grid = (
        np.array(
            [(i, j, h, k - i - j - h) for i in range(k + 1) for j in range(k + 1 - i) for h in range(k + 1 - i - j)],
            dtype=float,
        )
        / k
    )
    if caps is not None:
        grid = grid[(grid <= caps + 1e-12).all(axis=1)]
    values = true_law(grid).mean(axis=1) + kl * rel_entr(grid, Q).sum(axis=1)
    return grid[np.argmin(values)]


def write_metrics(path, runs, Y, targets=TARGETS):
    with open(path, "w") as handle:
        handle.write(",".join(["run", *targets]) + "\n")
        handle.writelines(",".join([run, *(repr(float(v)) for v in row)]) + "\n" for run, row in zip(runs, Y))


@pytest.fixture(scope="module")
def swarm_dir(tmp_path_factory):
    """A 40-run swarm from sample_swarm with losses from the known law plus small noise."""
    folder = tmp_path_factory.mktemp("swarm")
    swarm = sample_swarm(DOMAINS, PRIOR, size=40, seed=3)
    X = np.array([m.to_array(DOMAINS) for m in swarm])
    Y = true_law(X) + np.random.default_rng(0).normal(0.0, 0.003, (len(X), len(TARGETS)))
    runs = [f"run{i:04d}" for i in range(len(X))]
    swarm_to_csv(swarm, folder / "ratios.csv", runs)
    write_metrics(folder / "metrics.csv", runs, Y)
    (folder / "prior.json").write_text(json.dumps({"weights": PRIOR}))  # Mixture JSON form
    (folder / "tokens.json").write_text(json.dumps(TOKENS))
    return folder


def base_args(folder, out):
    return [
        "fit",
        "--ratios",
        str(folder / "ratios.csv"),
        "--metrics",
        str(folder / "metrics.csv"),
        "--out",
        str(out),
        "--prior",
        str(folder / "prior.json"),
    ]


def check_output(out, expected, caps=None):
    mixture = Mixture.load(out)
    assert mixture.domains == DOMAINS
    np.testing.assert_allclose(mixture.to_array(), expected, atol=0.03)
    if caps is not None:
        assert (mixture.to_array() <= caps + 1e-6).all()
    data = json.loads(out.read_text())
    assert set(data["predicted"]) == set(TARGETS)
    np.testing.assert_allclose(list(data["predicted"].values()), true_law(mixture.to_array()[None])[0], atol=0.02)
    assert data["fit"]["spearman_mean"] > 0.95 and len(data["fit"]["spearman"]) == 3
    assert data["law"]["name"] == "log_linear" and data["proposal"]["status"] == "optimal"
    assert data["settings"]["kl"] == 0.05 and data["settings"]["runs"] == 40
    return data


def test_cli_recovers_known_optimum_with_caps(swarm_dir, tmp_path, capsys):
    expected = brute_force(caps=CAPS)
    assert expected[1] == pytest.approx(0.25)  # the cap binds, so this case differs from the uncapped one
    out = tmp_path / "capped.json"
    rc = cli.main(
        base_args(swarm_dir, out)
        + ["--tokens", str(swarm_dir / "tokens.json"), "--target-tokens", "100", "--max-repetition", "4"]
    )
    assert rc == 0, capsys.readouterr().err
    data = check_output(out, expected, CAPS)
    assert data["settings"]["caps"]["code"] == pytest.approx(0.25)
    assert "weights:" in capsys.readouterr().out


def test_console_script_recovers_known_optimum(swarm_dir, tmp_path):
    expected = brute_force()
    assert abs(expected[1] - 0.25) > 0.05
    script = shutil.which("hf-datamix")
    command = [script] if script else [sys.executable, "-m", "hf_datamix.cli"]
    out = tmp_path / "free.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        command + base_args(swarm_dir, out), capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    check_output(out, expected)


def test_python_api_accepts_arrays_and_dicts():
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(3), size=12)
    Y = X @ np.array([[1.0, 2.0, 3.0], [2.0, 0.5, 1.0]]).T
    from_arrays = fit_mixture((["a", "b", "c"], X), (["l1", "l2"], Y), law="linear", kl=0.1)
    as_dicts = (
        {str(i): dict(zip("abc", row)) for i, row in enumerate(X)},
        {str(i): {"l1": y[0], "l2": y[1]} for i, y in reversed(list(enumerate(Y)))},
    )  # order differs
    from_dicts = fit_mixture(*as_dicts, law="linear", kl=0.1)
    assert from_arrays["weights"] == pytest.approx(from_dicts["weights"])
    assert from_arrays["law"]["name"] == "linear" and from_arrays["settings"]["ratios"] is None
    json.dumps(from_arrays)  # everything in the result is JSON-serialisable


def _table(rows):
    return "\n".join(",".join(map(str, row)) for row in rows) + "\n"


RATIOS = [["run", "a", "b", "c"]] + [
    [f"r{i}", *np.round(w, 6)] for i, w in enumerate(np.random.default_rng(2).dirichlet(np.ones(3), size=8))
]
RATIOS[1][1:] = [0.2, 0.3, 0.5]  # exact sums on the rows the cases below edit
METRICS = [["run", "l1", "l2"]] + [[f"r{i}", 1.0 + i / 10, 2.0 - i / 10] for i in range(8)]


def _edit(table, row, col, value):
    table = [list(r) for r in table]
    table[row][col] = value
    return table


BAD_INPUTS = {
    "missing run column": (_edit(RATIOS, 0, 0, "id"), METRICS, [], "no 'run' column"),
    "missing target cell": (
        list(RATIOS),
        [r if i != 3 else r[:2] for i, r in enumerate(METRICS)],
        [],
        "run 'r2' has 2 cells but the header has 3",
    ),
    "runs do not match": (
        _edit(RATIOS, 4, 0, "r99"),
        METRICS,
        [],
        "only in ratios ['r99'], runs only in metrics ['r3']",
    ),
    "nan cell": (RATIOS, _edit(METRICS, 2, 2, "nan"), [], "run 'r1', column 'l2' is 'nan'"),
    "non-numeric cell": (RATIOS, _edit(METRICS, 5, 1, "n/a"), [], "run 'r4', column 'l1' is 'n/a'"),
    "empty cell": (_edit(RATIOS, 1, 3, ""), METRICS, [], "run 'r0', column 'c' is empty"),
    "weights do not sum to 1": (_edit(RATIOS, 1, 2, 0.4), METRICS, [], "run 'r0' sum to 1.1"),
    "negative weight": (_edit(_edit(RATIOS, 1, 2, -0.1), 1, 3, 0.9), METRICS, [], "run 'r0', column 'b' is -0.1"),
    "too few runs": (RATIOS[:3], METRICS[:3], [], "2 runs are too few: the linear law has 3 parameters"),
    "prior unknown domain": (RATIOS, METRICS, ["--prior", {"a": 0.5, "zz": 0.5}], "['zz'], which have no column"),
    "prior missing domain": (RATIOS, METRICS, ["--prior", {"a": 0.5, "b": 0.5}], "prior lacks ['c']"),
    "tokens missing domain": (
        RATIOS,
        METRICS,
        ["--tokens", {"a": 5, "b": 5}, "--target-tokens", "10"],
        "tokens lacks domains ['c']",
    ),
    "infeasible caps": (
        RATIOS,
        METRICS,
        ["--tokens", {"a": 1, "b": 1, "c": 1}, "--target-tokens", "40"],
        "caps sum to 0.3 < 1",
    ),
    "zero prior": (RATIOS, METRICS, ["--prior", {"a": 0.5, "b": 0.5, "c": 0}], "prior gives ['c'] weight 0"),
    "tokens without R": (RATIOS, METRICS, ["--tokens", {"a": 5, "b": 5, "c": 5}], "target_tokens"),
    "target weight unknown": (RATIOS, METRICS, ["--target-weights", {"l9": 2.0}], "['l9'], which have no column"),
    "unknown law": (RATIOS, METRICS, ["--law", "log_linaer"], "Did you mean 'log_linear'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_fail_before_fitting_with_named_cause(case, tmp_path, capsys, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("the law was fitted before the input was checked")

    monkeypatch.setattr(LogLinearLaw, "_fit", no_fit)
    monkeypatch.setattr(LinearLaw, "_fit", no_fit)
    ratios, metrics, extra, message = BAD_INPUTS[case]
    (tmp_path / "r.csv").write_text(_table(ratios))
    (tmp_path / "m.csv").write_text(_table(metrics))
    args = [
        "fit",
        "--ratios",
        str(tmp_path / "r.csv"),
        "--metrics",
        str(tmp_path / "m.csv"),
        "--out",
        str(tmp_path / "out.json"),
        "--law",
        "linear",
    ]
    for i, value in enumerate(extra):
        if isinstance(value, dict):
            (tmp_path / f"{i}.json").write_text(json.dumps(value))
            value = str(tmp_path / f"{i}.json")
        args.append(value)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-datamix fit: error:") and message in err, err
    assert not (tmp_path / "out.json").exists()


def test_missing_file_is_named(tmp_path, capsys):
    assert cli.main(["fit", "--ratios", str(tmp_path / "nope.csv"), "--metrics", "m.csv", "--out", "o.json"]) == 2
    assert "nope.csv' does not exist" in capsys.readouterr().err
