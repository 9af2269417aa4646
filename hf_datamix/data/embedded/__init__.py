"""The small corpus and tokenizer shipped inside hf_datamix (public-domain or permissive text).

``corpus/<domain>/{train,eval}.jsonl.gz`` hold one ``{"text": ...}`` document a line; they load
with ``datasets.load_dataset("json", data_files=...)``.  ``tokenizer/`` is a byte-level BPE
tokenizer (vocabulary 4096) trained on the train splits.  ``DATA_CARD.md`` gives sources and
licences; ``scripts/build_embedded_corpus.py`` regenerates everything here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


EMBEDDED_DIR = Path(__file__).resolve().parent
CORPUS_DIR = EMBEDDED_DIR / "corpus"
TOKENIZER_DIR = EMBEDDED_DIR / "tokenizer"
SPLITS = ("train", "eval")


def embedded_domain_names() -> list[str]:
    """Names of the embedded corpus domains, sorted."""
    if not CORPUS_DIR.is_dir():
        return []
    return sorted(d.name for d in CORPUS_DIR.iterdir() if all((d / f"{split}.jsonl.gz").is_file() for split in SPLITS))


def embedded_corpus_files(names: str | Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """Domain -> ``{"train": path, "eval": path}`` of the embedded corpus (all domains by default).

    Raises ValueError naming any unknown domain and the known ones.
    """
    known = embedded_domain_names()
    if names is None:
        chosen = known
    else:
        chosen = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in chosen if n not in known]
        if unknown:
            raise ValueError(f"names: unknown embedded domain(s) {unknown}; known: {known}")
    return {n: {split: str(CORPUS_DIR / n / f"{split}.jsonl.gz") for split in SPLITS} for n in chosen}


def embedded_tokenizer_path() -> str:
    """Folder of the shipped tokenizer, loadable with ``AutoTokenizer.from_pretrained``."""
    return str(TOKENIZER_DIR)


def load_embedded_tokenizer():
    """The shipped byte-level BPE tokenizer as a ``transformers.PreTrainedTokenizerFast``."""
    # imported here: transformers is slow to import and most users of this module never need it
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(embedded_tokenizer_path())
