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
from collections import Counter
from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import cache

from .embedded import embedded_corpus_files


# The last four answer from a small set of classes or by a rule (issue 20, item 2): the first six are at
# their floor (exact-match error 0.92-1.0) for a 20M model, which cannot tell strategies apart.
TASK_NAMES = ("define", "term", "arith", "pyname", "book", "devil", "pos", "section", "add", "cloze")
EVAL_PER_MILLE = 100  # eval share of each task, by a hash of the prompt
MIN_PROMPT_CHARS, MAX_PROMPT_CHARS = 20, 300  # the gloss/definition/docstring/verse quoted
MAX_ANSWER_CHARS, MAX_ANSWER_WORDS = 30, 4
ARITH_PROBLEMS = 3000  # problems drawn for arith and for add (duplicates kept once)

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
_POS_TAG = re.compile(r"\n {4}(?:(n|v|adj|adv) +)?\d+: ")
_POS_NAMES = {"n": "noun", "v": "verb", "adj": "adjective", "adv": "adverb"}


def _wordnet_senses():
    """(headword, part-of-speech tag, gloss, synonyms) of every numbered sense of the WordNet entries;
    the gloss has the ``[syn: ...]`` lists and the quoted usage examples cut off."""
    for text in _texts("dictionary"):
        for head, body in _entries(text):
            parts = _POS_TAG.split("\n" + body)
            tag = None
            for new_tag, sense in zip(parts[1::2], parts[2::2]):
                tag = new_tag or tag  # "2: ..." continues the part of speech of the sense before
                sense = " ".join(sense.split())
                syns = {
                    s.strip().lower()
                    for group in re.findall(r"\[syn:(.*?)\]", sense)
                    for s in re.findall(r"\{(.*?)\}", group)
                }
                gloss = re.sub(r"\[(?:syn|ant|also):.*?\]", "", sense)
                yield head, tag, re.split(r';?\s*"', gloss)[0].strip(" ;"), syns


def _define(seed):
    for head, _, gloss, syns in _wordnet_senses():
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


def _verses():
    """(book, verse) of every chapter whose heading is in the same corpus piece."""
    for text in _texts("scripture"):
        if m := re.fullmatch(r"(\S.*) \d+", text.split("\n", 1)[0]):
            for verse in re.findall(r"^\d+ (.+)$", text, re.MULTILINE):
                yield m.group(1), verse


def _book(seed):
    for book, verse in _verses():
        yield (
            verse,
            (
                f'Which book of the Authorized Version of the Bible contains this verse: "{verse}"? '
                "Answer with the book name only."
            ),
            book,
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


# The tasks below are meant to be partly learnable by a 20M model in one stage (~200 steps of 32), so
# their exact-match error lands between the majority-class floor and 0 (issue 20 asks for 0.2-0.9).
def _pos(seed):
    # A classification read from the gloss's form: verb glosses start with a verb ("move fast"),
    # adjective ones with "having", "of or relating to", adverb ones with "in a ... manner": enough to
    # get well under the balanced floor (0.67).  Many glosses follow no such pattern ("a person who ..."
    # vs "characterized by ..." is easy, "lacking ..." or a bare noun phrase is not), which should keep
    # the error above 0.2.  Four answers, cut to balance (nouns are 72 % of the senses).
    for _, tag, gloss, _ in _wordnet_senses():
        if tag:
            yield (
                gloss,
                f'Which part of speech is the word whose WordNet gloss is: "{gloss}"? Answer with one word.',
                _POS_NAMES[tag],
            )


_SECTIONS = {  # the traditional divisions of the Protestant canon, in canonical order
    "Pentateuch": "Genesis Exodus Leviticus Numbers Deuteronomy",
    "Historical books": "Joshua Judges Ruth 1_Samuel 2_Samuel 1_Kings 2_Kings 1_Chronicles 2_Chronicles Ezra "
    "Nehemiah Esther",
    "Poetic books": "Job Psalms Proverbs Ecclesiastes Song_of_Solomon",
    "Prophetic books": "Isaiah Jeremiah Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah Nahum "
    "Habakkuk Zephaniah Haggai Zechariah Malachi",
    "New Testament": "Matthew Mark Luke John Acts Romans 1_Corinthians 2_Corinthians Galatians Ephesians "
    "Philippians Colossians 1_Thessalonians 2_Thessalonians 1_Timothy 2_Timothy Titus Philemon Hebrews James "
    "1_Peter 2_Peter 1_John 2_John 3_John Jude Revelation",
}
_SECTION_OF = {book.replace("_", " "): name for name, books in _SECTIONS.items() for book in books.split()}


def _section(seed):
    # book's coarse version: five answers (balanced, floor 0.81) instead of 66, told apart by vocabulary
    # and style (ritual law, kings and battles, psalm and proverb, "thus saith the LORD", Jesus and the
    # apostles): below 0.9 once a model picks these up.  Neighbouring divisions share much (the narrative
    # of Exodus and of Kings, the poetry of Psalms and of Isaiah), which should keep it above 0.2.
    # The labels are not KJV words, so no verse is dropped for containing its answer.
    for book, verse in _verses():
        if book not in _SECTION_OF:
            raise ValueError(f"instruct task 'section': book {book!r} of the scripture corpus is in no section")
        yield (
            verse,
            f'Which section of the King James Bible is this verse from: "{verse}"? Answer with the section name only.',
            _SECTION_OF[book],
        )


def _add(seed):
    # Addition and subtraction of 1- and 2-digit numbers; arith's 3-digit sums, products and equations
    # are beyond a 20M model after one stage.  Each operand is 1 or 2 digits with equal odds, so about a
    # quarter are single-digit facts a small model memorises (and many two-digit ones need no carry),
    # which should bring the error under 0.9; carries and borrows should keep it above 0.2.
    rng = random.Random(f"instruct-add:{seed}")
    for _ in range(ARITH_PROBLEMS):
        a, b = (rng.randrange(10) if rng.random() < 0.5 else rng.randrange(10, 100) for _ in range(2))
        if rng.random() < 0.5:
            q, ans = f"What is {a} + {b}?", a + b
        else:
            a, b = max(a, b), min(a, b)  # no negative results
            q, ans = f"What is {a} - {b}?", a - b
        yield q, f"{q} Answer with the number only.", str(ans)


def _cloze(seed):
    # Language modelling as a task: the last word of a verse, blanked.  Open vocabulary, so far above
    # 0.2, but the words that end verses are few and frequent (him, them, Israel, LORD, thee, ...) and
    # the context often predicts them ("for ever", "saith the LORD"), so a base pretrained on the corpus
    # should get more than one in ten right.  The riskiest of the four: it may stay above 0.9.  A word
    # that also occurs earlier in its verse is dropped by the leak filter.
    for _, verse in _verses():
        if m := re.fullmatch(r"(.*\s)([A-Za-z][A-Za-z']*)(\W*)", verse):
            quoted = f"{m.group(1)}___{m.group(3)}"
            yield (
                quoted,
                f'Which word is missing at the end of this verse: "{quoted}"? Answer with the word only.',
                m.group(2),
            )


_GENERATORS = {
    "define": _define,
    "term": _jargon,
    "arith": _arith,
    "pyname": _pyname,
    "book": _book,
    "devil": _devil,
    "pos": _pos,
    "section": _section,
    "add": _add,
    "cloze": _cloze,
}
_BALANCED = ("pos", "section")  # classes cut to the median class's size (see _balance)
_GENERATED = ("arith", "add")  # no quoted text: the length filter does not apply


def _words(text: str) -> str:
    return " " + " ".join(re.sub(r"[\W_]+", " ", text.lower()).split()) + " "


def _leaks(answer: str, prompt: str) -> bool:
    """The answer shows in the prompt: verbatim (any case) or as words up to punctuation/case."""
    return answer.lower() in prompt.lower() or _words(answer) in _words(prompt)


def _balance(name: str, kept: dict[str, str]) -> dict[str, str]:
    """``kept`` (prompt -> answer) with every answer held by at most as many prompts as the median answer.

    Without it always answering the largest class scores well without learning (nouns are 72 % of the
    WordNet senses); the median keeps at least half the classes whole.  Which prompts stay is chosen by a
    hash of the prompt without the seed, so the seed still changes the split only.
    """
    by_answer: dict[str, list[str]] = {}
    for prompt, answer in kept.items():
        by_answer.setdefault(answer, []).append(prompt)
    sizes = sorted(len(prompts) for prompts in by_answer.values())
    cap = sizes[len(sizes) // 2]
    chosen = {
        prompt
        for prompts in by_answer.values()
        for prompt in sorted(prompts, key=lambda p: hashlib.sha256(f"{name}:{p}".encode()).hexdigest())[:cap]
    }
    return {p: a for p, a in kept.items() if p in chosen}


@cache
def _build(name: str, seed: int) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    by_prompt: dict[str, set[str]] = {}
    kept: dict[str, str] = {}
    for quoted, prompt, answer in _GENERATORS[name](seed):
        answer = " ".join(answer.split())
        by_prompt.setdefault(prompt, set()).add(_normalise(answer))  # before the answer filters
        if (
            (name not in _GENERATED and not MIN_PROMPT_CHARS <= len(quoted) <= MAX_PROMPT_CHARS)
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
    kept = {p: a for p, a in kept.items() if len(by_prompt[p]) == 1}  # one prompt, several answers: ambiguous
    if name in _BALANCED:
        kept = _balance(name, kept)
    splits: dict[str, list[tuple[str, dict]]] = {"train": [], "eval": []}
    for prompt, answer in kept.items():
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


def majority_error(name: str, seed: int = 0) -> float:
    """The eval error of always giving the most common train answer of task ``name``: the floor a model
    must beat to show that it learned the task rather than its answer distribution."""
    _check_names([name])
    train, evaluation = _build(name, int(seed))
    guess = Counter(_normalise(r["answer"]) for r in train).most_common(1)[0][0]
    return task_error([guess] * len(evaluation), [r["answer"] for r in evaluation])
