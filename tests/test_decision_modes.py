"""The decision's modes (issue 18 items 1-3): the law in data space, the reference's KL prior over
the coordinates, the covering candidate design and the trust region."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_domain_set

from hf_datamix import Mixture, create_strategy
from hf_datamix.proposer import ProposerConfig, closest_to_prior, decide, trust_step
from hf_datamix.simulate.base import Simulation, covering_size
from hf_datamix.simulate.branches import Branches
from hf_datamix.simulate.probes import OLD, LoRAProbes, encode
from hf_datamix.strategies.base import DecisionContext


NAMES = ["a", "b", "c"]
SHARE = 0.9


def context(**overrides):
    values = dict(
        step=5,
        max_steps=20,
        stage=0,
        domains=make_domain_set(),
        token_counts={"alpha": 600, "beta": 300, "gamma": 100},
    )
    values.update(overrides)
    return DecisionContext(**values)


def true_loss(data):
    """Losses of the data mixture alone, of the log-linear law's form: target j falls with its own share,
    ``1 + b_j·exp(−4·p_j)``; their mean is lowest at ``p = ln(b)/4 + 1/3`` = (0.507, 0.333, 0.160)."""
    return 1.0 + np.array([2.0, 1.0, 0.5]) * np.exp(-4.0 * data)


BEST = np.log([2.0, 1.0, 0.5]) / 4 + 1 / 3


def probe_simulation(data, encoding, around=None):
    """op_mix's coordinates [old, a, b, c] for these data mixtures, encoded one way, scored by ``true_loss``."""
    around = np.full(3, 1 / 3) if around is None else around
    w = np.array([encode(p, around, SHARE, encoding) for p in data])
    part = SHARE * w[:, 1:]
    X = np.column_stack([1 - part.sum(axis=1), part])
    return Simulation(
        [OLD, *NAMES],
        {OLD: Mixture.from_array(NAMES, around)},
        NAMES,
        X,
        true_loss(data),
        NAMES,
        data=data,
        prior={OLD: 0.5, "a": 0.5 / 3, "b": 0.5 / 3, "c": 0.5 / 3},
    )


def decision_context():
    return DecisionContext(step=5, max_steps=20, stage=0, domains=None, token_counts=dict.fromkeys(NAMES, 100))


DATA = np.random.default_rng(0).dirichlet(np.ones(3), size=40) * 0.9 + 0.1 / 3


def test_identifiable_coordinates():
    assert not probe_simulation(DATA[:4], "spread").identifiable()
    plain = Simulation(NAMES, {}, NAMES, DATA[:4], true_loss(DATA[:4]), NAMES)
    assert plain.identifiable()
    continual = Simulation(
        [OLD, "new"],
        {OLD: Mixture({"a": 0.5, "b": 0.5}), "new": Mixture({"c": 1.0})},
        NAMES,
        np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]),
        np.ones((3, 3)),
        NAMES,
    )
    assert continual.identifiable()


def test_data_space_decision_depends_on_the_data_mixture_only():
    config = ProposerConfig(law_starts=20, kl=0.0)
    spread, old = probe_simulation(DATA, "spread"), probe_simulation(DATA, "old")
    assert not np.allclose(spread.X, old.X)  # two encodings of the same data
    by_coordinates = [decide(s, config, decision_context()).mixture for s in (spread, old)]
    data = ProposerConfig(law_starts=20, kl=0.0, law_space="data")
    spread_decision, old_decision = (decide(s, data, decision_context()) for s in (spread, old))
    assert spread_decision.details["law_space"] == "data"
    assert spread_decision.details["collapsed_domains"] == NAMES
    assert spread_decision.mixture.to_array(NAMES) == pytest.approx(old_decision.mixture.to_array(NAMES), abs=1e-6)
    # The law in data space finds the losses' minimum.
    assert spread_decision.mixture.to_array(NAMES) == pytest.approx(BEST, abs=0.02)
    assert by_coordinates[0].to_array(NAMES).sum() == pytest.approx(1.0)


def test_the_reference_prior_is_measured_over_the_coordinates():
    X = np.vstack([np.eye(4), np.random.default_rng(2).dirichlet(np.ones(4), size=12)])
    flat = Simulation(
        [OLD, *NAMES],
        {OLD: Mixture.uniform(NAMES)},
        NAMES,
        X,
        np.full((16, 3), 3.0),
        NAMES,
        prior={OLD: 0.5, "a": 0.5 / 3, "b": 0.5 / 3, "c": 0.5 / 3},
    )  # flat: the KL term decides
    coordinates = decide(flat, ProposerConfig(law="linear", prior_space="coordinates"), decision_context())
    assert coordinates.details["prior_space"] == "coordinates"
    # half on "old" (the uniform mixture) and 1/6 on each domain probe: still uniform data ...
    assert coordinates.details["proposal"]["x"] == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6], abs=1e-4)
    assert coordinates.mixture.to_array(NAMES) == pytest.approx(np.full(3, 1 / 3), abs=1e-4)
    # ... and with the prior over the expanded domains "old" alone is as free as any preimage of uniform.
    domains = decide(flat, ProposerConfig(law="linear"), decision_context())
    assert domains.mixture.to_array(NAMES) == pytest.approx(np.full(3, 1 / 3), abs=1e-4)


def test_trust_region_stays_at_the_prior_when_the_law_cannot_rank():
    noisy = Simulation(NAMES, {}, NAMES, DATA, np.random.default_rng(1).normal(3.0, 0.1, (len(DATA), 3)), NAMES)
    decision = decide(noisy, ProposerConfig(law_starts=20, trust_region=True), decision_context())
    trust = decision.details["trust_region"]
    assert 0.0 <= trust["step"] < 0.5
    expected = (1 - trust["step"]) * np.array(trust["anchor"]) + trust["step"] * np.array(trust["law_proposal"])
    assert decision.mixture.to_array(NAMES) == pytest.approx(expected, abs=1e-9)
    assert trust["anchor"] == pytest.approx(np.full(3, 1 / 3), abs=1e-5)

    smooth = Simulation(NAMES, {}, NAMES, DATA, true_loss(DATA), NAMES)
    followed = decide(smooth, ProposerConfig(law_starts=20, trust_region=True, kl=0.0), decision_context())
    assert followed.details["trust_region"]["step"] == 1.0
    assert followed.mixture.to_array(NAMES) == pytest.approx(followed.details["trust_region"]["law_proposal"])


def test_best_candidate_takes_the_lowest_simulated_mean_within_the_caps():
    from hf_datamix.proposer import best_candidate

    Y = true_loss(DATA)
    mean = Y.mean(axis=1)
    best = int(np.argmin(mean))
    simulation = Simulation(NAMES, {}, NAMES, DATA, Y, NAMES)
    decision = decide(simulation, ProposerConfig(proposal="best_candidate"), decision_context())
    assert decision.mixture.to_array(NAMES) == pytest.approx(DATA[best] / DATA[best].sum())
    proposal = decision.details["proposal"]
    assert proposal["row"] == best and proposal["status"] == "best_candidate" and decision.details["law"] is None
    assert proposal["objective"] == pytest.approx(mean[best]) and decision.details["predicted"] == Y.tolist()
    # a cap below the best row's share of "a" leaves it out: the best of the rows within the caps
    caps = np.array([DATA[best, 0] - 1e-3, 1.0, 1.0])
    prior = np.full(3, 1 / 3)
    within = np.flatnonzero(DATA[:, 0] <= caps[0])
    mixture, record = best_candidate(DATA, Y, NAMES, {}, NAMES, prior, caps=caps)
    assert record["proposal"]["row"] == int(within[np.argmin(mean[within])])
    assert record["proposal"]["candidates_within_caps"] == len(within)
    # none within the caps: the feasible mixture closest to the prior, and why
    caps = np.array([0.02, 0.99, 0.99])  # every candidate gives "a" >= 0.1 / 3
    mixture, record = best_candidate(DATA, Y, NAMES, {}, NAMES, prior, caps=caps)
    assert record["proposal"]["status"] == "fallback_prior" and record["proposal"]["row"] is None
    assert "honours the caps" in record["proposal"]["fallback_reason"]
    assert mixture.to_array(NAMES) == pytest.approx([0.02, 0.49, 0.49], abs=1e-4)
    with pytest.raises(ValueError, match="proposal"):
        create_strategy("op_mix", proposal="law of averages")  # refused by name, with the choices


def test_trust_step_and_closest_feasible_prior():
    assert trust_step({"spearman_average_loss": 0.4}, 0.8)[0] == pytest.approx(0.5)
    assert trust_step({"spearman_average_loss": -0.3}, 0.8)[0] == 0.0
    assert trust_step({"spearman_average_loss": None}, 0.8)[0] == 0.0
    x = closest_to_prior(np.full(3, 1 / 3), np.array([0.1, 1.0, 1.0]), None, 3)
    assert x == pytest.approx([0.1, 0.45, 0.45], abs=1e-4)


def test_mode_settings_are_checked():
    with pytest.raises(ValueError, match="prior_space"):
        create_strategy("op_mix", law_space="data", prior_space="coordinates")
    with pytest.raises(ValueError, match="law_space"):
        create_strategy("op_mix", law_space="mixture")
    with pytest.raises(ValueError, match="trust_full_spearman"):
        create_strategy("olmix_reuse", trust_full_spearman=0.0)
    with pytest.raises(ValueError, match="candidate_design"):
        create_strategy("op_mix", candidate_design="grid")


def test_covering_designs():
    ctx = context()
    names = ctx.domains.names
    around = Mixture.uniform(names)
    branches = Branches({"candidate_design": "covering"}).design(ctx, around)
    assert len(branches) == covering_size(len(names), 12) == 20
    arrays = [m.to_array(names) for m in branches]
    for i in range(len(names)):
        assert any(np.allclose(a, np.eye(len(names))[i]) for a in arrays)
    assert any(np.allclose(a, [0.6, 0.3, 0.1]) for a in arrays)  # natural
    assert len(Branches().design(ctx, around)) == 12  # the default design is unchanged

    probes = LoRAProbes({"candidate_design": "covering"})
    alive = ["old", "d0", "d1", "d2"]
    rows = probes.design(ctx, around, alive)
    assert rows.shape == (covering_size(4, 12), 4)
    np.testing.assert_allclose(rows[:4], np.eye(4))
    # uniform (= old) encoded by spread: equal weight on the domain probes
    assert rows[4] == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)

    # A natural mixture under the probes' floor (gamma 1 % < 10 % of uniform's third) is a candidate too,
    # by its nearest spanned mixture (it was left out): the rows' data mixtures hold it, gamma at the floor.
    skewed = context(token_counts={"alpha": 900, "beta": 90, "gamma": 10})
    rows = probes.design(skewed, around, alive)
    assert rows.shape == (covering_size(4, 12), 4)
    probe_data = np.vstack([np.full(3, 1 / 3), SHARE * np.eye(3) + (1 - SHARE) / 3])
    data = rows[:6] @ probe_data  # vertices, uniform, natural
    t = (0.1 - 0.03) / (1 - 0.03)  # natural's ratio to the current mixture is 0.03 at gamma
    np.testing.assert_allclose(data[5], (1 - t) * np.array([0.9, 0.09, 0.01]) + t / 3, atol=1e-12)
    assert data[5][2] == pytest.approx(0.1 / 3)


@pytest.mark.parametrize("encoding", ["spread", "old"])
def test_canonical_design_scores_each_data_mixture_at_one_preimage(encoding):
    from hf_datamix.simulate.probes import encode

    skewed = context(token_counts={"alpha": 900, "beta": 90, "gamma": 10})
    names = skewed.domains.names
    around = Mixture.uniform(names)
    alive = ["old", "d0", "d1", "d2"]
    rows = LoRAProbes({"candidate_design": "canonical", "encoding": encoding}).design(skewed, around, alive)
    assert rows.shape == (covering_size(4, 12), 4)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    probe_data = np.vstack([np.full(3, 1 / 3), SHARE * np.eye(3) + (1 - SHARE) / 3])
    data = rows @ probe_data
    for row, mixture in zip(rows, data):  # the row is the encoding of its own data mixture
        np.testing.assert_allclose(row, encode(mixture, around.to_array(names), SHARE, encoding), atol=1e-9)
    for own in probe_data:  # every probe's data mixture is a candidate; with spread, "old" is not weighted alone
        assert any(np.allclose(own, d) for d in data)
    assert any(np.allclose(d[2], 0.1 / 3) for d in data[:6])  # natural at the probes' floor
    assert (rows[:, 0] == 1).sum() == (1 if encoding == "old" else 0)
    assert len(np.unique(np.round(data, 12), axis=0)) == len(data)  # uniform = old is not scored twice
    draws = data[len(data) - (covering_size(4, 12) - 5) :]
    assert draws.min() >= (1 - SHARE) / 3 - 1e-12 and np.ptp(draws) > 0.3  # spread over the span

    # A diverged probe: canonical falls back to draws over the probes that survived.
    rows = LoRAProbes({"candidate_design": "canonical"}).design(skewed, around, ["old", "d0", "d2"])
    assert rows.shape == (covering_size(3, 12), 3)
    np.testing.assert_allclose(rows[:3], np.eye(3))


def test_op_mix_with_every_mode_end_to_end(tmp_path, tokenizer):
    from test_op_mix import FAST, train

    train(
        tmp_path, tokenizer, strategy_args={"law_space": "data", "candidate_design": "covering", "trust_region": True}
    )
    decision = json.load(open(tmp_path / "mixtures.json"))[1]
    assert decision["law_space"] == "data" and decision["collapsed_domains"] == ["alpha", "beta", "gamma"]
    assert len(decision["candidates"]) == covering_size(4, FAST.get("num_candidates", 12))
    assert decision["candidate_design"] == "covering"
    assert {"step", "anchor", "law_proposal"} <= set(decision["trust_region"])
    assert sum(decision["weights"].values()) == pytest.approx(1.0)
    # where the decision's seconds went: probe training, candidate scoring, the law fit and proposal
    phases = decision["phase_seconds"]
    assert set(phases) == {"probes", "scoring", "proposal"} and all(v > 0 for v in phases.values())
    assert sum(phases.values()) <= decision["seconds"]


def test_op_mix_canonical_design_end_to_end(tmp_path, tokenizer):
    from test_op_mix import train

    train(tmp_path, tokenizer, strategy_args={"law_space": "data", "candidate_design": "canonical", "encoding": "old"})
    decision = json.load(open(tmp_path / "mixtures.json"))[1]
    assert decision["candidate_design"] == "canonical" and decision["law_space"] == "data"
    assert decision["collapsed_domains"] == ["alpha", "beta", "gamma"] and sum(
        decision["weights"].values()
    ) == pytest.approx(1)


def test_op_mix_best_candidate_end_to_end(tmp_path, tokenizer):
    from test_op_mix import train

    settings = {"law_space": "data", "candidate_design": "canonical", "encoding": "old", "proposal": "best_candidate"}
    train(tmp_path, tokenizer, strategy_args=settings)
    decision = json.load(open(tmp_path / "mixtures.json"))[1]
    row = decision["proposal"]["row"]
    means = np.mean(decision["observed"], axis=1)
    assert decision["proposal"]["status"] == "best_candidate" and means[row] == pytest.approx(means.min())
    chosen = [decision["weights"][d] for d in decision["collapsed_domains"]]
    assert chosen == pytest.approx(decision["candidates"][row], abs=1e-9)  # the run trains the candidate itself


def test_op_mix_reference_prior_end_to_end(tmp_path, tokenizer):
    from test_op_mix import train

    train(tmp_path, tokenizer, strategy_args={"prior_space": "coordinates"})
    decision = json.load(open(tmp_path / "mixtures.json"))[1]
    assert decision["prior_space"] == "coordinates" and decision["collapsed_domains"][0] == OLD


@pytest.mark.parametrize("name", ["lora_probes", "branches", "calibrated"])
def test_simulators_without_groups_refuse_them_by_name(name):
    from hf_datamix.simulate.base import create_simulator

    simulator = create_simulator(name)
    with pytest.raises(ValueError, match=f"^{name} cannot hold reused domains together"):
        simulator.simulate(context(), Mixture.uniform(["alpha", "beta"]), groups={"g": Mixture({"alpha": 1.0})})


def test_the_record_names_the_targets_the_simulator_scored():
    two = ["a", "c"]  # a simulator that scores only some domains (e.g. proxy_swarm's targets option)
    scored = Simulation(NAMES, {}, NAMES, DATA, true_loss(DATA)[:, [0, 2]], two)
    decision = decide(scored, ProposerConfig(law_starts=20), decision_context())
    assert decision.details["targets"] == two
    assert np.asarray(decision.details["observed"]).shape == (len(DATA), 2)


def test_op_mix_warms_up_on_the_natural_mixture_when_asked():
    published = create_strategy("op_mix")
    assert published.initial_mixture(context())["alpha"] == pytest.approx(1 / 3)
    natural = create_strategy("op_mix", warmup_mixture="natural")
    mixture = natural.initial_mixture(context())
    assert [mixture[n] for n in ("alpha", "beta", "gamma")] == pytest.approx([0.6, 0.3, 0.1])
    with pytest.raises(ValueError, match="warmup_mixture=natural needs every domain's token count"):
        natural.initial_mixture(context(token_counts={"alpha": 600}))
    with pytest.raises(ValueError, match="warmup_mixture='proportional'.*uniform or natural"):
        create_strategy("op_mix", warmup_mixture="proportional")
