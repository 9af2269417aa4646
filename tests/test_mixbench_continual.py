"""mixbench continual at tiny size on the CPU: a base per seed, every arm through 5 stages, resume, report, refusal."""

from __future__ import annotations

import json
import os
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_mixbench import mixbench, staged  # noqa: E402


@pytest.mark.timeout(300)
def test_continual_arms_resume_and_report(tmp_path, monkeypatch, capsys):
    common = staged(tmp_path, "continual", extra=("--seeds", "0,1"))
    store = tmp_path / "store" / "continual-continual-tiny.json"
    run = ["continual", *common, "--store", str(store)]

    # A bad setting fails before anything is packed, trained or stored, naming the arm and the setting.
    from mixbench import continual
    from mixbench.__main__ import main

    monkeypatch.setitem(continual.ARMS, "op_mix_bad", continual._arm("op_mix", prior_space="nowhere"))
    monkeypatch.setenv("HF_DATAMIX_CACHE", str(tmp_path / "scratch" / "packed"))  # main sets it for the process
    with pytest.raises(SystemExit):
        main([*run, "--arms", "op_mix,op_mix_bad", "--work", str(tmp_path / "w0")])
    message = capsys.readouterr().err
    assert "'op_mix_bad'" in message and "prior_space" in message and "nowhere" in message
    assert not store.exists() and not (tmp_path / "scratch" / "packed").exists()
    monkeypatch.delitem(continual.ARMS, "op_mix_bad")

    main([*run, "--dry-run", "--work", str(tmp_path / "w0")])
    dry = capsys.readouterr().out
    assert "0 units done, 12 pending" in dry and "base/0, base/1, op_mix/0" in dry and "gpu_seconds" in dry

    out = mixbench(*run, "--procs", "2", "--work", str(tmp_path / "w1"))
    result = json.load(open(tmp_path / "results" / "opmix_quality_continual_tiny.json"))
    assert result["status"] == "complete", out
    arms = result["arms"]
    assert set(arms) == {"op_mix", "retrain", "replay", "sequential", "fixed_50_50"}
    for arm in arms.values():
        assert len(arm["mean_test_loss"]) == 2 and len(arm["total_flops"]) == 2 and arm["seeds"] == [0, 1]
        assert len(arm["test_by_domain"]) == 7 and arm["flops_by_kind"][0]["train"] > 0
    assert arms["op_mix"]["flops_by_kind"][0]["probe"] > 0 and arms["op_mix"]["definition"]["settings"] == {
        "prior_space": "coordinates",
        "trust_region": True,
    }
    # retrain: one run of all 5 stages' steps, counted as the retrains of every stage (factor (K + 1) / 2 = 3)
    assert arms["retrain"]["flops_factor"] == 3 and arms["retrain"]["stage_numbers"] == [5]
    assert arms["retrain"]["total_flops"][0] == pytest.approx(3 * arms["retrain"]["measured_flops"][0])
    assert arms["sequential"]["stage_numbers"] == [1, 2, 3, 4, 5]
    mixtures = arms["sequential"]["stage_mixtures"]["0"]
    assert max(mixtures[0], key=mixtures[0].get) == "wordnet"
    assert arms["replay"]["stage_mixtures"]["0"][1]["man_de"] == pytest.approx(0.9, abs=0.05)
    forgetting = arms["sequential"]["forgetting"]
    assert forgetting["python_docs"] == [0.0, 0.0] and all(v is not None for v in forgetting["gcide"])
    assert arms["retrain"]["forgetting"]["wordnet"] == [None, None]
    entry = result["domain_sets"]["continual"]
    assert entry["stage_plan"]["base"] == ["python_stdlib", "gcide"] and len(entry["stage_plan"]["added"]) == 5
    assert set(entry["base"]["per_seed"]) == {"0", "1"} and not entry["base"]["arms_from_a_base_trained_again"]
    assert entry["verdicts"]["within_retrain"]["verdict"] == "not judged"  # 2 seeds < 3
    assert set(entry["rules"]) >= {"within_retrain", "flops", "better_than_replay", "better_than_sequential"}
    assert (tmp_path / "results" / "opmix_quality_continual_tiny.png").stat().st_size > 5000

    # The store keeps op_mix's stage decisions in full (the run's folder is removed); the results file does not.
    records = json.loads(store.read_text())["units"]["op_mix/0"]["decision_records"]
    assert len(records) == 5 and all(r["candidates"] and r["proposal"]["x"] for r in records)
    assert all(0 <= r["trust_region"]["step"] <= 1 for r in records)  # every stage's proposal went through it
    assert "decision_records" not in arms["op_mix"]

    # Run again: nothing is trained, the store is unchanged.
    before = store.read_text()
    again = mixbench(*run, "--work", str(tmp_path / "w2"))
    assert "12 units done, 0 pending" in again and "mean test loss" not in again
    assert json.loads(store.read_text())["units"] == json.loads(before)["units"]


def test_a_worker_finishes_a_seed_before_it_trains_the_next_base():
    """A call on a fresh machine trains a base again for every seed it touches: the seed whose base weights are
    here comes first, arms before the next seed's base."""
    from mixbench import continual

    plan = continual.ContinualPlan("continual", seeds=(0, 1))

    class Here:  # the machine holds the base weights of these seeds
        def __init__(self, seeds):
            self.seeds = seeds

        def has_weights(self, seed):
            return seed in self.seeds

    wanted = set(plan.unit_keys())
    arms0 = [f"{arm}/0" for arm in plan.arms]
    keys = lambda worker, results: [u[0] for u in continual._ready(plan, worker, wanted, results)]  # noqa: E731
    assert keys(Here(()), {}) == ["base/0", "base/1"]
    bases = {"base/0": {}, "base/1": {}}
    assert keys(Here((0,)), {"base/0": {}}) == [*arms0, "base/1"]
    # a later call on a fresh machine: both bases stored, no weights here; seed 0's come first
    assert keys(Here(()), bases) == ["base/0", "base/1"]
    assert [u[3] for u in continual._ready(plan, Here(()), wanted, bases)] == ["weights/0", "weights/1"]
    assert keys(Here((0,)), {**bases, arms0[0]: {}}) == [*arms0[1:], "base/1"]
