"""op_mix end to end on a tiny model: pretraining and continual decisions, records, ledger, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer, create_strategy
from hf_datamix.continual import plan_stages, run_continual


FAST = dict(probe_steps=4, law_starts=20, eval_blocks=3, probe_batch_size=2)


def make_args(path, **overrides):
    return datamix_args(path, **{"save_steps": 3, "max_eval_blocks": 3, **overrides})


def train(path, tokenizer, resume=None, model_seed=0, strategy_args=None, **overrides):
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer), seed=model_seed),
        args=make_args(path, **overrides),
        domains=make_domain_set(),
        strategy=create_strategy("op_mix", **{**FAST, **(strategy_args or {})}),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_pretraining_decision_after_warmup(tmp_path, tokenizer):
    trainer = train(tmp_path, tokenizer, strategy_args={"save_probe_adapters": True})
    history = json.load(open(tmp_path / "mixtures.json"))
    initial, decision = history
    assert initial["weights"] == pytest.approx({"alpha": 1 / 3, "beta": 1 / 3, "gamma": 1 / 3})
    assert decision["kind"] == "decision" and decision["step"] == 2  # 20 % of 10 steps
    assert decision["collapsed_domains"] == ["op_mix:old", "alpha", "beta", "gamma"]
    X, Y = np.array(decision["candidates"]), np.array(decision["observed"])
    assert X.shape == (12, 4) and Y.shape == (12, 3)
    np.testing.assert_allclose(X.sum(axis=1), 1.0)
    assert np.array(decision["predicted"]).shape == (12, 3)
    assert decision["proposal"]["status"]
    # p_d = w_old * old_d + w_d
    x = decision["proposal"]["x"]
    expected = {d: x[0] / 3 + x[i + 1] for i, d in enumerate(["alpha", "beta", "gamma"])}
    assert decision["weights"] == pytest.approx(expected, abs=1e-6)
    assert set(decision["probes"]) == {"old", "d0", "d1", "d2"}
    by_kind = json.load(open(tmp_path / "compute.json"))["by_kind"]
    n = trainer.num_params
    assert by_kind["probe"] == pytest.approx(4 * n * 4 * 4 * 2 * 32)  # 4 probes x 4 steps x batch 2 x 32 tokens, 4N
    assert by_kind["eval"] > 2 * n * 12 * 9 * 32 - 1  # at least the 12 candidates on 3x3 blocks
    assert trainer.interleaver.weights_at(3 * trainer.samples_per_step).allclose(decision["weights"], atol=1e-9)
    assert (tmp_path / "law_fit.png").stat().st_size > 5000
    saved = tmp_path / "probe_adapters" / "stage0-step2"
    assert sorted(p.name for p in saved.iterdir() if p.is_dir()) == ["d0", "d1", "d2", "old"]
    assert (saved / "old" / "adapter_config.json").is_file()


def test_continual_stage_decision_splits_old_by_previous_mixture(tmp_path, tokenizer):
    args = make_args(tmp_path, max_steps=3)
    stages = plan_stages(make_domain_set(), ["alpha"], [["beta"], ["gamma"]], 3)
    result = run_continual(
        tiny_llama(len(tokenizer)), tokenizer, args, stages, create_strategy("op_mix", **FAST), report=lambda t: None
    )
    history = json.load(open(tmp_path / "mixtures.json"))
    decisions = [r for r in history if r["kind"] == "decision"]
    assert [d["stage"] for d in decisions] == [1, 2] and all(d["stage_step"] == 0 for d in decisions)
    stage2 = decisions[1]
    assert stage2["collapsed_domains"] == ["op_mix:old", "op_mix:new"]
    assert stage2["alphas"] == pytest.approx(np.linspace(0, 1, 9).tolist())
    assert np.array(stage2["candidates"])[:, 1] == pytest.approx(0.1 + 0.8 * np.linspace(0, 1, 9))
    previous = result["stages"][0]["mixture"]
    old_share = stage2["proposal"]["x"][0]
    w = stage2["weights"]
    assert w["alpha"] / w["beta"] == pytest.approx(previous["alpha"] / previous["beta"], rel=1e-6)
    assert w["alpha"] + w["beta"] == pytest.approx(old_share, abs=1e-6)
    assert set(result["compute"]["by_kind"]) >= {"train", "probe", "eval"}
    assert (tmp_path / "candidates.png").stat().st_size > 5000


def test_redecide_every_n_steps_and_resume_restores_the_same_decisions(tmp_path, tokenizer):
    args = dict(strategy_args={"redecide_every": 3}, max_steps=8)
    full = train(tmp_path / "full", tokenizer, **args)
    history = json.load(open(tmp_path / "full" / "mixtures.json"))
    assert [r["step"] for r in history if r["kind"] == "decision"] == [2, 5]
    # Resume from step 3 (after the first decision, before the second) in a fresh folder.
    resumed = train(
        tmp_path / "again", tokenizer, resume=str(tmp_path / "full" / "checkpoint-3"), model_seed=9, **args
    )
    again = json.load(open(tmp_path / "again" / "mixtures.json"))
    assert [r["weights"] for r in again] == [r["weights"] for r in history]
    assert [r.get("observed") for r in again] == [r.get("observed") for r in history]
    assert resumed.state.log_history[-1]["train_loss"] is not None
    del full


def test_diverged_probes_keep_the_current_mixture(tmp_path, tokenizer, caplog):
    with caplog.at_level("WARNING"):
        train(tmp_path, tokenizer, strategy_args={"probe_lr_multiplier": 1e30}, max_steps=5)
    history = json.load(open(tmp_path / "mixtures.json"))
    assert [r["kind"] for r in history] == ["initial", "kept"]
    assert history[1]["weights"] == history[0]["weights"]
    assert "too few probes survived" in caplog.text


def test_strategies_proposing_from_one_shared_simulation_decide_as_each_does_alone(tmp_path, tokenizer):
    """``Simulator.shared`` trains the probes once and scores each candidate design on them; each strategy's
    ``propose`` on that simulation is the decision it takes when it simulates alone (its prior, law, design)."""
    from hf_datamix import Strategy
    from hf_datamix.proposer import ProposerConfig

    extra = {
        "op_mix": {},
        "prior": {"prior_space": "coordinates"},
        "design": {"law_space": "data", "candidate_design": "covering", "trust_region": True},
    }
    strategies = {name: create_strategy("op_mix", **{**FAST, **settings}) for name, settings in extra.items()}
    found = {}

    class Compare(Strategy):
        name = "compare"

        def next_decision_step(self, step, max_steps):
            return 2 if step <= 2 else None

        def decide(self, context):
            probe = context.ledger.by_kind.get("probe", 0.0)
            with strategies["op_mix"].simulator.shared(context, context.mixture) as simulate:
                simulations = {"dirichlet": simulate(), "covering": simulate(candidate_design="covering")}
                with pytest.raises(ValueError, match="probe_rank"):
                    simulate(probe_rank=8)  # changes the probes: not a design setting
            found["shared_probe"] = context.ledger.by_kind["probe"] - probe
            found["shared"] = {
                name: strategy.propose(context, simulations["covering" if name == "design" else "dirichlet"])
                for name, strategy in strategies.items()
            }
            probe = context.ledger.by_kind["probe"]
            found["alone"] = {name: strategy.decide(context) for name, strategy in strategies.items()}
            found["alone_probe"] = (context.ledger.by_kind["probe"] - probe) / len(strategies)

    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        args=make_args(tmp_path),
        domains=make_domain_set(),
        strategy=Compare(),
        processing_class=tokenizer,
    )
    trainer.train()
    assert found["shared_probe"] == pytest.approx(found["alone_probe"])  # one set of probes for every design
    for name in strategies:
        shared, alone = found["shared"][name], found["alone"][name]
        assert dict(shared.mixture) == dict(alone.mixture), name
        for key in ("candidates", "observed", "predicted", "schedule", "prior_space", "law_space"):
            assert shared.details[key] == alone.details[key], (name, key)
    assert len(found["alone"]["design"].details["candidates"]) > len(found["alone"]["op_mix"].details["candidates"])
    assert len({tuple(dict(d.mixture).values()) for d in found["alone"].values()}) == 3
    assert (
        "decision_seed" not in ProposerConfig.proposal_settings()
        and "prior_space" in ProposerConfig.proposal_settings()
    )


def test_bad_settings_are_rejected_before_any_compute():
    with pytest.raises(ValueError, match="warmup_fraction=1.5"):
        create_strategy("op_mix", warmup_fraction=1.5)
    with pytest.raises(ValueError, match="no setting.*probe_stepz"):
        create_strategy("op_mix", probe_stepz=3)


def test_several_processes_make_op_mix_run_on_every_process():
    from types import SimpleNamespace

    from hf_datamix.simulate.probes import probes_run_collectively
    from hf_datamix.strategies.op_mix import OpMixStrategy

    def trainer(fsdp=False, zero_stage=None, world=2):
        plugin = None if zero_stage is None else SimpleNamespace(zero_stage=zero_stage)
        return SimpleNamespace(
            is_fsdp_enabled=fsdp,
            is_deepspeed_enabled=zero_stage is not None,
            accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)),
            args=SimpleNamespace(world_size=world),
        )

    strategy = OpMixStrategy()
    assert strategy.runs_on_every_process(trainer(fsdp=True)) is True
    assert strategy.runs_on_every_process(trainer()) is True  # DDP: every GPU trains the probes too
    assert strategy.runs_on_every_process(trainer(world=1)) is False
    assert probes_run_collectively(trainer(zero_stage=2)) is True
    with pytest.raises(ValueError, match="ZeRO-3.*deepspeed_zero2.yaml"):
        probes_run_collectively(trainer(zero_stage=3))


@pytest.mark.parametrize("main", [True, False])
def test_candidate_progress_bar_only_on_the_main_process(main):
    from types import SimpleNamespace

    from hf_datamix.simulate.probes import LoRAProbes

    seen = {}
    trainer = SimpleNamespace(
        default_score="loss",
        is_world_process_zero=lambda: main,
        decision_scorer=lambda *args, **kwargs: None,
        args=SimpleNamespace(disable_tqdm=False),
    )

    class Simulator:
        collective, config = True, SimpleNamespace(bf16=False)

        def score_candidates(self, candidates, scorer, progress):
            seen["progress"] = progress
            return np.zeros((len(candidates), 1))

    LoRAProbes().scores(SimpleNamespace(trainer=trainer), Simulator(), [{}])
    assert seen["progress"] is main
