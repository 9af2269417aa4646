"""The shipped corpus and tokenizer, the text extractors and the big-corpus builder."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
from collections import Counter

import pytest

from hf_datamix.data import corpus_build, sources
from hf_datamix.data.embedded import (
    EMBEDDED_DIR,
    embedded_corpus_files,
    embedded_domain_names,
    embedded_tokenizer_path,
    load_embedded_tokenizer,
)


def _texts(path: str) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def embedded_texts() -> dict[str, dict[str, list[str]]]:
    return {
        name: {split: _texts(path) for split, path in files.items()} for name, files in embedded_corpus_files().items()
    }


@pytest.fixture(scope="module")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_tokenizer_path(), local_files_only=True)


# ------------------------------------------------------------------------------ embedded corpus
def test_embedded_domains_have_train_and_eval_of_real_size(embedded_texts):
    names = embedded_domain_names()
    assert names == sorted(names) and len(names) >= 6
    assert {"code", "docs", "scripture", "dictionary", "jargon"} <= set(names)
    for name in names:
        assert re.fullmatch(r"[a-z0-9_]+", name)
        train = sum(len(t.encode()) for t in embedded_texts[name]["train"])
        evals = sum(len(t.encode()) for t in embedded_texts[name]["eval"])
        assert train >= 250_000, (name, train)
        assert evals >= 25_000, (name, evals)
        assert 0.04 < evals / (train + evals) < 0.12, name
    assert (EMBEDDED_DIR / "DATA_CARD.md").is_file()


def test_embedded_documents_are_chunked_and_disjoint(embedded_texts):
    for name, splits in embedded_texts.items():
        for texts in splits.values():
            assert all(0 < len(t) <= corpus_build.MAX_DOC_CHARS and t.strip() for t in texts)
        assert not set(splits["train"]) & set(splits["eval"]), name


def test_embedded_corpus_loads_with_datasets(tmp_path):
    import datasets

    files = embedded_corpus_files()
    data = datasets.load_dataset(
        "json",
        cache_dir=str(tmp_path),
        data_files={"train": [f["train"] for f in files.values()], "eval": [f["eval"] for f in files.values()]},
    )
    assert data["train"].column_names == ["text"]
    assert data["train"].num_rows > 10 * len(files) and data["eval"].num_rows >= len(files)


def _bigram_distribution(texts: list[str]) -> Counter:
    text = "".join(texts)[:80_000]
    return Counter(text[i : i + 2] for i in range(len(text) - 1))


def _js_divergence(p: Counter, q: Counter) -> float:
    np, nq = sum(p.values()), sum(q.values())
    total = 0.0
    for key in p.keys() | q.keys():
        a, b = p[key] / np, q[key] / nq
        m = (a + b) / 2
        total += (a * math.log2(a / m) if a else 0) + (b * math.log2(b / m) if b else 0)
    return total / 2


def test_embedded_domains_differ(embedded_texts):
    dists = {n: _bigram_distribution(s["train"]) for n, s in embedded_texts.items()}
    divergences = {(a, b): _js_divergence(dists[a], dists[b]) for a, b in itertools.combinations(sorted(dists), 2)}
    # the two English dictionaries of wit (jargon, satire) are the closest pair, at about 0.06
    assert min(divergences.values()) > 0.04, divergences
    assert sum(divergences.values()) / len(divergences) > 0.2


def test_embedded_corpus_files_rejects_unknown_domain():
    assert set(embedded_corpus_files("scripture")) == {"scripture"}
    with pytest.raises(ValueError, match=r"'nope'.*known: \[.*'scripture'"):
        embedded_corpus_files(["scripture", "nope"])


# ------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_special_tokens_and_round_trip(embedded_tokenizer, embedded_texts):
    tokenizer = embedded_tokenizer
    assert len(tokenizer) == 4096
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    samples = [s["eval"][0] for s in embedded_texts.values()]
    samples.append("  tabs\tand émojis 🙂, Grüße, 日本語\n\n")
    for text in samples:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("a<|endoftext|>"))[-1] == "<|endoftext|>"
    assert type(load_embedded_tokenizer()).__name__ == type(tokenizer).__name__


def test_tokenizer_chat_template_marks_assistant_tokens(embedded_tokenizer):
    tokenizer = embedded_tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == ("<|system|>\nBe brief.\n<|user|>\nWhat is 2 + 2?\n<|assistant|>\n4<|endoftext|>\n")
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "4<|endoftext|>"
    with pytest.raises(Exception, match="chat roles"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)


# ---------------------------------------------------------------------------------- extractors
def test_chunk_text_respects_limit_and_keeps_text():
    text = "\n\n".join(f"paragraph {i} " + "word " * 50 for i in range(100))
    chunks = sources.chunk_text(text, 1000)
    assert all(len(c) <= 1000 for c in chunks) and len(chunks) > 10
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_html_to_text_keeps_main_content_only():
    page = (
        "<html><head><title>t</title><style>p{}</style></head><body>"
        "<div class='related'>NAV</div><div role='main'><h1>Title<a>\u00b6</a></h1>"
        "<p>Some   <code>code</code>\n text.</p><ul><li><p>one</p></li><li>two</li></ul>"
        "<pre>x = 1\n    y = 2</pre></div><div class='footer'>FOOT</div></body></html>"
    )
    text = sources.html_to_text(page, main_role="main")
    assert text == "Title\n\nSome code text.\n\n- one\n\n- two\n\nx = 1\n    y = 2"


def test_dictd_reader(tmp_path):
    # dictd offsets and lengths are base-64 numbers: X = 23, Q = 16, n = 39
    data = b"00-database-info\nabout\napple\n  a fruit\nbanana\n  yellow\n"
    index = ["00-database-info\tA\tX", "apple\tX\tQ", "pomme\tX\tQ", "banana\tn\tQ"]
    (tmp_path / "t.dict.dz").write_bytes(gzip.compress(data))
    (tmp_path / "t.index").write_text("\n".join(index) + "\n")
    assert sources.dictd_entries("t", tmp_path) == ["apple\n  a fruit", "banana\n  yellow"]


def test_arithmetic_answers_are_right():
    doc = sources.arithmetic_document(seed=3, index=7, problems=200)
    checked = 0
    for problem in doc.split("\n\n"):
        m = re.match(r"Problem: (\d+) ([-+*]) (\d+) = \?\n.*\nAnswer: (\d+)$", problem, re.DOTALL)
        if m:
            a, op, b, answer = m.groups()
            assert eval(f"{a} {op} {b}") == int(answer), problem  # trusted, generated text
            checked += 1
    assert checked > 50
    assert doc == sources.arithmetic_document(seed=3, index=7, problems=200)


# ------------------------------------------------------------------------------- corpus builder
def test_man_page_domains_read_only_their_packages_pages(monkeypatch, tmp_path):
    """A translated man-page folder also holds other installed packages' pages: the domain must not depend on them."""
    root = tmp_path / "man"
    owned = {"manpages-de": [root / "de/man1/ls.1.gz", root / "de/man5/passwd.5.gz", root / "de/man1/alias.1.gz"]}
    other = root / "de/man8/apt.8.gz"  # apt's German page: on the machine, not in the domain
    for path in owned["manpages-de"] + [other]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(b".TH X 1\n.SH NAME\nx \\- y\n"))
    (root / "de/man1/alias.1.gz").unlink()
    (root / "de/man1/alias.1.gz").symlink_to(root / "de/man1/ls.1.gz")  # an alias: rendered once, at its target
    monkeypatch.setattr(corpus_build, "MAN_ROOT", str(root))
    monkeypatch.setattr(sources, "package_files", lambda pkg: owned.get(pkg, []) + [root / "de"])
    keys = [key for key, _ in corpus_build._man_pages("de", seed=0)]
    assert keys == ["de/man1/ls.1.gz", "de/man5/passwd.5.gz"]


def test_build_corpus_names_missing_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_build, "installed_packages", lambda names: set())
    with pytest.raises(corpus_build.MissingPackagesError) as err:
        corpus_build.build_corpus(tmp_path / "out", min_total_mb=0.01, domains=["scripture", "man_de", "arithmetic"])
    message = str(err.value)
    assert "scripture: needs bible-kjv, bible-kjv-text" in message
    assert "apt-get install -y bible-kjv bible-kjv-text groff-base manpages-de" in message
    assert "--allow-missing" in message and not (tmp_path / "out").exists()

    summary = corpus_build.build_corpus(
        tmp_path / "out", min_total_mb=0.01, domains="scripture,arithmetic", allow_missing=True
    )
    assert list(summary["domains"]) == ["arithmetic"]
    assert summary["skipped_domains"] == ["scripture"]


def test_build_corpus_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'nope'.*known"):
        corpus_build.build_corpus(tmp_path, domains=["nope"])
    with pytest.raises(ValueError, match="min_total_mb"):
        corpus_build.build_corpus(tmp_path, min_total_mb=0)
    assert corpus_build.main(["build", str(tmp_path), "--domains", "nope"]) == 2


def test_build_corpus_writes_layout_and_data_card(tmp_path):
    summary = corpus_build.build_corpus(tmp_path, min_total_mb=0.05, domains=["python_code"], eval_fraction=0.1)
    stats = summary["domains"]["python_code"]
    assert stats["bytes"] >= 50_000 and stats["eval"]["bytes"] > 0
    for split in ("train", "eval"):
        lines = (tmp_path / "python_code" / f"{split}.jsonl").read_text().splitlines()
        texts = [json.loads(line)["text"] for line in lines]
        assert len(texts) == stats[split]["docs"]
        assert all(0 < len(t) <= corpus_build.MAX_DOC_CHARS for t in texts)
    assert "python_code" in (tmp_path / "DATA_CARD.md").read_text()
    on_disk = json.loads((tmp_path / "corpus.json").read_text())
    assert on_disk["domains"]["python_code"]["bytes"] == stats["bytes"]


def test_eval_split_takes_the_fraction_without_huge_documents():
    assert corpus_build.eval_indices([100] * 50, 0.1) == {0, 1, 2, 3, 4}
    assert corpus_build.eval_indices([5000] + [100] * 50, 0.05) == {1, 2, 3, 4, 5}
    assert corpus_build.eval_indices([5000, 6000], 0.05) == {0}
    assert corpus_build.eval_indices([5000], 0.05) == set()


def test_build_corpus_is_deterministic(tmp_path):
    for out in ("a", "b"):
        corpus_build.build_corpus(tmp_path / out, min_total_mb=0.05, domains=["arithmetic"])
    for split in ("train", "eval"):
        name = f"arithmetic/{split}.jsonl"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
