"""A real tracker: the TensorBoard event file of a tiny run holds the mixture and each decision's summary."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer, Mixture, Strategy
from hf_datamix.proposer import fit_and_propose
from hf_datamix.strategies.base import Decision
from hf_datamix.tracking import decision_scalars


event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

DOMAINS = ("alpha", "beta", "gamma")


class LawStrategy(Strategy):
    """Test strategy: at step 2, fits the real law on synthetic candidates and takes its proposal."""

    name = "law_test"
    description = "test"

    def next_decision_step(self, step, max_steps):
        return 2 if step <= 2 else None

    def decide(self, context):
        X = np.random.default_rng(0).dirichlet(np.ones(3), size=12)
        Y = np.stack(
            [1.0 + np.exp(-2.0 * X[:, j]) for j in range(3)], axis=1
        )  # each domain's loss falls with its weight
        names = context.domains.names
        mixture, record = fit_and_propose(
            X, Y, names, {}, names, np.full(3, 1 / 3), law="log_linear", law_starts=4, kl=0.1, caps=None, seed=0
        )
        return Decision(mixture, record)


def test_tensorboard_event_file_holds_mixture_and_decision(tmp_path, tokenizer):
    args = datamix_args(tmp_path, max_steps=4, logging_steps=1, report_to=["tensorboard"])
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        args=args,
        domains=make_domain_set(),
        strategy=LawStrategy(),
        processing_class=tokenizer,
    )
    trainer.train()
    (events,) = glob.glob(str(tmp_path / "runs" / "*" / "events.out.tfevents.*"))
    accumulator = event_accumulator.EventAccumulator(events, size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    # Trainer's TensorBoardCallback files training logs under "train/": one point per logging step.
    for name in DOMAINS:
        points = accumulator.Scalars(f"train/mix/{name}")
        assert [p.step for p in points] == [1, 2, 3, 4], name
        assert points[0].value == pytest.approx(1 / 3)
    record = next(r for r in trainer.history if r["kind"] == "decision")
    expected = decision_scalars(record)
    assert {
        "decision/predicted_avg_loss",
        "decision/observed_avg_loss",
        "decision/fit_rmse",
        "decision/fit_heldout_spearman",
        *(f"decision/weight/{d}" for d in DOMAINS),
    } <= set(expected)
    for key, value in expected.items():
        (point,) = accumulator.Scalars(f"train/{key}")
        assert point.step == 2 and point.value == pytest.approx(value, rel=1e-5), key
    assert tags >= {f"train/{key}" for key in expected}
    # The decided weights are the mixture logged from the step it applies (t + 2).
    applied = accumulator.Scalars("train/mix/alpha")[-1].value
    assert applied == pytest.approx(record["weights"]["alpha"], rel=1e-5)


def test_decision_scalars_compare_prediction_with_the_nearest_candidate():
    record = {
        "kind": "decision",
        "weights": {"a": 0.25, "b": 0.75},
        "seconds": 1.5,
        "targets": ["a", "b"],
        "candidates": [[0.9, 0.1], [0.2, 0.8]],
        "observed": [[3.0, 5.0], [4.0, 2.0]],
        "proposal": {"x": [0.25, 0.75], "predicted": [3.9, 2.1]},
        "fit": {"rmse": [0.1, 0.3], "spearman_mean": 0.5},
    }
    scalars = decision_scalars(record)
    assert scalars["decision/predicted_loss/b"] == 2.1 and scalars["decision/predicted_avg_loss"] == pytest.approx(3.0)
    assert scalars["decision/observed_loss/a"] == 4.0 and scalars["decision/observed_avg_loss"] == 3.0
    assert scalars["decision/nearest_candidate_l1"] == pytest.approx(0.1)
    assert scalars["decision/fit_rmse"] == pytest.approx(0.2) and scalars["decision/fit_heldout_spearman"] == 0.5
    kept = decision_scalars({"kind": "kept", "weights": Mixture.uniform(["a", "b"]).to_dict()})
    assert kept == {"decision/weight/a": 0.5, "decision/weight/b": 0.5, "decision/changed": 0.0}


def test_a_shipped_recipe_config_reports_to_tensorboard():
    from hf_datamix import DataMixArguments
    from hf_datamix.recipe_args import RunArguments, parse_args

    config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "configs", "pretrain_gpu.yaml")
    *_, args = parse_args(
        (RunArguments, DataMixArguments), argv=["--config", config, "--bf16", "false", "--optim", "adamw_torch"]
    )
    assert args.report_to == ["tensorboard"] and args.eval_strategy == "steps"
