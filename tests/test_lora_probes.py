"""OP-Mix simulator: exact weight-delta interpolation, restoration of the model, divergence, ledger."""

import copy
import logging
import math

import peft
import pytest
import torch
import transformers

from hf_datamix.compute import ComputeLedger, non_embedding_parameters
from hf_datamix.simulate.lora_probes import SLOT, LoRAProbeSimulator, ProbeConfig, default_target_modules


VOCAB, BLOCK = 101, 16
RANK, ALPHA = 4, 8.0  # alpha/rank = 2, so a missing scaling factor would show
# Overflows the weights to inf/NaN on any torch version; a merely large rate (1e4) sometimes only
# collapses a random-init model to uniform predictions, whose loss ln(V) equals its initial loss.
ABSURD_LR = 1e30


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and thread spinning on a busy 2-core machine
    # made this file ten times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config).float()


def batches(n, batch_size=2, seed=0, length=BLOCK):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (batch_size, length), generator=generator)
        yield {"input_ids": ids, "labels": ids.clone()}


def blocks(n, seed, length=BLOCK):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def probe_config(**overrides):
    return ProbeConfig(**{"rank": RANK, "alpha": ALPHA, "steps": 5, "batch_size": 2, **overrides})


def explicit_merge(base, simulator, weights):
    """A copy of ``base`` with Σ w_c (alpha/r) B_c A_c added to its weights by hand."""
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for probe, w in weights.items():
            factors = simulator.lora_factors(probe)
            assert factors and {scaling for _, _, scaling in factors.values()} == {ALPHA / RANK}
            for name, (down, up, _) in factors.items():
                merged.get_submodule(name).weight.add_(w * (ALPHA / RANK) * (up @ down))
    return merged


def test_default_targets_are_attention_and_mlp_not_head():
    assert default_target_modules(tiny_llama()) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]


def test_candidates_equal_explicitly_merged_model(tmp_path):
    model = tiny_llama()
    base = copy.deepcopy(model)
    simulator = LoRAProbeSimulator(model, probe_config(), base_learning_rate=1e-2)
    simulator.train_probe("pa", batches(5, seed=1))
    simulator.train_probe("pb", batches(5, seed=2))
    ids = blocks(3, seed=3)
    eval_sets = {"x": ids, "y": blocks(2, seed=4)}
    for weights in ({"pa": 0.3, "pb": 0.7}, {"pa": 1.5, "pb": 2.0}, {"pa": 0.0, "pb": 0.0}):
        merged = explicit_merge(base, simulator, weights)
        with torch.no_grad():
            with simulator.interpolated(weights) as interpolated:
                logits = interpolated(input_ids=ids).logits
            expected = merged(input_ids=ids).logits
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
        losses = simulator.evaluate_candidates([weights], eval_sets, batch_size=2)[0]
        with torch.no_grad():
            merged_losses = [merged(input_ids=b, labels=b).loss.item() for b in eval_sets.values()]
        assert losses == pytest.approx(merged_losses, abs=1e-5)

    # The probes really moved away from θ, so the checks above are not trivially about θ.
    with torch.no_grad():
        theta, moved = base(input_ids=ids).logits, explicit_merge(base, simulator, {"pa": 1.0})(input_ids=ids).logits
    assert not torch.allclose(moved, theta, atol=1e-3)

    # Saved probes load back with plain PEFT and reproduce θ + ΔW_pa.
    paths = simulator.save_adapters(str(tmp_path))
    assert sorted(paths) == ["pa", "pb"] and (tmp_path / "pa" / "adapter_config.json").exists()
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), paths["pa"]).eval()
    with torch.no_grad(), simulator.interpolated({"pa": 1.0}) as interpolated:
        torch.testing.assert_close(
            reloaded(input_ids=ids).logits, interpolated(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )

    # Why not add_weighted_adapter(..., "linear"): it combines A and B separately, which is not Σ w_c B_c A_c.
    weights = {"pa": 0.3, "pb": 0.7}
    with simulator.as_peft_adapters() as peft_model:
        assert set(weights) <= set(peft_model.peft_config)
        peft_model.add_weighted_adapter(list(weights), list(weights.values()), "linmix", combination_type="linear")
        peft_model.base_model.set_adapter(["linmix"], inference_mode=True)
        with torch.no_grad():
            model.eval()
            linear = model(input_ids=ids).logits
            exact = explicit_merge(base, simulator, weights)(input_ids=ids).logits
        assert not torch.allclose(linear, exact, atol=1e-4)
        # PEFT's own multi-adapter forward of one probe at scale 1 is the probe's interpolated model.
        peft_model.base_model.set_adapter(["pb"], inference_mode=True)
        with torch.no_grad():
            model.eval()
            torch.testing.assert_close(
                model(input_ids=ids).logits,
                explicit_merge(base, simulator, {"pb": 1.0})(input_ids=ids).logits,
                atol=1e-5,
                rtol=1e-5,
            )
        peft_model.delete_adapter("linmix")
    assert set(peft_model.peft_config) == {SLOT}  # the probes' adapters are gone again; scoring still works
    with torch.no_grad(), simulator.interpolated({"pa": 1.0}) as interpolated:
        torch.testing.assert_close(
            interpolated(input_ids=ids).logits,
            explicit_merge(base, simulator, {"pa": 1.0})(input_ids=ids).logits,
            atol=1e-5,
            rtol=1e-5,
        )
    simulator.close()


def test_close_restores_base_model_and_optimizer_keeps_working():
    model = tiny_llama()
    model.train()
    model.model.layers[1].eval()  # per-module modes must come back as they were
    model.model.embed_tokens.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    before = {n: t.clone() for n, t in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    with LoRAProbeSimulator(model, probe_config(), base_learning_rate=1e-2) as simulator:
        simulator.train_probe("pa", batches(4, seed=1))
        simulator.train_probe("pb", batches(4, seed=2))
        simulator.evaluate_candidates([{"pa": 0.5, "pb": 0.5}], {"x": blocks(2, seed=3)}, batch_size=2)
    restored = simulator.close()  # idempotent; returns the same object

    assert restored is model
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    assert set(model.state_dict()) == set(before)
    assert not any(isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) for m in model.modules())
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert not hasattr(model, "peft_config")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes

    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
    batch = next(batches(1, seed=5))
    model(**batch).loss.backward()
    optimizer.step()
    assert not torch.equal(
        model.model.layers[0].self_attn.q_proj.weight, before["model.layers.0.self_attn.q_proj.weight"]
    )


@pytest.mark.parametrize("how", ["learning_rate", "divergence_factor"])
def test_divergent_probe_is_dropped(how, caplog):
    model = tiny_llama()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    config = probe_config(divergence_factor=1e-6) if how == "divergence_factor" else probe_config()
    simulator = LoRAProbeSimulator(model, config, base_learning_rate=ABSURD_LR if how == "learning_rate" else 1e-3)
    with caplog.at_level(logging.WARNING, logger="hf_datamix.simulate.lora_probes"):
        first = simulator.train_probe("bad1", batches(5, seed=1))
    assert first.diverged and "bad1" in caplog.text and first.reason
    # It was the only probe: the model is plain again.
    assert not any(isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) for m in model.modules())
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())

    simulator.config.divergence_factor = 3.0
    simulator.base_learning_rate = 1e-3
    assert not simulator.train_probe("good", batches(5, seed=2)).diverged
    simulator.base_learning_rate = ABSURD_LR
    simulator.config.divergence_factor = config.divergence_factor
    assert simulator.train_probe("bad2", batches(5, seed=3)).diverged
    assert simulator.probes == ["good"]

    losses = simulator.evaluate_candidates([{"good": 1.0, "bad2": 0.0}, {"good": 0.5}], {"x": blocks(2, seed=4)}, 2)
    assert losses.shape == (2, 1) and (losses > 0).all()
    with pytest.raises(ValueError, match="bad2"):
        simulator.evaluate_candidates([{"good": 0.5, "bad2": 0.5}], {"x": blocks(2, seed=4)}, 2)
    simulator.close()
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())


def test_non_finite_loss_names_its_step_and_keeps_earlier_losses():
    # Losses are read back from the device in groups of steps; the report must still be exact.
    def poisoned(n, at):
        for step, batch in enumerate(batches(n, seed=5)):
            if step == at:
                batch["labels"][:] = -100  # no target token: the mean loss is NaN
            yield batch

    simulator = LoRAProbeSimulator(tiny_llama(), probe_config(steps=20), base_learning_rate=1e-3)
    result = simulator.train_probe("nan", poisoned(20, at=18))
    assert result.diverged and result.reason == "loss became nan at step 18"
    assert len(result.losses) == 18 and all(math.isfinite(v) for v in result.losses)
    assert simulator.probes == []


def test_ledger_counts_probe_and_candidate_tokens():
    model = tiny_llama()
    n_params = non_embedding_parameters(model)
    ledger = ComputeLedger()
    steps, batch_size = 3, 2
    with LoRAProbeSimulator(model, probe_config(steps=steps), 1e-3, ledger=ledger) as simulator:
        simulator.train_probe("pa", batches(10, batch_size=batch_size))
        # Probe: every token of every trained batch, 6·N each (N without the LoRA parameters).
        assert ledger.tokens_by_kind["probe"] == steps * batch_size * BLOCK
        assert ledger.by_kind["probe"] == 4 * n_params * steps * batch_size * BLOCK  # a frozen base: 4N
        eval_sets = {"x": blocks(3, seed=1), "y": blocks(2, seed=2)}
        simulator.evaluate_candidates([{"pa": 1.0}, {}], eval_sets, batch_size=2)
        # Candidates: every token of every block (block_len, not block_len - 1) per candidate, 2·N each.
        assert ledger.tokens_by_kind["eval"] == 2 * (3 + 2) * BLOCK
        assert ledger.by_kind["eval"] == 2 * n_params * 2 * (3 + 2) * BLOCK


def test_base_model_loss_equals_hf_loss():
    model = tiny_llama()
    eval_sets = {"x": blocks(5, seed=1, length=12), "y": blocks(3, seed=2, length=12)}
    with torch.no_grad():
        expected = [model(input_ids=b, labels=b).loss.item() for b in eval_sets.values()]
    simulator = LoRAProbeSimulator(model, probe_config(), 1e-2)
    # Batches of 2 over 5 blocks: an uneven last batch must not tilt the token-weighted mean.
    assert simulator.evaluate_candidates([{}], eval_sets, batch_size=2)[0] == pytest.approx(expected, abs=1e-5)
    simulator.train_probe("pa", batches(3, seed=3))
    losses = simulator.evaluate_candidates([{}, {"pa": 0.0}, {"pa": 1.0}], eval_sets, batch_size=2)
    assert losses[0] == pytest.approx(expected, abs=1e-5) and losses[1] == pytest.approx(expected, abs=1e-5)
    assert losses[2] != pytest.approx(expected, abs=1e-5)
    simulator.close()


def test_errors_name_the_problem():
    model = tiny_llama()
    with pytest.raises(ValueError, match="rank"):
        ProbeConfig(rank=0)
    simulator = LoRAProbeSimulator(model, probe_config(), 1e-3)
    with pytest.raises(ValueError, match="lora_"):
        simulator.train_probe("a", batches(1))
    with pytest.raises(ValueError, match="finite and >= 0"):
        simulator.evaluate_candidates([{"pa": -1.0}], {"x": blocks(2, seed=1)}, 2)
    with pytest.raises(ValueError, match="block_len"):
        simulator.evaluate_candidates([{}], {"x": torch.zeros(4, dtype=torch.long)}, 2)
    simulator.close()
    with pytest.raises(RuntimeError, match="closed"):
        simulator.train_probe("pa", batches(1))


def test_compiled_probes_share_one_compilation_and_match_eager(monkeypatch):
    # Every probe trains in the same adapter slot, so torch.compile traces the probe step once for all
    # probes (a new PEFT adapter per probe made dynamo recompile for each).  Dynamo's "eager" backend
    # traces and guards as inductor would, without the minutes of code generation on a CPU.
    import functools

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    results = {}
    for compiled in (False, True):
        simulator = LoRAProbeSimulator(tiny_llama(), probe_config(compile=compiled), base_learning_rate=1e-2)
        before = counters["stats"]["unique_graphs"]
        losses = [
            simulator.train_probe(name, batches(5, seed=seed)).losses
            for name, seed in (("pa", 1), ("pb", 2), ("pc", 3))
        ]
        results[compiled] = losses, simulator.lora_factors("pc"), counters["stats"]["unique_graphs"] - before
        simulator.close()
    assert results[False][2] == 0 and results[True][2] == 1
    # The next decision's simulator (a new slot on the same architecture) reuses that compilation too.
    before = counters["stats"]["unique_graphs"]
    with LoRAProbeSimulator(tiny_llama(seed=1), probe_config(compile=True), base_learning_rate=1e-2) as simulator:
        simulator.train_probe("pd", batches(5, seed=4))
    assert counters["stats"]["unique_graphs"] == before
    assert sum(results[True][0], []) == pytest.approx(sum(results[False][0], []), rel=1e-5)
    for module, (down, up, _) in results[False][1].items():
        torch.testing.assert_close(results[True][1][module][0], down)
        torch.testing.assert_close(results[True][1][module][1], up, atol=1e-6, rtol=1e-5)


def test_probe_compile_null_follows_the_runs_compilation_on_a_gpu():
    from types import SimpleNamespace

    from hf_datamix.simulate.probes import LoRAProbes

    def trainer(compiled, device):
        return SimpleNamespace(args=SimpleNamespace(torch_compile=compiled, device=torch.device(device)))

    auto = LoRAProbes({"probe_compile": None})
    assert auto.compile(trainer(True, "cuda")) and not auto.compile(trainer(True, "cpu"))
    assert not auto.compile(trainer(False, "cuda"))
    assert LoRAProbes({}).compile(trainer(True, "cuda"))  # the default follows the run
    assert not LoRAProbes({}).compile(trainer(False, "cuda"))
    assert LoRAProbes({"probe_compile": True}).compile(trainer(False, "cpu"))
