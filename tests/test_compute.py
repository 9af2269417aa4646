"""The compute ledger: FLOPs arithmetic (6N / 2N per token), validation, merge, compute.json, and N."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_llama

from hf_datamix import ComputeLedger
from hf_datamix.compute import (
    COMPUTE_FILE,
    FORMULA,
    KINDS,
    non_embedding_parameters,
    write_json_atomic,
)


def test_add_accumulates_by_kind():
    ledger = ComputeLedger()
    ledger.add("train", 100.0, tokens=10)
    ledger.add("train", 50, tokens=5)
    ledger.add("eval", 7)
    assert ledger.by_kind == {"train": 150.0, "eval": 7.0}
    assert ledger.tokens_by_kind == {"train": 15.0, "eval": 0.0}
    assert ledger.total_flops == 157.0
    assert isinstance(ledger.total_flops, float)


def test_add_training_is_6N_per_token():
    ledger = ComputeLedger()
    flops = ledger.add_training("train", num_params=1_000, tokens=256)
    assert flops == 6 * 1_000 * 256
    assert ledger.by_kind["train"] == 1_536_000.0
    assert ledger.tokens_by_kind["train"] == 256.0
    ledger.add_training("probe", 10, 3)
    assert ledger.by_kind["probe"] == 180.0


def test_add_forward_is_2N_per_token():
    ledger = ComputeLedger()
    flops = ledger.add_forward("eval", num_params=1_000, tokens=256)
    assert flops == 2 * 1_000 * 256
    assert ledger.by_kind == {"eval": 512_000.0}
    ledger.add_forward("teacher", 3, 5)
    ledger.add_forward("generate", 3, 5)
    assert ledger.by_kind["teacher"] == ledger.by_kind["generate"] == 30.0
    # training a token costs 3x a forward pass
    other = ComputeLedger()
    assert other.add_training("train", 77, 9) == 3 * other.add_forward("eval", 77, 9)


def test_zero_is_allowed():
    ledger = ComputeLedger()
    ledger.add("proxy", 0.0, 0)
    assert ledger.by_kind == {"proxy": 0.0} and ledger.total_flops == 0.0
    assert ledger.to_dict()["share_by_kind"] == {"proxy": 0.0}  # no division by zero


@pytest.mark.parametrize("kind", ["training", "TRAIN", "", "forward", None])
def test_unknown_kind_error(kind):
    ledger = ComputeLedger()
    with pytest.raises(ValueError, match=rf"kind {kind!r} is unknown") as info:
        ledger.add(kind, 1.0)
    assert str(list(KINDS)) in str(info.value)
    with pytest.raises(ValueError, match="is unknown"):
        ledger.add_training(kind, 10, 10)
    assert ledger.by_kind == {}


@pytest.mark.parametrize("flops, tokens", [(-1.0, 0), (1.0, -1), (-0.5, -2)])
def test_negative_error(flops, tokens):
    ledger = ComputeLedger()
    with pytest.raises(ValueError, match=r"add\('train'\): flops and tokens must be finite and >= 0"):
        ledger.add("train", flops, tokens)
    with pytest.raises(ValueError, match=">= 0"):
        ledger.add_forward("train", -5, 10)
    assert ledger.by_kind == {} and ledger.tokens_by_kind == {}


@pytest.mark.parametrize("flops, tokens", [(float("nan"), 0), (1.0, float("nan")), (float("inf"), 0)])
def test_non_finite_error(flops, tokens):
    ledger = ComputeLedger()
    with pytest.raises(ValueError):
        ledger.add("train", flops, tokens)


def test_every_declared_kind_is_accepted():
    ledger = ComputeLedger()
    for i, kind in enumerate(KINDS):
        ledger.add(kind, i + 1)
    assert set(ledger.by_kind) == set(KINDS)
    assert set(KINDS) == {"train", "eval", "probe", "proxy", "branch", "generate", "teacher"}


def test_merge():
    a = ComputeLedger()
    a.add_training("train", 10, 100)  # 6000
    a.add_forward("eval", 10, 5)  # 100
    b = ComputeLedger()
    b.add_training("train", 10, 50)  # 3000
    b.add_training("probe", 2, 10)  # 120
    merged = a.merge(b)
    assert merged.by_kind == {"train": 9000.0, "eval": 100.0, "probe": 120.0}
    assert merged.tokens_by_kind == {"train": 150.0, "eval": 5.0, "probe": 10.0}
    assert merged.total_flops == a.total_flops + b.total_flops
    # the inputs are unchanged
    assert a.by_kind == {"train": 6000.0, "eval": 100.0}
    assert b.by_kind == {"train": 3000.0, "probe": 120.0}
    merged.add("train", 1)
    assert a.by_kind["train"] == 6000.0


def test_state_dict_round_trip():
    ledger = ComputeLedger()
    ledger.add_training("train", 4, 8)
    ledger.add_forward("eval", 4, 2)
    other = ComputeLedger()
    other.load_state_dict(json.loads(json.dumps(ledger.state_dict())))
    assert other.by_kind == ledger.by_kind and other.tokens_by_kind == ledger.tokens_by_kind


def test_since_gives_what_was_counted_after_a_state_dict():
    ledger = ComputeLedger()
    ledger.add_training("train", 4, 8)
    before = ledger.state_dict()
    ledger.add_training("probe", 2, 10)
    ledger.add_forward("eval", 4, 2)
    spent = ledger.since(before)
    assert spent.by_kind == {"probe": 120.0, "eval": 16.0} and spent.tokens_by_kind == {"probe": 10.0, "eval": 2.0}
    assert ledger.since(ledger.state_dict()).by_kind == {}  # nothing since now


def test_save_load_compute_json(tmp_path):
    ledger = ComputeLedger()
    ledger.add_training("train", 1_000, 300)  # 1.8e6
    ledger.add_forward("eval", 1_000, 100)  # 2e5
    path = ledger.save(str(tmp_path / "run"))  # folder created
    assert path == str(tmp_path / "run" / COMPUTE_FILE)
    data = json.loads((tmp_path / "run" / COMPUTE_FILE).read_text())
    assert data["total_flops"] == 2_000_000.0
    assert data["by_kind"] == {"train": 1_800_000.0, "eval": 200_000.0}
    assert data["share_by_kind"] == pytest.approx({"train": 0.9, "eval": 0.1})
    assert data["tokens_by_kind"] == {"train": 300.0, "eval": 100.0}
    assert data["formula"] == FORMULA and "6*N" in FORMULA and "2*N" in FORMULA
    assert not list((tmp_path / "run").glob("*.tmp*"))  # atomic write left no temp file

    for source in (path, str(tmp_path / "run")):  # the file or its folder
        loaded = ComputeLedger.load(source)
        assert loaded.by_kind == ledger.by_kind
        assert loaded.tokens_by_kind == ledger.tokens_by_kind
        assert loaded.total_flops == 2_000_000.0


def test_save_overwrites(tmp_path):
    ledger = ComputeLedger()
    ledger.add("train", 1)
    ledger.save(str(tmp_path))
    ledger.add("train", 2)
    ledger.save(str(tmp_path))
    assert ComputeLedger.load(str(tmp_path)).by_kind == {"train": 3.0}


def test_summary():
    ledger = ComputeLedger()
    ledger.add("train", 750)
    ledger.add("eval", 250)
    assert ledger.summary() == "total 1e+03 FLOPs: eval 250 (25.0%), train 750 (75.0%)"
    assert ComputeLedger().summary().startswith("total 0 FLOPs")


def test_thread_safe_accumulation():
    ledger = ComputeLedger()

    def work():
        for _ in range(2000):
            ledger.add("train", 1.0, 1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.by_kind["train"] == 8000.0 and ledger.tokens_by_kind["train"] == 8000.0


def test_write_json_atomic_handles_numpy_and_mappings(tmp_path):
    from types import MappingProxyType

    import numpy as np

    path = write_json_atomic(str(tmp_path / "x.json"), {"a": np.arange(3), "b": MappingProxyType({"k": 1})})
    assert json.loads(Path(path).read_text()) == {"a": [0, 1, 2], "b": {"k": 1}}
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        write_json_atomic(str(tmp_path / "y.json"), {"a": object()})


# -- N: non-embedding parameters ----------------------------------------------------------------


def test_non_embedding_parameters_tiny_llama():
    model = tiny_llama(vocab_size=300)
    n = non_embedding_parameters(model)
    assert n == model.num_parameters(exclude_embeddings=True)
    assert isinstance(n, int)
    embed = model.get_input_embeddings().weight.numel()
    assert 0 < n < model.num_parameters()
    assert n <= model.num_parameters() - embed


def test_non_embedding_parameters_plain_module_fallback():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)  # 400, excluded
            self.proj = torch.nn.Linear(8, 4)  # 36
            self.out = torch.nn.Linear(4, 50, bias=False)  # 200
            self.tied = torch.nn.Linear(8, 50, bias=False)
            self.tied.weight = self.embed.weight  # shares the embedding: excluded
            self.shared = self.proj  # the same module twice: counted once

    assert non_embedding_parameters(Plain()) == 36 + 200


def test_ledger_with_real_model_N():
    model = tiny_llama(vocab_size=300)
    n = non_embedding_parameters(model)
    ledger = ComputeLedger()
    ledger.add_training("train", n, 1024)
    ledger.add_forward("eval", n, 512)
    assert ledger.total_flops == 6 * n * 1024 + 2 * n * 512
