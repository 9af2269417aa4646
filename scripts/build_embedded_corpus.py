#!/usr/bin/env python
"""Regenerate hf_datamix/data/embedded/: the shipped corpus, its tokenizer and DATA_CARD.md.

Only public-domain or permissively licensed text goes in (the shipped files are redistributed).
The build is deterministic: sorted file lists, seeded orders, gzip without timestamps, one
tokenizer training thread.  It reads Debian 12 (bookworm) packages; install them first:

    apt-get update && apt-get install -y libpython3.11-stdlib python3.11-doc bible-kjv \\
        bible-kjv-text dict-wn dict-jargon dict-devil

Usage: python scripts/build_embedded_corpus.py [--out DIR]   (default: the package folder)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path


os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers loads: one thread, one result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hf_datamix.data import corpus_build, sources
from hf_datamix.data.embedded import EMBEDDED_DIR


SEED = 0
BUDGET = 500_000  # bytes of text per domain
EVAL_FRACTION = 0.07  # about 35 KB of eval text for a full domain
VOCAB_SIZE = 4096
EOS, PAD = "<|endoftext|>", "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
STDLIB = Path("/usr/lib/python3.11")
PYDOCS = Path("/usr/share/doc/python3.11/html")
PSF = "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2"

# Stdlib parts the copyright file lists under other (permissive) licences are left out, so the
# whole domain is under one licence; encodings/ and pydoc_data/ are tables and docs, not code.
CODE_EXCLUDE = [
    "site-packages/*",
    "dist-packages/*",
    "config-*",
    "lib-dynload/*",
    "encodings/*",
    "pydoc_data/*",
    "logging/*",
    "multiprocessing/*",
    "sqlite3/*",
    "async*",
    "tarfile.py",
    "turtle.py",
]
DOCS_EXCLUDE = [
    "license.html",
    "copyright.html",
    "genindex*.html",
    "py-modindex.html",
    "search.html",
    "whatsnew/changelog.html",
]


@dataclass(frozen=True)
class Domain:
    name: str
    package: str  # the Debian package whose copyright file gives the licence
    extra_packages: tuple[str, ...]
    items: object  # callable: () -> list[sources.Item]
    source: str
    extraction: str
    licence_quote: str  # must appear (whitespace-normalised) in the copyright file


DOMAINS = [
    Domain(
        "code",
        "libpython3.11-stdlib",
        ("libpython3.11-minimal",),
        partial(sources.file_items, STDLIB, ["*.py"], "stdlib", CODE_EXCLUDE, 200_000),
        "Python 3.11 standard library source (`/usr/lib/python3.11/**/*.py`)",
        "Whole `.py` files sampled in a seeded random order; files over 200 KB, `encodings/`, "
        "`pydoc_data/` and the modules the copyright file lists under other licences "
        "(logging, multiprocessing, sqlite3, async*, tarfile, turtle) left out.",
        PSF,
    ),
    Domain(
        "docs",
        "python3.11-doc",
        (),
        partial(sources.html_items, PYDOCS, "pydocs", "main", exclude=DOCS_EXCLUDE),
        "Python 3.11 documentation HTML (`/usr/share/doc/python3.11/html`)",
        "The main content of each page converted to plain text (navigation, sidebars and "
        "permalink marks dropped; code blocks kept verbatim); pages sampled in a seeded order; "
        "licence, index, search and changelog pages left out.",
        PSF,
    ),
    Domain(
        "scripture",
        "bible-kjv-text",
        ("bible-kjv",),
        sources.kjv_chapter_items,
        "King James Bible text (`/usr/lib/bible.data`, read with the `bible` program)",
        "One chapter a document (heading, then numbered verses), chapters sampled in a seeded order.",
        "The copyright for the King James Version text of the Bible is expired",
    ),
    Domain(
        "dictionary",
        "dict-wn",
        (),
        partial(sources.dictd_items, "wn"),
        "WordNet 3.0 in dictd format (`/usr/share/dictd/wn.dict.dz`)",
        "Entries (headword, part of speech, numbered senses with glosses, examples and "
        "synonyms) in file order, grouped into documents of about 3000 characters, groups "
        "sampled in a seeded order.",
        "License: WordNet3.0",
    ),
    Domain(
        "jargon",
        "dict-jargon",
        (),
        partial(sources.dictd_items, "jargon"),
        "The Jargon File 4.4.7 in dictd format (`/usr/share/dictd/jargon.dict.dz`)",
        "Entries grouped into documents of about 3000 characters, groups sampled in a seeded order.",
        "Copyright: The Jargon File is in the public domain",
    ),
    Domain(
        "satire",
        "dict-devil",
        (),
        partial(sources.dictd_items, "devil"),
        "Ambrose Bierce, The Devil's Dictionary, in dictd format (`/usr/share/dictd/devil.dict.dz`)",
        "All entries (the dictd metadata entries dropped), grouped into documents of about 3000 characters.",
        "The Devil's Dictionary is in the public domain, its copyright has expired.",
    ),
    Domain(
        "arithmetic",
        "",
        (),
        partial(sources.arithmetic_items, 2000, SEED),
        "Generated by `hf_datamix.data.sources.arithmetic_document` (seed 0)",
        "Documents of 12 problems (addition, subtraction, multiplication, division with "
        "remainder, linear equations, fractions, percentages), each with worked steps and "
        "the answer.",
        "",
    ),
]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('chat roles are system, user and assistant, not ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>\\n' -}}"
    "{%- generation -%}{{- message['content'] + '" + EOS + "' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _copyright(package: str) -> str:
    return Path(f"/usr/share/doc/{package}/copyright").read_text("utf-8", "replace")


def _wordnet_notice() -> str:
    """The WordNet licence block, which its terms require on every copy."""
    lines = _copyright("dict-wn").splitlines()
    start = lines.index("License: WordNet3.0") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith(" "):
            break
        block.append("" if line.strip() == "." else line.strip())
    return "\n".join(block)


def check_sources() -> dict[str, str]:
    """Package versions; exits with the install command if a package or licence line is missing."""
    needed = sorted({p for d in DOMAINS for p in (d.package, *d.extra_packages) if p})
    versions = sources.package_versions(needed)
    missing = [p for p in needed if p not in versions]
    if missing:
        sys.exit(
            f"missing Debian packages: {', '.join(missing)}\ninstall them with: apt-get install -y {' '.join(missing)}"
        )
    for d in DOMAINS:
        if d.package and _normalised(d.licence_quote) not in _normalised(_copyright(d.package)):
            sys.exit(
                f"{d.name}: licence line {d.licence_quote!r} not found in "
                f"/usr/share/doc/{d.package}/copyright; re-check the licence before shipping"
            )
    return versions


def build_corpus(out: Path) -> dict[str, dict]:
    """Write out/corpus/<domain>/{train,eval}.jsonl.gz; returns the split sizes per domain."""
    stats = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for d in DOMAINS:
            stream = corpus_build.DocumentStream(d.name, d.items(), SEED, pool)
            stream.pull(BUDGET)
            stats[d.name] = corpus_build.write_domain(
                out / "corpus", d.name, stream.docs, EVAL_FRACTION, compress=True
            )
            print(
                f"{d.name:<11} train {stats[d.name]['train']['bytes']:>7} B  "
                f"eval {stats[d.name]['eval']['bytes']:>6} B"
            )
    return stats


def _train_texts(out: Path):
    for d in DOMAINS:
        with gzip.open(out / "corpus" / d.name / "train.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def build_tokenizer(out: Path) -> None:
    """Train the byte-level BPE tokenizer on the train splits and save it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_train_texts(out), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=ROLE_TOKENS,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(str(out / "tokenizer"))
    # transformers 5 writes a config that 4.x cannot read (a "TokenizersBackend" class, a list of
    # extra_special_tokens, the template in its own file); write the form both read
    config_path = out / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("backend", None)
    config.pop("extra_special_tokens", None)
    config.update(
        tokenizer_class="PreTrainedTokenizerFast", additional_special_tokens=ROLE_TOKENS, chat_template=CHAT_TEMPLATE
    )
    (out / "tokenizer" / "chat_template.jinja").unlink(missing_ok=True)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_data_card(out: Path, stats: dict[str, dict], versions: dict[str, str]) -> None:
    """Write DATA_CARD.md: sources, extraction, licences and sizes of each domain."""
    lines = [
        "# Embedded corpus and tokenizer",
        "",
        (
            "Small multi-domain corpus shipped with hf_datamix for tests, examples and quick "
            "experiments. Only public-domain or permissively licensed text is included. Regenerate "
            "everything in this folder with `python scripts/build_embedded_corpus.py` on Debian 12 "
            "(see the script's docstring for the packages); the build is deterministic."
        ),
        "",
        (
            f"Layout: `corpus/<domain>/train.jsonl.gz` and `eval.jsonl.gz`, one JSON object "
            f'`{{"text": ...}}` a line, a document (or a piece of at most '
            f"{corpus_build.MAX_DOC_CHARS} characters of one; pieces of a document stay in one "
            f'split; "docs" below counts lines). Eval takes source documents from the front of a '
            f"seeded random order until it holds about {EVAL_FRACTION:.0%} of the domain's bytes "
            f"(a document that would overshoot by half is passed over). Each domain takes about "
            f"{BUDGET // 1000} KB of text (UTF-8 bytes)."
        ),
        "",
        "| domain | source package (version) | train docs | train bytes | eval docs | eval bytes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for d in DOMAINS:
        s = stats[d.name]
        pkg = f"{d.package} {versions[d.package]}" if d.package else "generated"
        lines.append(
            f"| {d.name} | {pkg} | {s['train']['docs']} | {s['train']['bytes']} | "
            f"{s['eval']['docs']} | {s['eval']['bytes']} |"
        )
    for d in DOMAINS:
        used = ", ".join(f"{p} {versions[p]}" for p in (d.package, *d.extra_packages) if p)
        lines += [
            "",
            f"## {d.name}",
            "",
            f"- Source: {d.source}" + (f"; packages {used}." if used else "."),
            f"- Extraction: {d.extraction}",
        ]
        if d.package:
            lines.append(f'- Licence (from `/usr/share/doc/{d.package}/copyright`): "{d.licence_quote}"')
        else:
            lines.append("- Licence: generated text, no licence applies.")
        if d.name == "dictionary":
            notice = "\n".join(f"> {line}" if line else ">" for line in _wordnet_notice().split("\n"))
            lines += ["- WordNet's licence asks that this notice appear on all copies:", "", notice]
        if d.name == "jargon":
            lines.append('- Cite as "Jargon File 4.4.7", as the file asks.')
    lines += [
        "",
        "## Tokenizer",
        "",
        (
            f"`tokenizer/`: byte-level BPE (`tokenizers` library) with a vocabulary of "
            f"{VOCAB_SIZE}, trained on the train splits of all domains above (GPT-2 style "
            f"byte-level pre-tokenizer, no normalizer, so any text round-trips exactly). "
            f"Special tokens: `{EOS}` (id 0, used as both eos and bos), `{PAD}` (id 1, "
            f"padding) and the chat role markers {', '.join(f'`{t}`' for t in ROLE_TOKENS)}. "
            "No token is added automatically when encoding. The chat template (in "
            "`tokenizer_config.json`) writes `<|role|>\\ncontent\\n` per message and wraps "
            f"assistant content plus the closing `{EOS}` in `{{% generation %}}` markers, so "
            "assistant-only loss masks work. Load it offline with "
            "`AutoTokenizer.from_pretrained(embedded_tokenizer_path())`; the files load with "
            "transformers 4.56+ and 5.x."
        ),
        "",
    ]
    (out / "DATA_CARD.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=EMBEDDED_DIR, help="folder to write corpus/, tokenizer/ and DATA_CARD.md into"
    )
    args = parser.parse_args(argv)
    versions = check_sources()
    for sub in ("corpus", "tokenizer"):  # stale domains or files must not survive a rebuild
        shutil.rmtree(args.out / sub, ignore_errors=True)
    stats = build_corpus(args.out)
    build_tokenizer(args.out)
    write_data_card(args.out, stats, versions)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
