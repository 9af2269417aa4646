"""Bad inputs fail before any data is read or step is run, naming the field, the value and the fix."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer, DomainSet, DomainSpec, Mixture, create_strategy
from hf_datamix.continual import split_steps
from hf_datamix.recipe_args import RunArguments, load_domains


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_packing(monkeypatch):
    """Any packing (reading or tokenising a domain) fails the test: the error must come before it."""
    import hf_datamix.trainer as trainer_module

    def packed(*args, **kwargs):
        raise AssertionError("a domain was packed before the bad input was reported")

    monkeypatch.setattr(trainer_module, "pack_domains", packed)


def trainer(tmp_path, tokenizer, domains=None, **overrides):
    args = datamix_args(tmp_path, **overrides)
    return DataMixTrainer(
        model=tiny_llama(len(tokenizer)), args=args, domains=domains or make_domain_set(), processing_class=tokenizer
    )


def test_fixed_weights_must_name_every_domain(tmp_path, tokenizer, no_packing):
    with pytest.raises(
        ValueError,
        match=r"strategy 'fixed': weights=\{'alpha': 1.0\} give no weight to domains "
        r"\['beta', 'gamma'\].*a weight of 0 leaves a domain out",
    ):
        trainer(tmp_path, tokenizer, strategy="fixed", strategy_args={"weights": {"alpha": 1.0}})
    with pytest.raises(ValueError, match=r"strategy 'fixed': weights=.*unknown domain\(s\) \['zeta'\]"):
        trainer(
            tmp_path,
            tokenizer,
            strategy="fixed",
            strategy_args={"weights": {"alpha": 1, "beta": 0, "gamma": 0, "zeta": 1}},
        )


def test_strategy_settings_of_the_wrong_type_are_named(no_packing):
    with pytest.raises(
        ValueError,
        match=r"simulator 'lora_probes': probe_steps='abc' is not a whole number; "
        r"e.g. --probe_steps 100 "
        r"\(probe_steps: Optimizer steps per probe, >= 1",
    ):
        create_strategy("op_mix", {"probe_steps": "abc"})
    with pytest.raises(ValueError, match=r"probe_bf16='yes' is not true or false"):
        create_strategy("op_mix", {"probe_bf16": "yes"})
    with pytest.raises(ValueError, match=r"strategy 'op_mix': kl='much' is not a number"):
        create_strategy("op_mix", {"kl": "much"})
    assert create_strategy("op_mix", {"probe_steps": 20.0, "kl": 1}).simulator.config.probe_steps == 20


def test_op_mix_probe_steps_scale_to_the_run():
    from hf_datamix.strategies.base import DecisionContext

    probes = create_strategy("op_mix").simulator
    context = DecisionContext(step=8, max_steps=40, stage=0, domains=make_domain_set(), token_counts={})
    assert probes.probe_steps(context) == 4  # 10 % of a 40-step pretraining run
    context.max_steps = 10**6
    assert probes.probe_steps(context) == 5000  # the paper's
    update = make_domain_set(["alpha", "beta"]).add(make_domain_set(["gamma"])["gamma"])
    context = DecisionContext(step=0, max_steps=100, stage=1, domains=update.domains, token_counts={}, update=update)
    assert probes.probe_steps(context) == 25  # a quarter of a continual stage
    assert create_strategy("op_mix", {"probe_steps": 7}).simulator.probe_steps(context) == 7


def test_midtrain_steps_must_cover_every_stage(caplog):
    with pytest.raises(ValueError, match=r"--max_steps 0 is the total over the 3 continual stage\(s\).*at least 3"):
        split_steps(0, 3)
    with caplog.at_level(logging.WARNING, logger="hf_datamix"):
        assert split_steps(301, 3) == 100
    assert "the last 1 are not trained" in caplog.text


def test_a_corrupt_init_mixture_is_named_before_any_packing(tmp_path, tokenizer, no_packing):
    bad = tmp_path / "mixture.json"
    bad.write_text('{"weights": {"alpha": 0.5,')
    with pytest.raises(ValueError, match=r"init_mixture='.*mixture.json'.*is not a mixture file \(Expecting"):
        trainer(tmp_path, tokenizer, init_mixture=str(bad))


def test_domain_files_that_are_missing_or_empty_are_named(tmp_path, tokenizer, no_packing):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text(json.dumps({"text": "a b c"}) + "\n")
    with pytest.raises(ValueError, match=r"Domain 'e': train='.*empty.jsonl' is an empty file"):
        trainer(tmp_path, tokenizer, domains=DomainSet([DomainSpec("e", train=str(empty), eval=str(evaluation))]))
    with pytest.raises(
        ValueError, match=r"Domain 'm': train='data/code.jsonl' is no file or folder \(paths are relative"
    ):
        DomainSpec("m", train="data/code.jsonl", eval=str(evaluation)).load()  # never tried as a Hub dataset


def test_offline_hub_mixture_says_the_hub_was_not_reached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"'me/x'.*the Hub could not be reached \(HF_HUB_OFFLINE is set\)"):
        Mixture.from_pretrained("me/x")


def test_law_options_that_are_not_json_name_the_flag(capsys):
    from hf_datamix.cli import main

    assert (
        main(["fit", "--ratios", "r.csv", "--metrics", "m.csv", "--out", "o.json", "--law-options", "{starts: 5"]) == 2
    )
    assert "--law-options must be a JSON object" in capsys.readouterr().err


def test_domains_file_with_a_top_level_domains_key(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    (tmp_path / "my_domains.yaml").write_text(f"domains:\n  code: {{train: {tmp_path / 'a.jsonl'}, eval_size: 1}}\n")
    assert load_domains(RunArguments(domains=str(tmp_path / "my_domains.yaml"))).names == ["code"]


def test_a_recipe_prints_an_input_error_once_before_any_work(tmp_path):
    # midtrain.py checked the strategy only after pretraining its base model; errors came in two tracebacks.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "recipes", "midtrain.py"),
            "--output_dir",
            str(tmp_path),
            "--probe_stepz",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("unknown flag(s) ['--probe_stepz'] (--probe_stepz: did you mean --probe_steps?)") == 1
    assert result.stderr.startswith("midtrain.py: error: ") and not os.path.exists(tmp_path / "pretrain")
