"""Instruction task domains with exact answers, derived at run time from the shipped corpus.

Each task turns text that :mod:`hf_datamix.data.embedded` already ships into short question/answer
records in TRL's conversational prompt-completion format::

    {"prompt": [{"role": "user", "content": question}],
     "completion": [{"role": "assistant", "content": answer}], "answer": answer, "task": name}

so an SFT trainer can train on them (loss on the completion) and :func:`exact_match` can score
generated answers.  Nothing is downloaded and the build is deterministic: the same ``seed`` gives the
same records, split 90/10 into train/eval by a hash of the prompt.  ``DATA_CARD.md`` ("Instruction
tasks") documents each task's source, construction rule, filters and counts.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import itertools
import json
import random
import re
import textwrap
import unicodedata
from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import cache

from .embedded import embedded_corpus_files


TASK_NAMES = ("define", "term", "arith", "pyname", "book", "devil")
EVAL_PER_MILLE = 100  # eval share of each task, by a hash of the prompt
MIN_PROMPT_CHARS, MAX_PROMPT_CHARS = 20, 300  # the gloss/definition/docstring/verse quoted
MAX_ANSWER_CHARS, MAX_ANSWER_WORDS = 30, 4
ARITH_PROBLEMS = 3000

_ABBREV = r"(?<!\be\.g)(?<!\bi\.e)(?<!\besp)(?<!\betc)(?<!\bvs)(?<!\bcf)(?<!\bMr)(?<!\bDr)(?<!\bSt)(?<!\bposs)"
_SENTENCE_END = re.compile(_ABBREV + r"[.!?](?=\s+[A-Z\"'“‘(\[]|\s*$)")


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = _SENTENCE_END.search(text)
    return text[: m.end()] if m else text


@cache
def _texts(domain: str) -> tuple[str, ...]:
    """All documents (train and eval pieces) of one shipped corpus domain, in file order."""
    out: list[str] = []
    for path in embedded_corpus_files(domain)[domain].values():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out += [json.loads(line)["text"] for line in f]
    return tuple(out)


def _entries(text: str) -> list[tuple[str, str]]:
    """dictd-style entries of a document: (headword line, indented body); a leading piece with no
    headword (a long entry cut by the corpus chunker) is dropped."""
    entries: list[list] = []
    for line in text.split("\n"):
        if line and not line[0].isspace():
            entries.append([line.strip(), []])
        elif entries:
            entries[-1][1].append(line)
    return [(head, "\n".join(body)) for head, body in entries]


# ----------------------------------------------------------------------------------- generators
# Each yields (question text quoted in the prompt, prompt, answer); _build filters and splits.
def _define(seed):
    for text in _texts("dictionary"):
        for head, body in _entries(text):
            for sense in re.split(r"\n {4}(?:(?:n|v|adj|adv) +)?\d+: ", "\n" + body)[1:]:
                sense = " ".join(sense.split())
                syns = {
                    s.strip().lower()
                    for group in re.findall(r"\[syn:(.*?)\]", sense)
                    for s in re.findall(r"\{(.*?)\}", group)
                }
                gloss = re.sub(r"\[(?:syn|ant|also):.*?\]", "", sense)
                gloss = re.split(r';?\s*"', gloss)[0].strip(" ;")
                letter = head[:1].lower()
                # WordNet synonyms share a gloss: keep only senses whose first letter picks the headword
                if not letter.isalpha() or any(s[:1] == letter for s in syns - {head.lower()}):
                    continue
                yield (
                    gloss,
                    (
                        f'Which word or phrase, starting with "{letter}", is defined as: "{gloss}"? '
                        "Answer with the word or phrase only."
                    ),
                    head,
                )


def _jargon(seed):
    for text in _texts("jargon"):
        for head, body in _entries(text):
            body = "\n".join(line for line in body.split("\n") if line.startswith("    ") or not line.strip())
            paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body) if p.strip()]
            numbered = [m.group(1) for p in paras if (m := re.match(r"\d+\.\s+(.*)", p))]
            plain = [p for p in paras if not re.fullmatch(r"\[[^\]]*\]", p)]
            for sense in numbered or plain[:1]:
                sense = re.sub(r"^(?:\[[^\]]*\]\s*|(?:n|v|vt|vi|adj|adv|interj|excl)\.,?\s+)+", "", sense)
                sense = re.sub(r"\{\s*([^}]*?)\s*\}", r"\1", sense)
                if re.match(r"(?:Syn|See|Compare|Same as|Also)\b", sense):
                    continue  # a cross-reference names another entry, not a definition
                definition = _first_sentence(sense)
                yield (
                    definition,
                    (f'Which Jargon File term is defined as: "{definition}"? Answer with the term only.'),
                    head,
                )


def _arith(seed):
    rng = random.Random(f"instruct-arith:{seed}")  # str seeds hash with SHA-512: stable
    for _ in range(ARITH_PROBLEMS):
        kind = rng.randrange(6)
        if kind == 0:
            a, b = rng.randrange(10, 1000), rng.randrange(10, 1000)
            q, ans = f"What is {a} + {b}?", a + b
        elif kind == 1:
            b = rng.randrange(10, 1000)
            a = b + rng.randrange(1, 1000)
            q, ans = f"What is {a} - {b}?", a - b
        elif kind == 2:
            a, b = rng.randrange(12, 100), rng.randrange(2, 20)
            q, ans = f"What is {a} * {b}?", a * b
        elif kind == 3:
            b, ans = rng.randrange(2, 13), rng.randrange(2, 100)
            q = f"What is {b * ans} divided by {b}?"
        elif kind == 4:
            k, ans, c = rng.randrange(2, 13), rng.randrange(-20, 21), rng.randrange(1, 60)
            q = f"Solve for x: {k}x + {c} = {k * ans + c}. What is x?"
        else:
            base, pct = 20 * rng.randrange(1, 60), 5 * rng.randrange(1, 20)  # exact results
            q, ans = f"What is {pct}% of {base}?", base * pct // 100
        yield q, f"{q} Answer with the number only.", str(ans)


_DEF = re.compile(r"^([ \t]*)(?:async[ \t]+)?def[ \t]+\w+", re.MULTILINE)
_SIG = re.compile(
    r"(?:(?:async|class|classmethod|staticmethod|abstractmethod|awaitable|coroutine) )*"
    r"([A-Za-z_][\w.]*)\((|[A-Za-z_*/][^\"\n]*)\)"
)


def _pyname(seed):
    pairs = []
    for text in _texts("code"):  # docstrings of functions and methods, each def parsed with ast
        lines = text.split("\n")
        for start, line in enumerate(lines):
            if not (m := _DEF.match(line)):
                continue
            indent, end = len(m.group(1).expandtabs()), start + 1
            while end < len(lines) and (
                not lines[end].strip()
                or lines[end].lstrip().startswith(")")
                or len(lines[end].expandtabs()) - len(lines[end].lstrip()) > indent
            ):
                end += 1
            try:  # a def cut by the corpus chunker does not parse: skipped
                node = ast.parse(textwrap.dedent("\n".join(lines[start:end]).expandtabs())).body[0]
            except SyntaxError:
                continue
            doc = ast.get_docstring(node)
            if doc and not (node.name.startswith("__") and node.name.endswith("__")):
                pairs.append((node.name, doc.strip().split("\n\n")[0]))
    for text in _texts("docs"):  # the library reference: "name(args)" then its description
        paras = [p.strip() for p in re.split(r"\n\s*\n", text)]
        for sig, desc in itertools.pairwise(paras):
            if (m := _SIG.fullmatch(sig)) and not _SIG.fullmatch(desc) and not desc.startswith(">>>"):
                pairs.append((m.group(1).split(".")[-1], desc))
    for name, doc in pairs:
        line = _first_sentence(doc)
        if line.endswith(":"):
            continue  # introduces an example, not a summary
        yield (
            line,
            (
                f'Which Python standard-library function or method is documented as: "{line}"? '
                "Answer with its name only."
            ),
            name,
        )


def _book(seed):
    for text in _texts("scripture"):
        heading = text.split("\n", 1)[0]
        if not (m := re.fullmatch(r"(\S.*) \d+", heading)):
            continue  # a later piece of a long chapter: no heading names its book
        for verse in re.findall(r"^\d+ (.+)$", text, re.MULTILINE):
            yield (
                verse,
                (
                    f'Which book of the Authorized Version of the Bible contains this verse: "{verse}"? '
                    "Answer with the book name only."
                ),
                m.group(1),
            )


def _devil(seed):
    for text in _texts("satire"):
        for para in re.split(r"\n\s*\n", text):
            if m := re.match(r"([A-Z][A-Z' -]*[A-Z]), [a-z. &]+?\.\s+(\S.*)", para, re.DOTALL):
                definition = re.sub(r"\{\s*([^}]*?)\s*\}", r"\1", m.group(2))
                definition = _first_sentence(re.sub(r"^(?:\[[^\]]*\]\s*)+", "", definition.strip()))
                yield (
                    definition,
                    (
                        f"Which word does Ambrose Bierce's Devil's Dictionary define as: "
                        f'"{definition}"? Answer with the word only.'
                    ),
                    m.group(1).lower(),
                )


_GENERATORS = {"define": _define, "term": _jargon, "arith": _arith, "pyname": _pyname, "book": _book, "devil": _devil}


def _words(text: str) -> str:
    return " " + " ".join(re.sub(r"[\W_]+", " ", text.lower()).split()) + " "


def _leaks(answer: str, prompt: str) -> bool:
    """The answer shows in the prompt: verbatim (any case) or as words up to punctuation/case."""
    return answer.lower() in prompt.lower() or _words(answer) in _words(prompt)


@cache
def _build(name: str, seed: int) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    by_prompt: dict[str, set[str]] = {}
    kept: dict[str, str] = {}
    for quoted, prompt, answer in _GENERATORS[name](seed):
        answer = " ".join(answer.split())
        by_prompt.setdefault(prompt, set()).add(_normalise(answer))  # before the answer filters
        if (
            (name != "arith" and not MIN_PROMPT_CHARS <= len(quoted) <= MAX_PROMPT_CHARS)
            or quoted.count("[") != quoted.count("]")
            or "{" in quoted
            or "}" in quoted
            or not answer
            or len(answer) > MAX_ANSWER_CHARS
            or len(answer.split()) > MAX_ANSWER_WORDS
            or _leaks(answer, prompt)
        ):
            continue
        kept.setdefault(prompt, answer)
    splits: dict[str, list[tuple[str, dict]]] = {"train": [], "eval": []}
    for prompt, answer in kept.items():
        if len(by_prompt[prompt]) > 1:
            continue  # one prompt, several answers: ambiguous
        key = hashlib.sha256(f"{name}:{seed}:{prompt}".encode()).hexdigest()
        split = "eval" if int(key[:8], 16) % 1000 < EVAL_PER_MILLE else "train"
        splits[split].append(
            (
                key,
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": answer}],
                    "answer": answer,
                    "task": name,
                },
            )
        )
    return tuple(tuple(r for _, r in sorted(splits[s], key=lambda kr: kr[0])) for s in ("train", "eval"))


def _check_names(names: str | Iterable[str] | None) -> list[str]:
    chosen = list(TASK_NAMES) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in chosen if n not in TASK_NAMES]
    if unknown:
        raise ValueError(f"unknown instruction task(s) {unknown}; known tasks: {list(TASK_NAMES)}")
    return chosen


def build_task(name: str, seed: int = 0):
    """The task ``name`` as a ``datasets.DatasetDict`` with "train" and "eval" splits (disjoint prompts).

    ``seed`` salts the train/eval hash (and the arithmetic generator); the same seed gives the same data.
    """
    import datasets

    _check_names([name])
    train, evaluation = _build(name, int(seed))
    return datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(list(train)), "eval": datasets.Dataset.from_list(list(evaluation))}
    )


def task_domain_set(names: str | Iterable[str] | None = None, seed: int = 0):
    """A :class:`~hf_datamix.DomainSet` with one domain per task (all of :data:`TASK_NAMES` by default).

    The records are prompt/completion conversations for :class:`~hf_datamix.DataMixSFTTrainer`.
    """
    from ..domains import DomainSet, DomainSpec

    specs = []
    for name in _check_names(names):
        data = build_task(name, seed)
        specs.append(DomainSpec(name=name, train=data["train"], eval=data["eval"]))
    return DomainSet(specs)


_NUMBER_WITH_COMMAS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _normalise(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFKC", str(text)).split()).lower()
    text = text.strip("\"'`“”‘’ ").rstrip(".,;:!? ").strip("\"'`“”‘’ ")
    return text.replace(",", "") if _NUMBER_WITH_COMMAS.fullmatch(text) else text


def _number(text: str) -> Fraction | None:
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def exact_match(prediction: str, answer: str) -> bool:
    """Whether ``prediction`` is ``answer`` up to case, whitespace, surrounding quotes and trailing
    punctuation; numbers compare by value ("3.0" matches "3", "1,200" matches "1200").

    The prediction is not cut: stop generation at the end of the answer (eos) before scoring.
    """
    pred, gold = _normalise(prediction), _normalise(answer)
    if pred == gold:
        return True
    pred_num, gold_num = _number(pred), _number(gold)
    return pred_num is not None and gold_num is not None and pred_num == gold_num


def task_error(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """1 - exact-match accuracy of ``predictions`` against ``answers`` (same length, not empty)."""
    predictions, answers = list(predictions), list(answers)
    if len(predictions) != len(answers) or not answers:
        raise ValueError(
            f"task_error: {len(predictions)} predictions for {len(answers)} answers; "
            "give one prediction per answer (and at least one)."
        )
    return 1.0 - sum(map(exact_match, predictions, answers)) / len(answers)
