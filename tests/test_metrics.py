"""The evaluate metrics shipped in hf_datamix/metrics: offline loading, exact match, answer NLL."""

from __future__ import annotations

import math

import evaluate
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from hf_datamix.data.instruct_tasks import exact_match, task_error
from hf_datamix.metrics import METRICS, load_metric, metric_path
from hf_datamix.simulate.task_scoring import answer_logprobs, answer_nlls


CASES = [  # (prediction, gold)
    ("3.0", "3"),
    ("3", "3.0"),
    ("1,200", "1200"),
    ("-4", "-4.00"),
    ("0.5", "1/2"),
    ("3.1", "3"),
    ("Paris.", "paris"),
    ('"Genesis"', "Genesis"),
    ("  foo   bar ", "foo bar"),
    ("foo", "bar"),
    ("", "x"),
    ("x", ""),
    ("1e3", "1000"),
    ("12", "1,2"),
]


@pytest.mark.parametrize("name", METRICS)
def test_shipped_metrics_load_offline_from_their_folder(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(metric_path(name), keep_in_memory=True)
    assert isinstance(metric, evaluate.Metric)
    assert load_metric(name) is load_metric(name)  # loaded once per process


def test_exact_match_metric_agrees_with_the_library_comparison():
    predictions, golds = zip(*CASES)
    result = load_metric("exact_match").compute(predictions=list(predictions), references=list(golds))
    assert result["matches"] == [int(exact_match(p, g)) for p, g in CASES]
    assert result["matches"][:5] == [1, 1, 1, 1, 1] and result["matches"][5] == 0  # numbers compare by value
    assert result["task_error"] == pytest.approx(task_error(predictions, golds))
    assert result["exact_match"] == pytest.approx(1 - result["task_error"])


def test_answer_nll_metric_reduces_per_answer_and_per_token():
    result = load_metric("answer_nll").compute(predictions=[[-1.0, -0.5], [-2.0], [-0.25, -0.25, -0.5]])
    assert result["nll_per_answer"] == pytest.approx((1.5 + 2.0 + 1.0) / 3)
    assert result["nll_per_token"] == pytest.approx(4.5 / 6)
    assert (result["num_answers"], result["num_tokens"]) == (3, 6)
    with pytest.raises(ValueError, match="at least one token"):
        load_metric("answer_nll").compute(predictions=[[-1.0], []])
    with pytest.raises(ValueError, match="<= 0"):
        load_metric("answer_nll").compute(predictions=[[0.5]])


def _examples(eos: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for prompt_len, answer_len in [(4, 3), (6, 1), (3, 5)]:
        prompt = torch.randint(2, 300, (prompt_len,), generator=gen).tolist()
        answer = torch.randint(2, 300, (answer_len,), generator=gen).tolist()
        # The answer, its eos, then a template's trailing token that is labelled but not part of the answer.
        ids = prompt + answer + [eos, 7]
        out.append({"input_ids": ids, "labels": [-100] * prompt_len + ids[prompt_len:], "answer_len": answer_len + 1})
    return out


def _hand_logprobs(model, example) -> list[float]:
    ids = example["input_ids"]
    start = len(ids) - example["answer_len"] - 1
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return [float(logp[t - 1, ids[t]]) for t in range(start, start + example["answer_len"])]


@pytest.mark.parametrize("collator_kwargs", [{}, {"padding_free": True}], ids=["padded", "padding-free"])
def test_answer_nll_equals_hand_computed_nll(tokenizer, collator_kwargs):
    model = tiny_llama(len(tokenizer), seed=3).eval()
    eos = tokenizer.eos_token_id
    examples = _examples(eos)
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, **collator_kwargs)
    rows = [{k: e[k] for k in ("input_ids", "labels")} for e in examples]
    batches = {"d": [collator(rows[:2]), collator(rows[2:])]}
    got = answer_logprobs(model, batches, eos_token_id=eos)["d"]
    hand = [_hand_logprobs(model, e) for e in examples]
    assert [len(g) for g in got] == [e["answer_len"] for e in examples]  # cut after eos
    for g, h in zip(got, hand):
        assert g == pytest.approx(h, abs=1e-4)
    nll = answer_nlls(model, batches, eos_token_id=eos)["d"]
    assert nll["nll_per_answer"] == pytest.approx(sum(-sum(h) for h in hand) / 3, rel=1e-4)
    assert nll["nll_per_token"] == pytest.approx(-sum(map(sum, hand)) / sum(map(len, hand)), rel=1e-4)


def test_answer_nll_ranks_a_model_trained_on_the_answers_above_an_untrained_one(tokenizer):
    eos = tokenizer.eos_token_id
    rows = [{k: e[k] for k in ("input_ids", "labels")} for e in _examples(eos)]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(rows)
    untrained = tiny_llama(len(tokenizer), seed=3)
    trained = tiny_llama(len(tokenizer), seed=3)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    for _ in range(30):
        loss = trained(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    before = answer_nlls(untrained, {"d": [batch]}, eos_token_id=eos)["d"]["nll_per_answer"]
    after = answer_nlls(trained, {"d": [batch]}, eos_token_id=eos)["d"]["nll_per_answer"]
    assert after < 0.5 * before and math.isfinite(before)


def test_the_metric_scripts_are_package_data():
    import configparser
    import fnmatch
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["hf_datamix"].split(",")]
    scripts = [p.relative_to(root / "hf_datamix").as_posix() for p in (root / "hf_datamix" / "metrics").glob("*/*.py")]
    assert sorted(scripts) == sorted(f"metrics/{m}/{m}.py" for m in METRICS)
    assert all(any(fnmatch.fnmatch(s, p) for p in patterns) for s in scripts)
