"""``calibrated``: LoRA-probe scores corrected by a few real branches, end to end on a tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import datamix_args, make_domain_set, tiny_llama
from test_branches import BranchAt, losses, run

from hf_datamix import DataMixTrainer, create_strategy
from hf_datamix.continual import plan_stages, run_continual
from hf_datamix.simulate.base import create_simulator
from hf_datamix.simulate.calibrated import Calibrated, fit_affine, spanning


FAST = dict(probe_steps=2, probe_batch_size=2, eval_blocks=2, branch_steps=2)


def test_affine_fit_is_exact_on_affine_scores():
    rng = np.random.default_rng(0)
    lora = rng.normal(3.0, 0.2, size=(5, 2))
    real = np.array([0.5, -1.0]) + np.array([2.0, 0.7]) * lora
    fit = fit_affine(lora, real)
    np.testing.assert_allclose(fit.a, [0.5, -1.0], atol=1e-10)
    np.testing.assert_allclose(fit.b, [2.0, 0.7], atol=1e-10)
    np.testing.assert_allclose(fit.apply(lora), real, atol=1e-10)
    assert fit.reasons == [None, None]
    two = fit_affine([[1.0], [2.0]], [[5.0], [5.5]])  # two points: the line through them
    assert (two.a[0], two.b[0]) == pytest.approx((4.5, 0.5))


def test_affine_fit_falls_back_to_a_shift_and_says_why():
    fit = fit_affine([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]], [[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    assert list(fit.b) == [1.0, 1.0]
    assert fit.a == pytest.approx([0.0, 0.0])  # mean(real - lora) = 0 in both columns
    assert "slope -1 <= 0" in fit.reasons[0] and "do not spread" in fit.reasons[1]
    record = fit.to_dict(["x", "y"])
    assert record["x"]["mode"] == "shift" and record["y"]["reason"] == fit.reasons[1]


def test_calibration_candidates_span_the_probe_scores():
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    assert spanning(scores, 2) == [1, 2]
    assert spanning(scores, 3) == [1, 0, 2]
    assert spanning(scores, 4) == [1, 3, 4, 2]
    assert spanning(scores[:2], 3) == [1, 0]


def test_op_mix_decides_through_calibrated_probes(tmp_path, tokenizer):
    strategy = create_strategy("op_mix", simulator="calibrated", law_starts=20, **FAST)
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        args=datamix_args(tmp_path, max_eval_blocks=3),
        domains=make_domain_set(),
        strategy=strategy,
        processing_class=tokenizer,
    )
    trainer.train()
    decision = [r for r in json.load(open(tmp_path / "mixtures.json")) if r["kind"] == "decision"][0]
    calibration = decision["calibration"]
    assert decision["simulator"] == "calibrated"
    assert set(decision["lora_probes"]["probes"]) == {"old", "d0", "d1", "d2"}
    branched = calibration["branched"]
    assert len(branched) == 3 and len(set(branched)) == 3
    observed = np.array(decision["observed"])
    np.testing.assert_allclose(observed[branched], calibration["branch_scores"])
    np.testing.assert_allclose(np.array(decision["candidates"]).shape, (12, 4))
    assert set(calibration["fit"]) == {"alpha", "beta", "gamma"} and "encodings" not in decision["lora_probes"]
    a = np.array([calibration["fit"][t]["a"] for t in decision["targets"]])
    b = np.array([calibration["fit"][t]["b"] for t in decision["targets"]])
    others = [i for i in range(len(observed)) if i not in branched]
    np.testing.assert_allclose(observed[others], a + b * np.array(calibration["lora_Y"])[others])
    n = trainer.num_params
    assert calibration["tokens"] == 3 * 2 * 2 * 32  # 3 branches x 2 steps x batch 2 x 32 tokens
    by_kind = json.load(open(tmp_path / "compute.json"))["by_kind"]
    assert by_kind["branch"] == pytest.approx(6 * n * calibration["tokens"])
    assert by_kind["probe"] > 0


def test_calibrated_restores_the_run_and_puts_branch_scores_in_y(tmp_path, tokenizer):
    plain = run(tmp_path / "plain", tokenizer, "uniform")
    found = {}

    def simulate(context):
        trainer = context.trainer
        optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
        params = [p.detach().clone() for p in trainer.model.parameters()]
        state = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in optimizer.state.items()}
        found["sim"] = Calibrated(calibration_branches=2, **FAST).simulate(
            context,
            context.mixture,
            candidates=[
                context.mixture,
                {"alpha": 0.6, "beta": 0.3, "gamma": 0.1},
                {"alpha": 0.1, "beta": 0.2, "gamma": 0.7},
            ],
        )
        found["params"] = all(torch.equal(a, b) for a, b in zip(params, trainer.model.parameters()))
        found["state"] = state and all(
            torch.equal(v, optimizer.state[p][k]) for p in optimizer.state for k, v in state[id(p)].items()
        )

    branched = run(tmp_path / "calibrated", tokenizer, BranchAt(3, simulate))
    assert found["params"] and found["state"]
    assert losses(branched) == losses(plain)  # the run goes on as if nothing had happened
    sim = found["sim"]
    calibration = sim.record["calibration"]
    rows = calibration["branched"]
    np.testing.assert_allclose(sim.Y[rows], calibration["branch_scores"])
    lora = np.array(sim.record["lora_probes"]["encodings"]["spread"]["Y"])
    np.testing.assert_allclose(lora[rows], calibration["lora_scores"])
    # The others: the fitted map of their probe scores; with 2 points the map goes through both.
    a = np.array([calibration["fit"][t]["a"] for t in sim.targets])
    b = np.array([calibration["fit"][t]["b"] for t in sim.targets])
    other = [i for i in range(3) if i not in rows]
    np.testing.assert_allclose(sim.Y[other], a + b * lora[other])
    affine = [j for j, t in enumerate(sim.targets) if calibration["fit"][t]["mode"] == "affine"]
    assert affine  # (on this tiny run one target's slope is positive, the others' fall back to a shift)
    np.testing.assert_allclose((a + b * lora[rows])[:, affine], sim.Y[rows][:, affine], atol=1e-9)
    np.testing.assert_allclose(sim.mixtures()[1], [0.6, 0.3, 0.1], atol=1e-9)
    assert branched.ledger.by_kind["branch"] > 0 and branched.ledger.by_kind["probe"] > 0


def test_continual_stage_calibrates_the_interpolation(tmp_path, tokenizer):
    args = datamix_args(tmp_path, max_steps=3, max_eval_blocks=3)
    stages = plan_stages(make_domain_set(), ["alpha"], [["beta"]], 3)
    strategy = create_strategy("op_mix", simulator="calibrated", law_starts=20, alpha_points=3, **FAST)
    run_continual(tiny_llama(len(tokenizer)), tokenizer, args, stages, strategy, report=lambda t: None)
    decision = [r for r in json.load(open(tmp_path / "mixtures.json")) if r["kind"] == "decision"][0]
    calibration = decision["calibration"]
    assert calibration["branched"] and decision["alphas"] == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(np.array(decision["observed"])[calibration["branched"]], calibration["branch_scores"])


@pytest.mark.parametrize("count", [1, 5])
def test_calibration_branches_out_of_range_are_refused_by_name(count):
    with pytest.raises(
        ValueError, match=f"calibrated settings out of range: calibration_branches={count} \\(must be in 2..4\\)"
    ):
        create_simulator("calibrated", calibration_branches=count)
    with pytest.raises(ValueError, match=f"calibration_branches={count}"):
        create_strategy("op_mix", simulator="calibrated", calibration_branches=count)
    with pytest.raises(ValueError, match="probe_steps=0"):
        create_simulator("calibrated", probe_steps=0)


def test_calibrated_runs_on_every_process_when_probes_or_branches_do():
    def trainer(world):
        return SimpleNamespace(is_deepspeed_enabled=False, args=SimpleNamespace(world_size=world))

    simulator = Calibrated()
    assert simulator.runs_on_every_process(trainer(2)) is True
    assert simulator.runs_on_every_process(trainer(1)) is False
