"""Branches: real continuations from a running trainer restore it exactly and are the runs they stand for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer, Mixture, Strategy
from hf_datamix.simulate.branches import Branches, TrainerBranches


P = {"alpha": 0.6, "beta": 0.3, "gamma": 0.1}


class BranchAt(Strategy):
    """Runs ``action(context)`` at one step and keeps the mixture (a test harness)."""

    name = "branch_at"

    def __init__(self, step, action, initial=None):
        super().__init__()
        self.step, self.action, self.initial = step, action, initial

    def initial_mixture(self, context):
        return Mixture(self.initial) if self.initial else Mixture.uniform(context.domains.names)

    def next_decision_step(self, step, max_steps):
        return self.step if step <= self.step else None

    def decide(self, context):
        self.action(context)
        return None


def run(tmp_path, tokenizer, strategy, **overrides):
    args = datamix_args(
        tmp_path,
        max_steps=8,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        max_grad_norm=1.0,
        gradient_accumulation_steps=2,
        **overrides,
    )
    trainer = DataMixTrainer(
        model=tiny_llama(len(tokenizer)),
        args=args,
        domains=make_domain_set(),
        strategy=strategy,
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer


def losses(trainer):
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


def test_branching_restores_the_run_exactly(tmp_path, tokenizer):
    plain = run(tmp_path / "plain", tokenizer, "uniform")
    seen = {}

    def branch(context):
        trainer = context.trainer
        before = [p.detach().clone() for p in trainer.model.parameters()]
        with TrainerBranches(trainer) as branches:
            results = branches.run(
                [P, {"alpha": 0.0, "beta": 0.0, "gamma": 1.0}],
                steps=3,
                scorers={"decision": trainer.decision_scorer(limit=2)},
            )
            seen["moved"] = any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
        seen["results"] = results
        seen["restored"] = all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))

    branched = run(tmp_path / "branched", tokenizer, BranchAt(3, branch))
    assert seen["restored"] and not seen["moved"]  # run() restores after the last branch too
    a, b = seen["results"]
    assert a.steps == 3 and a.tokens == 3 * 2 * 2 * 32 and len(a.losses) == 3
    assert a.scores["decision"] != b.scores["decision"]  # different data, different models
    # The run goes on as if nothing had happened: same losses, same final weights.
    assert losses(branched) == losses(plain)
    for x, y in zip(plain.model.parameters(), branched.model.parameters()):
        assert torch.equal(x, y)
    assert branched.ledger.by_kind["branch"] == pytest.approx(6 * branched.num_params * 2 * a.tokens)


def test_a_branch_to_the_end_is_the_run_on_that_mixture(tmp_path, tokenizer):
    reference = run(tmp_path / "fixed", tokenizer, BranchAt(99, lambda c: None, initial=P))
    final = {}

    def branch(context):
        with TrainerBranches(context.trainer) as branches:
            for name, mixture in (("uniform", Mixture.uniform(list(P))), ("p", P)):
                branches.restore()
                branches.train(mixture, steps=8)
                final[name] = [p.detach().clone() for p in context.trainer.model.parameters()]

    run(tmp_path / "branch", tokenizer, BranchAt(0, branch))  # before the first step: a branch from the init
    for x, y in zip(reference.model.parameters(), final["p"]):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    assert max((x - y).abs().max() for x, y in zip(reference.model.parameters(), final["uniform"])) > 1e-3


def test_a_branch_from_a_decision_point_is_the_run_that_decided_there(tmp_path, tokenizer):
    """With ``from_sample`` where the controller applies a decision taken now (the step after next), a branch to the
    end is the run that decided that mixture; the same branch on the mixture from its first sample is not."""
    gamma = {"alpha": 0.0, "beta": 0.0, "gamma": 1.0}

    class Decide(BranchAt):
        def decide(self, context):
            return Mixture(gamma)

    decided = run(tmp_path / "decided", tokenizer, Decide(3, None), plan_caps=False)
    final = {}

    def branch(context):
        trainer = context.trainer
        with TrainerBranches(trainer) as branches:
            for name, start in (("decision", (context.step + 1) * trainer.samples_per_step), ("now", None)):
                branches.restore()
                branches.train(gamma, 8 - context.step, from_sample=start)
                final[name] = [p.detach().clone() for p in trainer.model.parameters()]
            with pytest.raises(ValueError, match="from_sample"):
                trainer.branch_stream(gamma, from_sample=context.step * trainer.samples_per_step - 1)

    run(tmp_path / "branch", tokenizer, BranchAt(3, branch), plan_caps=False)
    assert all(torch.equal(x, y) for x, y in zip(decided.model.parameters(), final["decision"]))
    assert max((x - y).abs().max() for x, y in zip(decided.model.parameters(), final["now"])) > 1e-4


def test_branches_simulator_scores_given_mixtures_on_the_decision_split(tmp_path, tokenizer):
    found = {}

    def simulate(context):
        found["sim"] = Branches(branch_steps=2, eval_blocks=2).simulate(context, context.mixture, candidates=[P, P])
        found["test_blocks"] = context.trainer.eval_blocks

    trainer = run(tmp_path, tokenizer, BranchAt(2, simulate))
    sim = found["sim"]
    assert sim.coordinates == sim.targets == ["alpha", "beta", "gamma"] and sim.Y.shape == (2, 3)
    np.testing.assert_allclose(sim.Y[0], sim.Y[1])  # the same mixture from the same state: the same branch
    np.testing.assert_allclose(sim.mixtures()[0], [0.6, 0.3, 0.1])
    assert len(sim.record["branches"]) == 2 and sim.record["branches"][0]["steps"] == 2
    for name in trainer.domains.names:  # decision blocks and test blocks are disjoint
        decision, test = (
            {b.tobytes() for b in trainer.decision_blocks[name]},
            {b.tobytes() for b in found["test_blocks"][name]},
        )
        assert decision and test and not decision & test
    with pytest.raises(ValueError, match="branch_steps=0"):
        Branches(branch_steps=0)


def test_probe_encodings_stand_for_the_same_data_mixture():
    from hf_datamix.simulate.probes import encode

    rng = np.random.default_rng(0)
    old = np.array([0.5, 0.3, 0.2])
    for p in [old, *rng.dirichlet(np.ones(3), size=20) * 0.8 + 0.2 * old]:
        for encoding in ("spread", "old"):
            w = encode(p, old, 0.9, encoding)
            data = w[0] * old + sum(w[1 + d] * (0.9 * np.eye(3)[d] + 0.1 * old) for d in range(3))
            np.testing.assert_allclose(data, p, atol=1e-12)
    np.testing.assert_allclose(encode(old, old, 0.9, "old"), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(encode(old, old, 0.9, "spread"), [0, *old], atol=1e-12)
    with pytest.raises(ValueError, match="cannot represent"):
        encode(np.array([0.99, 0.005, 0.005]), old, 0.9, "spread")


def test_a_mixture_outside_the_probe_span_moves_toward_the_current_mixture_just_enough():
    from hf_datamix.simulate.probes import encode, into_span

    old = np.full(5, 0.2)
    natural = np.array([0.4551, 0.1913, 0.1699, 0.1671, 0.0166])  # the smallest domain under 0.1 x 0.2
    with pytest.raises(ValueError, match="cannot represent"):
        encode(natural, old, 0.9, "spread")
    moved, t = into_span(natural, old, 0.9)
    assert 0 < t < 0.02  # (0.1 − 0.083) / (1 − 0.083)
    np.testing.assert_allclose(moved, (1 - t) * natural + t * old)
    assert moved.min() == pytest.approx(0.1 * 0.2)  # on the span's edge, not past it
    for encoding in ("spread", "old"):
        w = encode(moved, old, 0.9, encoding)
        data = w[0] * old + sum(w[1 + d] * (0.9 * np.eye(5)[d] + 0.1 * old) for d in range(5))
        np.testing.assert_allclose(data, moved, atol=1e-12)
    same, none = into_span(old, old, 0.9)
    assert none == 0.0 and same is old


def test_lora_probes_from_an_annealed_copy_score_both_encodings_and_restore_the_run(tmp_path, tokenizer):
    from hf_datamix.simulate.probes import LoRAProbes

    plain = run(tmp_path / "plain", tokenizer, "uniform")
    found = {}

    def simulate(context):
        probes = LoRAProbes(probe_steps=2, probe_batch_size=2, eval_blocks=2, anneal_steps=2)
        found["sim"] = probes.simulate(context, context.mixture, candidates=[context.mixture, P])

    probed = run(tmp_path / "probed", tokenizer, BranchAt(3, simulate))
    sim = found["sim"]
    assert sim.record["anneal"]["steps"] == 2 and set(sim.record["encodings"]) == {"spread", "old"}
    np.testing.assert_allclose(sim.record["encodings"]["old"]["weights"][0], [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(sim.mixtures()[1], list(P.values()), atol=1e-9)
    assert sim.Y.shape == (2, 3)
    assert losses(probed) == losses(plain)
    assert probed.ledger.by_kind["branch"] > 0 and probed.ledger.by_kind["probe"] > 0
