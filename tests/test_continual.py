"""Continual runs: stage plans, the sequential/replay/retrain baselines, outputs, resume across stages."""

from __future__ import annotations

import json

import pytest
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import create_strategy
from hf_datamix.continual import find_resume_point, plan_stages, run_continual


STEPS = 3


def args_for(path, **overrides):
    return datamix_args(path, **{"max_steps": STEPS, "save_steps": 2, "seed": 3, "max_eval_blocks": 4, **overrides})


def stages():
    return plan_stages(make_domain_set(), ["alpha"], [["beta"], ["gamma"]], STEPS)


def run(path, tokenizer, strategy, resume=None, settings=None, **overrides):
    return run_continual(
        tiny_llama(len(tokenizer)),
        tokenizer,
        args_for(path, **overrides),
        stages(),
        create_strategy(strategy, **(settings or {})),
        resume=resume,
        report=lambda text: None,
    )


def test_plan_stages_adds_one_domain_per_stage():
    plan = stages()
    assert [s.index for s in plan] == [1, 2]
    assert [s.domains.names for s in plan] == [["alpha", "beta"], ["alpha", "beta", "gamma"]]
    assert plan[1].update.affected == ("gamma",) and plan[1].update.unaffected == ("alpha", "beta")
    with pytest.raises(ValueError, match="unknown domains \\['zeta'\\]"):
        plan_stages(make_domain_set(), ["alpha"], [["zeta"]], 3)
    single = plan_stages(make_domain_set(), ["alpha", "beta"], [], 5)
    assert len(single) == 1 and single[0].update is None


def test_sequential_and_replay_mixtures(tmp_path, tokenizer):
    seq = run(tmp_path / "seq", tokenizer, "sequential")
    assert seq["stages"][1]["mixture"] == {"alpha": 0.0, "beta": 0.0, "gamma": 1.0}
    rep = run(tmp_path / "rep", tokenizer, "replay")
    first, second = rep["stages"][0]["mixture"], rep["stages"][1]["mixture"]
    assert first == pytest.approx({"alpha": 0.1, "beta": 0.9})
    # stage 2: 90% gamma, the old 10% split equally over alpha and beta (the reference code's replay)
    assert second == pytest.approx({"alpha": 0.05, "beta": 0.05, "gamma": 0.9})
    history = json.load(open(tmp_path / "rep" / "mixtures.json"))
    assert [r["stage"] for r in history if r["kind"] == "initial"] == [1, 2]
    assert [r["step"] for r in history if r["kind"] == "initial"] == [0, STEPS]
    results = json.load(open(tmp_path / "rep" / "results.json"))
    assert set(results[1]["eval_loss"]) == {"alpha", "beta", "gamma"}
    assert (tmp_path / "rep" / "weights.png").stat().st_size > 1000
    from hf_datamix import Mixture

    assert Mixture.from_pretrained(tmp_path / "rep").allclose(second, atol=1e-12)


def test_replay_can_split_the_old_share_by_the_previous_mixture(tmp_path, tokenizer):
    rep = run(tmp_path, tokenizer, "replay", settings={"old_split": "previous"})
    # stage 2: 90% gamma, the old 10% split by stage 1's mixture (0.1 alpha, 0.9 beta)
    assert rep["stages"][1]["mixture"] == pytest.approx({"alpha": 0.01, "beta": 0.09, "gamma": 0.9})
    with pytest.raises(ValueError, match="old_split='by_size'.*equal or previous"):
        create_strategy("replay", old_split="by_size")
    with pytest.raises(ValueError, match="new_share=1.5.*in \\[0, 1\\]"):
        create_strategy("replay", new_share=1.5)


def test_retrain_restarts_from_base_with_all_steps_so_far(tmp_path, tokenizer):
    retrain = run(tmp_path / "re", tokenizer, "retrain")
    uniform = run(tmp_path / "un", tokenizer, "uniform")
    tokens_per_step = 2 * 32
    assert retrain["compute"]["tokens_by_kind"]["train"] == (STEPS + 2 * STEPS) * tokens_per_step
    assert uniform["compute"]["tokens_by_kind"]["train"] == 2 * STEPS * tokens_per_step
    assert retrain["stages"][1]["mixture"] == pytest.approx({"alpha": 1 / 3, "beta": 1 / 3, "gamma": 1 / 3})


def test_resume_inside_a_later_stage_matches_the_uninterrupted_run(tmp_path, tokenizer):
    full = run(tmp_path / "full", tokenizer, "replay")
    stage, checkpoint = find_resume_point(str(tmp_path / "full"), True)
    assert stage == 2 and checkpoint.endswith("checkpoint-3")
    # Resume the last stage from its step-2 checkpoint in a fresh output folder.
    import shutil

    shutil.copytree(tmp_path / "full", tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "stage-2" / "checkpoint-3")
    resumed = run(tmp_path / "again", tokenizer, "replay", resume=str(tmp_path / "again" / "stage-2" / "checkpoint-2"))
    assert resumed["stages"][-1]["eval_loss"] == pytest.approx(full["stages"][-1]["eval_loss"], abs=1e-6)
    assert [r["stage"] for r in resumed["stages"]] == [1, 2]
    assert json.load(open(tmp_path / "again" / "mixtures.json")) == json.load(
        open(tmp_path / "full" / "mixtures.json")
    )
