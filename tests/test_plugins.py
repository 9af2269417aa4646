"""A plugin package registers a strategy, a law and a simulator through the three entry-point groups.

``tests/plugin_pkg`` is installed with pip into a folder of its own, which is then put on the path
(here, and of the ``hf-datamix`` process): ``reverse_alpha``, ``ridge_linear`` and ``held_out_now``
are found like built-ins by ``hf-datamix fit --law ridge_linear``, an op_mix run with
``simulator=held_out_now``, a recipe's ``--help`` and the strategy contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import datamix_args, make_domain_set, pip_available, pip_installed, tiny_llama

from hf_datamix import DataMixArguments, DataMixTrainer, available_strategies, create_strategy
from hf_datamix.laws import LAWS, available_laws
from hf_datamix.recipe_args import RunArguments, parse_args
from hf_datamix.simulate.base import SIMULATORS, available_simulators
from hf_datamix.strategies.registry import STRATEGIES


ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not pip_available(), reason="pip is not available, so the plugin cannot be installed")


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The plugin installed; its folder on this process's path too (entry points are read on every lookup)."""
    with (
        pip_installed(ROOT / "tests" / "plugin_pkg", tmp_path_factory.mktemp("plugin")) as env,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.syspath_prepend(env["PYTHONPATH"].split(os.pathsep)[0])
        yield env
        for registry in (STRATEGIES, LAWS, SIMULATORS):  # the plugin's classes must not outlive its folder
            registry._loaded.clear()


def test_the_plugins_entries_are_listed(plugin_env, capsys):
    from hf_datamix.cli import main

    assert "reverse_alpha" in available_strategies()
    assert "ridge_linear" in available_laws() and "held_out_now" in available_simulators()
    assert main(["simulators"]) == main(["laws"]) == 0
    out = capsys.readouterr().out
    assert "held_out_now  Test plugin: current decision-split loss" in out and "ridge_linear" in out


def test_hf_datamix_fit_uses_the_plugins_law(plugin_env, tmp_path):
    weights = [0.1, 0.3, 0.5, 0.7, 0.9]
    (tmp_path / "r.csv").write_text(
        "run,a,b\n" + "".join(f"r{i},{w:.2f},{1 - w:.2f}\n" for i, w in enumerate(weights))
    )
    (tmp_path / "m.csv").write_text(
        "run,a,b\n" + "".join(f"r{i},{3 - w:.3f},{2 + w:.3f}\n" for i, w in enumerate(weights))
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_datamix.cli",
            "fit",
            "--ratios",
            "r.csv",
            "--metrics",
            "m.csv",
            "--out",
            "mix.json",
            "--law",
            "ridge_linear",
            "--law-options",
            '{"ridge": 0.01}',
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=plugin_env,
    )
    assert done.returncode == 0 and "law ridge_linear on 5 runs" in done.stdout, done.stderr
    result = json.loads((tmp_path / "mix.json").read_text())
    assert result["law"]["name"] == "ridge_linear" and result["law"]["config"] == {"ridge": 0.01}


def test_op_mix_runs_with_the_plugins_simulator_and_law(plugin_env, tmp_path, tokenizer):
    strategy = create_strategy("op_mix", simulator="held_out_now", now_candidates=5, law="ridge_linear")
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        args=datamix_args(tmp_path, max_steps=3),
        domains=make_domain_set(),
        strategy=strategy,
        processing_class=tokenizer,
    )
    trainer.train()
    initial, decision = trainer.history[0], next(r for r in trainer.history if r["kind"] == "decision")
    assert initial["settings"]["simulator"] == "held_out_now" and initial["settings"]["now_candidates"] == 5
    assert decision["simulator"] == "held_out_now" and decision["law"]["name"] == "ridge_linear"
    assert len(decision["candidates"]) == 5 and abs(sum(decision["weights"].values()) - 1) < 1e-9


def test_a_recipe_lists_the_plugins_simulator_settings(plugin_env, capsys):
    with pytest.raises(SystemExit):
        parse_args(
            (RunArguments, DataMixArguments), argv=["--strategy", "op_mix", "--simulator", "held_out_now", "--help"]
        )
    out = capsys.readouterr().out
    assert "held_out_now simulator settings" in out and "--now_candidates" in out and "--probe_steps" not in out


def test_the_contract_covers_the_plugins_strategy(plugin_env, tmp_path, tokenizer):
    from test_contract import check_contract

    check_contract("reverse_alpha", tmp_path, tokenizer, chat_tokenizer=None)
