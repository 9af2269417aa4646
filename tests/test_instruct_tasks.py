"""Instruction task domains built from the shipped corpus: format, splits, filters, scoring."""

from __future__ import annotations

import pytest
from trl.data_utils import is_conversational

from hf_datamix import DomainSet
from hf_datamix.data.instruct_tasks import (
    MAX_ANSWER_CHARS,
    MAX_ANSWER_WORDS,
    TASK_NAMES,
    build_task,
    exact_match,
    task_domain_set,
    task_error,
)


# (train, eval) floors per task; the data card reports the exact counts (seed 0)
MIN_COUNTS = {
    "define": (1400, 150),
    "term": (700, 60),
    "arith": (2000, 200),
    "pyname": (250, 25),
    "book": (2300, 250),
    "devil": (700, 60),
}


@pytest.fixture(scope="module")
def tasks():
    return {name: build_task(name) for name in TASK_NAMES}


def test_task_names():
    assert set(MIN_COUNTS) == set(TASK_NAMES)
    assert {"define", "term", "arith", "pyname"} <= set(TASK_NAMES)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_builds_with_disjoint_splits_and_counts(tasks, name):
    data = tasks[name]
    assert set(data) == {"train", "eval"}
    assert len(data["train"]) >= MIN_COUNTS[name][0] and len(data["eval"]) >= MIN_COUNTS[name][1]
    prompts = {split: [p[0]["content"] for p in data[split]["prompt"]] for split in data}
    for split in data:
        assert len(set(prompts[split])) == len(prompts[split]), f"{name} {split}: duplicate prompts"
    assert not set(prompts["train"]) & set(prompts["eval"])
    assert set(data["train"]["task"]) == set(data["eval"]["task"]) == {name}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_answers_short_and_not_in_prompt(tasks, name):
    for split in ("train", "eval"):
        for row in tasks[name][split]:
            answer, prompt = row["answer"], row["prompt"][0]["content"]
            assert answer and answer == answer.strip()
            assert len(answer) <= MAX_ANSWER_CHARS and len(answer.split()) <= MAX_ANSWER_WORDS
            assert answer.lower() not in prompt.lower(), (name, answer, prompt)
            assert row["completion"] == [{"role": "assistant", "content": answer}]
    if name == "arith":
        assert all(int(a) == float(a) for a in tasks[name]["train"]["answer"])


@pytest.mark.parametrize("name", TASK_NAMES)
def test_trl_conversational_prompt_completion(tasks, name):
    row = tasks[name]["train"][0]
    assert is_conversational(row)
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["completion"]] == ["assistant"]
    assert set(row) == {"prompt", "completion", "answer", "task"}


def test_deterministic_across_builds(tasks):
    from hf_datamix.data import instruct_tasks

    instruct_tasks._build.cache_clear()  # rebuild from the corpus, not from the cache
    instruct_tasks._texts.cache_clear()
    for name in TASK_NAMES:
        again = build_task(name)
        for split in ("train", "eval"):
            assert again[split].to_list() == tasks[name][split].to_list(), (name, split)


def test_seed_changes_the_split_only():
    a, b = build_task("define", seed=0), build_task("define", seed=1)

    def prompts(data):
        return {p[0]["content"] for split in data for p in data[split]["prompt"]}

    assert prompts(a) == prompts(b)
    assert a["eval"]["answer"] != b["eval"]["answer"]


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match=r"nope.*define"):
        build_task("nope")
    with pytest.raises(ValueError, match="nope"):
        task_domain_set(["arith", "nope"])


def test_task_domain_set():
    domains = task_domain_set(["arith", "define"])
    assert isinstance(domains, DomainSet) and domains.names == ["arith", "define"]
    train, evaluation = domains["arith"].load()
    assert len(train) == len(build_task("arith")["train"]) and "prompt" in evaluation.column_names
    assert task_domain_set().names == list(TASK_NAMES)


@pytest.mark.parametrize(
    "prediction,answer",
    [
        (" 42.", "42"),
        ("Foo", "foo"),
        ("3.0", "3"),
        ("  great   circle ", "Great Circle"),
        ('"luser"', "luser"),
        ("-7", "-7"),
        ("1,247", "1247"),
        ("done!", "done"),
        ("0.50", "1/2"),
    ],
)
def test_exact_match_normalises(prediction, answer):
    assert exact_match(prediction, answer)


@pytest.mark.parametrize(
    "prediction,answer",
    [
        ("43", "42"),
        ("foo bar", "foo"),
        ("", "3"),
        ("-7", "7"),
        ("4 2", "42"),
        ("greatcircle", "great circle"),
    ],
)
def test_exact_match_rejects(prediction, answer):
    assert not exact_match(prediction, answer)


def test_task_error():
    assert task_error(["42", "Foo.", "x"], ["42", "foo", "y"]) == pytest.approx(1 / 3)
    assert task_error(["1"], ["1.0"]) == 0.0
    with pytest.raises(ValueError):
        task_error(["1"], ["1", "2"])
    with pytest.raises(ValueError):
        task_error([], [])


def test_answers_score_themselves(tasks):
    for name in TASK_NAMES:
        answers = tasks[name]["eval"]["answer"]
        assert task_error(answers, answers) == 0.0
