"""Instruction task domains built from the shipped corpus: format, splits, filters, balance, scoring, and the
calibration command (benchmarks/instruct_tasks_calibration.py) at a tiny size on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from trl.data_utils import is_conversational

from hf_datamix import DomainSet
from hf_datamix.data.instruct_tasks import (
    MAX_ANSWER_CHARS,
    MAX_ANSWER_WORDS,
    TASK_NAMES,
    _leaks,
    build_task,
    exact_match,
    majority_error,
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
    "pos": (800, 80),
    "section": (1800, 200),
    "add": (1500, 150),
    "cloze": (1900, 200),
}
BALANCED = ("pos", "section")  # classification tasks, classes cut to the median class's size
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        assert not _leaks(answer, prompt), (name, answer, prompt)  # nor as the same words
    if name in ("arith", "add"):
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


@pytest.mark.parametrize("name", ["define", "pos"])  # pos: the balancing does not depend on the seed
def test_seed_changes_the_split_only(name):
    a, b = build_task(name, seed=0), build_task(name, seed=1)

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


@pytest.mark.parametrize("name", BALANCED)
def test_classes_balanced(tasks, name):
    counts = Counter([*tasks[name]["train"]["answer"], *tasks[name]["eval"]["answer"]])
    expected = {"pos": 4, "section": 5}[name]
    assert len(counts) == expected, counts
    # the median class's size caps every class: no class is more than about 1/2 of the classes' share
    assert max(counts.values()) / sum(counts.values()) <= 2 / expected, counts
    assert set(tasks[name]["eval"]["answer"]) == set(counts)


@pytest.mark.parametrize("name", ["pos", "section", "add", "cloze"])
def test_majority_error_floor(tasks, name):
    """The new tasks leave room to learn: always giving the commonest answer is wrong most of the time."""
    floor = majority_error(name)
    answers = tasks[name]["eval"]["answer"]
    assert floor >= 0.6
    common = Counter(tasks[name]["train"]["answer"]).most_common(1)[0][0]
    assert floor == pytest.approx(task_error([common] * len(answers), answers))


def test_new_task_rules():
    pos, section = build_task("pos")["train"][0], build_task("section")["train"][0]
    assert pos["answer"] in {"noun", "verb", "adjective", "adverb"} and "part of speech" in pos["prompt"][0]["content"]
    assert section["answer"] in {"Pentateuch", "Historical books", "Poetic books", "Prophetic books", "New Testament"}
    for row in build_task("add")["train"]:
        a, op, b = row["prompt"][0]["content"].split("?")[0].split()[-3:]
        assert int(a) < 100 and int(b) < 100 and int(row["answer"]) >= 0
        assert int(row["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    cloze = build_task("cloze")["train"][0]["prompt"][0]["content"]
    assert "___" in cloze and cloze.count('"') == 2


def test_calibration_command_end_to_end(tmp_path):
    """benchmarks/instruct_tasks_calibration.py: one base, each task one stage from it, the results file."""
    results = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "instruct_tasks_calibration.py"),
        "--out",
        str(tmp_path / "run"),
        "--results",
        str(results),
        "--config",
        os.path.join(ROOT, "recipes", "configs", "instruct.yaml"),
        "--tasks",
        "pos,add",
        "--steps_per_stage",
        "2",
        "--pretrain_steps",
        "2",
        "--task_eval_examples",
        "4",
        "--max_eval_blocks",
        "4",
        "--disable_tqdm",
        "true",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((results / "instruct_tasks_calibration.json").read_text())
    assert payload["status"] == "complete" and list(payload["tasks"]) == ["pos", "add"]
    assert payload["command"].startswith("python3 benchmarks/instruct_tasks_calibration.py")
    assert payload["device"] and "commit" in payload and payload["settings"]["steps_per_stage"] == 2
    for name, entry in payload["tasks"].items():
        assert 0 <= entry["error"] <= 1 and entry["answer_nll"] > 0 and entry["eval_prompts"] == 4
        assert entry["majority_error"] == pytest.approx(majority_error(name))
        assert entry["records"] == {"train": len(build_task(name)["train"]), "eval": len(build_task(name)["eval"])}
    assert (tmp_path / "run" / "pretrain" / "final").is_dir()  # one base, shared by the tasks
