"""Build a large multi-domain text corpus from text that Debian and Python packages install.

``build_corpus(out_dir)`` writes ``out_dir/<domain>/train.jsonl`` and ``eval.jsonl`` (uncompressed
JSON Lines, one ``{"text": ...}`` document of at most 4000 characters a line), ``corpus.json``
(sizes and source packages per domain) and ``DATA_CARD.md``.  The corpus is built on the user's
machine and never shipped, so text under any licence its packages allow (GPL included) may be
used.  The shipped, permissively licensed corpus lives in :mod:`hf_datamix.data.embedded`.

CLI: ``hf-datamix corpus build OUT_DIR [--min-total-mb N] [--domains a,b] [--allow-missing]`` and
``hf-datamix corpus info`` (also ``python -m hf_datamix.data.corpus_build ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import site
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from . import sources
from .embedded import embedded_corpus_files


log = logging.getLogger(__name__)
MB = 1_000_000  # sizes are decimal megabytes of UTF-8 text
MAX_DOC_CHARS = 4000


@dataclass(frozen=True)
class SourceDomain:
    """One domain that :func:`build_corpus` can make, and where its text comes from."""

    name: str
    packages: tuple[str, ...]  # Debian packages it reads; "a|b" means either will do
    description: str
    licence: str
    items: Callable[[int], list[sources.Item]]  # seed -> the domain's source documents
    #: Built when no domains are named; False for a domain that overlaps another (asked for by name).
    default: bool = True


def _python_code(seed: int) -> list[sources.Item]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    items = sources.file_items(stdlib, ["*.py"], "stdlib", exclude=["site-packages/*", "dist-packages/*"])
    for folder in sorted(set(site.getsitepackages() + [site.getusersitepackages()])):
        if Path(folder).is_dir():
            items += sources.file_items(folder, ["*.py"], f"site:{folder}")
    return items


def _python_stdlib(seed: int) -> list[sources.Item]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sources.file_items(stdlib, ["*.py"], "stdlib", exclude=["site-packages/*", "dist-packages/*"])


def _python_docs(seed: int) -> list[sources.Item]:
    roots = [
        p.parent for p in sorted(Path("/usr/share/doc").glob("python3*/html/index.html")) if not p.parent.is_symlink()
    ]
    exclude = ["license.html", "copyright.html", "genindex*.html", "py-modindex.html", "search.html"]
    return sources.html_items(roots[-1], "python-docs", "main", exclude=exclude) if roots else []


def _dictd(names: tuple[str, ...], seed: int) -> list[sources.Item]:
    return [
        item
        for name in names
        if Path(f"/usr/share/dictd/{name}.index").is_file()
        for item in sources.dictd_items(name)
    ]


#: The packages whose pages make each man-page domain.  Only these: /usr/share/man/<lang> also holds the
#: pages of whatever else the machine has installed (apt, dpkg, procps, ...), which would make the domain,
#: and the size of any domain that fills the corpus total after it, differ from one machine to the next.
MAN_PAGE_PACKAGES = {
    "en": ("manpages", "manpages-dev"),  # the Linux man-pages project: all of man1 is mostly vendor CLI pages
    "de": ("manpages-de",),
    "fr": ("manpages-fr",),
    "es": ("manpages-es",),
}
MAN_ROOT = "/usr/share/man"


def _man_pages(lang: str, seed: int) -> list[sources.Item]:
    folder = MAN_ROOT if lang == "en" else f"{MAN_ROOT}/{lang}"
    section = re.compile(re.escape(folder) + r"/man\d[^/]*/[^/]+$")
    paths = [
        p
        for pkg in MAN_PAGE_PACKAGES[lang]
        for p in sources.package_files(pkg)
        if section.match(str(p)) and p.is_file() and not p.is_symlink()
    ]
    return sources.man_page_items(paths, lang)


#: Leaves: finer domains cut from one source domain by each document's key (its file path, page, man
#: section, dictionary or book), first matching rule wins, so the leaves of a source partition it the same
#: way on every machine with the same packages.  Leaves overlap their source: built only when named.
_NT_BOOKS = (
    "Matthew",
    "Mark",
    "Luke",
    "John",
    "Acts",
    "Romans",
    "1 Corinthians",
    "2 Corinthians",
    "Galatians",
    "Ephesians",
    "Philippians",
    "Colossians",
    "1 Thessalonians",
    "2 Thessalonians",
    "1 Timothy",
    "2 Timothy",
    "Titus",
    "Philemon",
    "Hebrews",
    "James",
    "1 Peter",
    "2 Peter",
    "1 John",
    "2 John",
    "3 John",
    "Jude",
    "Revelation",
)
_STDLIB_TOOLS = "idlelib|tkinter|turtledemo|lib2to3|distutils|pydoc_data|ensurepip|venv"
LEAF_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "python_stdlib": (
        ("stdlib_test", r"^stdlib/(test/|.*/(tests?|idle_test)/)"),
        ("stdlib_tools", rf"^stdlib/({_STDLIB_TOOLS})/"),
        ("stdlib_modules", r"^stdlib/[^/]+$"),
        ("stdlib_packages", r""),
    ),
    "python_docs": (
        ("docs_library", r"^python-docs/library/"),
        ("docs_whatsnew", r"^python-docs/whatsnew/"),
        ("docs_capi", r"^python-docs/(c-api|extending)/"),
        ("docs_guides", r""),
    ),
    "scripture": (("kjv_nt", rf"^kjv/({'|'.join(_NT_BOOKS)}) \d+$"), ("kjv_ot", r"")),
    "computing": (("jargon", r"^dictd-jargon/"), ("foldoc", r"^dictd-foldoc/")),
    # C headers by the Debian package that installs them (other -dev packages differ between machines).
    "c_headers": (("headers_linux", "package:linux-libc-dev"), ("headers_glibc", "package:libc6-dev")),
}


def leaf_of(source: str, key: str) -> str | None:
    """The leaf of ``source`` that the document ``key`` belongs to (None: no leaf takes it)."""
    for leaf, rule in LEAF_RULES[source]:
        if rule.startswith("package:"):
            if "/usr/include/" + key.split("/", 1)[1] in _package_paths(rule[len("package:") :]):
                return leaf
        elif re.search(rule, key):
            return leaf
    return None


@cache
def _package_paths(package: str) -> frozenset[str]:
    return frozenset(str(p) for p in sources.package_files(package))


def _leaf_items(source: str, leaf: str, seed: int) -> list[sources.Item]:
    return [item for item in DOMAINS[source].items(seed) if leaf_of(source, item[0]) == leaf]


def _leaves() -> list[tuple[str, SourceDomain]]:
    out = []
    for source, rules in LEAF_RULES.items():
        parent = DOMAINS[source]
        for leaf, rule in rules:
            what = "the documents no earlier leaf took" if not rule else f"documents whose key matches {rule!r}"
            packages = (rule[len("package:") :],) if rule.startswith("package:") else parent.packages
            out.append(
                _domain(
                    leaf,
                    packages,
                    f"A leaf of {source}: {what}. {parent.description}",
                    parent.licence,
                    partial(_leaf_items, source, leaf),
                    default=False,
                )
            )
    return out


def _domain(name, packages, description, licence, items, default=True) -> tuple[str, SourceDomain]:
    return name, SourceDomain(name, tuple(packages), description, licence, items, default)


DOMAINS: dict[str, SourceDomain] = dict(
    [
        _domain(
            "python_code",
            [],
            "Python source code: the running interpreter's standard library "
            "and every installed site-packages .py file.",
            "per file: the standard library is PSF-2.0, other packages carry their own licences",
            _python_code,
        ),
        _domain(
            "python_stdlib",
            [],
            "Python source code of the running interpreter's standard library only: "
            "the same text on every machine with the same Python (benchmarks need that).",
            "PSF-2.0 (Python Software Foundation License Version 2)",
            _python_stdlib,
            default=False,
        ),
        _domain(
            "c_headers",
            ["libc6-dev"],
            "C and C++ header files under /usr/include.",
            "per package: glibc LGPL-2.1+, Linux UAPI GPL-2 with syscall note, others per "
            "/usr/share/doc/<pkg>/copyright",
            lambda seed: sources.file_items("/usr/include", ["*.h", "*.hpp", "*.hh"], "include"),
        ),
        _domain(
            "python_docs",
            ["python3-doc|python3.11-doc|python3.12-doc|python3.13-doc"],
            "The Python documentation (library reference, tutorial, HOWTOs), HTML pages converted to plain text.",
            "PSF-2.0 (Python Software Foundation License Version 2)",
            _python_docs,
        ),
        _domain(
            "scripture",
            ["bible-kjv", "bible-kjv-text"],
            "The King James Bible, one chapter a document, read through the `bible` program.",
            "public domain (the KJV text's copyright has expired)",
            lambda seed: sources.kjv_chapter_items(),
        ),
        _domain(
            "gcide",
            ["dict-gcide"],
            "GNU Collaborative International Dictionary of English (Webster 1913 based) entries.",
            "GPL-2+",
            partial(_dictd, ("gcide",)),
        ),
        _domain(
            "wordnet",
            ["dict-wn"],
            "WordNet 3.0 entries: senses, glosses, examples, synonyms.",
            "WordNet 3.0 licence (permissive; keep Princeton's copyright notice)",
            partial(_dictd, ("wn",)),
        ),
        _domain(
            "computing",
            ["dict-jargon", "dict-foldoc"],
            "The Jargon File and FOLDOC (the Free On-line Dictionary of Computing) entries.",
            "Jargon File public domain; FOLDOC GFDL-1.1+",
            partial(_dictd, ("jargon", "foldoc")),
        ),
        _domain(
            "satire",
            ["dict-devil"],
            "Ambrose Bierce's The Devil's Dictionary.",
            "public domain",
            partial(_dictd, ("devil",)),
        ),
        _domain(
            "quotes",
            ["fortunes"],
            "fortune(6) quotations, jokes and epigrams.",
            "BSD-style (fortune-mod); quotations belong to their authors",
            lambda seed: sources.fortune_items(),
        ),
        _domain(
            "man_en",
            ["manpages", "manpages-dev", "groff-base"],
            "English Linux man pages (system calls, C library, files, conventions) rendered to text with groff.",
            "per page: GPL-2+, BSD and the Linux man-pages copyleft licence",
            partial(_man_pages, "en"),
        ),
        _domain(
            "man_de",
            ["manpages-de", "groff-base"],
            "German man pages rendered with groff.",
            "GPL-3+ (manpages-l10n translations)",
            partial(_man_pages, "de"),
        ),
        _domain(
            "man_fr",
            ["manpages-fr", "groff-base"],
            "French man pages rendered with groff.",
            "GPL-3+ (manpages-l10n translations)",
            partial(_man_pages, "fr"),
        ),
        _domain(
            "man_es",
            ["manpages-es", "groff-base"],
            "Spanish man pages rendered with groff.",
            "GPL-3+ (manpages-l10n translations)",
            partial(_man_pages, "es"),
        ),
        _domain(
            "sysadmin",
            ["debian-reference-en"],
            "The Debian Reference (system administration guide), HTML chapters converted to text.",
            "GPL-2+",
            lambda seed: sources.html_items(
                "/usr/share/debian-reference",
                "debian-reference",
                skip_classes=("navheader", "navfooter"),
                patterns=["*.en.html"],
            ),
        ),
        # Generated documents are made only when taken, so the domain can fill any share (up to ~135 MB).
        _domain(
            "arithmetic",
            [],
            "Generated arithmetic problems (addition, subtraction, "
            "multiplication, division, linear equations, fractions, percentages) with worked "
            "answers.",
            "generated by hf_datamix, no licence",
            lambda seed: sources.arithmetic_items(100_000, seed),
        ),
    ]
)
DOMAINS.update(_leaves())


class MissingPackagesError(RuntimeError):
    """Raised when domains need Debian packages that are not installed."""

    def __init__(self, missing: dict[str, list[str]]):
        self.missing = missing
        packages = sorted({p.split("|")[0] for pkgs in missing.values() for p in pkgs})
        lines = [f"  {name}: needs {', '.join(pkgs)}" for name, pkgs in sorted(missing.items())]
        super().__init__(
            "these corpus domains need Debian packages that are not installed:\n"
            + "\n".join(lines)
            + "\nInstall them (as root) with:\n  apt-get update && apt-get install -y "
            + " ".join(packages)
            + "\nor pass --allow-missing (allow_missing=True) to build without those domains."
        )


def installed_packages(names: Iterable[str]) -> set[str]:
    """The Debian packages among ``names`` that are installed (empty where there is no dpkg)."""
    return set(sources.package_versions(names))


def missing_packages(domains: Sequence[SourceDomain]) -> dict[str, list[str]]:
    """Domain name -> its package requirements (``"a|b"`` = either) that are not installed."""
    wanted = {alt for d in domains for req in d.packages for alt in req.split("|")}
    have = installed_packages(wanted)
    missing = {}
    for domain in domains:
        absent = [req for req in domain.packages if not set(req.split("|")) & have]
        if absent:
            missing[domain.name] = absent
    return missing


def _order_key(seed: int, domain: str, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{domain}:{key}".encode()).digest()


def _load(item: sources.Item) -> str:
    try:
        return item[1]().strip("\n")
    except (OSError, UnicodeError, subprocess.SubprocessError) as err:
        # one unreadable file or page that groff chokes on should not stop a 200 MB build
        log.warning("skipping %s: %s", item[0], err)
        return ""


class DocumentStream:
    """Loads one domain's documents in a seeded random order, a byte budget at a time."""

    def __init__(self, name: str, items: list[sources.Item], seed: int, pool: ThreadPoolExecutor):
        self.name = name
        self._pending = sorted(items, key=lambda it: _order_key(seed, name, it[0]))
        self._pool = pool
        self._loaded: list[tuple[str, str]] = []  # loaded ahead of need, in order
        self.docs: list[tuple[str, list[str]]] = []  # (key, pieces of at most MAX_DOC_CHARS)
        self.bytes = 0
        self.exhausted = not self._pending

    def pull(self, max_bytes: float) -> int:
        """Take documents until ``max_bytes`` more are taken or none are left; returns bytes taken."""
        start = self.bytes
        while self.bytes - start < max_bytes and not self.exhausted:
            if not self._loaded:
                # load a parallel batch; what is not needed now stays for the next pull, so the
                # documents taken do not depend on the batch size or on the number of workers
                batch, self._pending = self._pending[:64], self._pending[64:]
                texts = self._pool.map(_load, batch)
                self._loaded = [(key, t) for (key, _), t in zip(batch, texts) if t.strip()]
                self.exhausted = not self._loaded and not self._pending
                continue
            key, text = self._loaded.pop(0)
            pieces = sources.chunk_text(text, MAX_DOC_CHARS)  # sized as written
            self.docs.append((key, pieces))
            self.bytes += sum(len(p.encode("utf-8")) for p in pieces)
        return self.bytes - start


def eval_indices(sizes: Sequence[int], eval_fraction: float) -> set[int]:
    """Positions of the documents that go to eval: from the front, about ``eval_fraction`` of bytes.

    Documents that would overshoot the target by half are passed over, so one huge document
    cannot make the eval split; train always keeps at least one document.
    """
    target = eval_fraction * sum(sizes)
    chosen: set[int] = set()
    if target <= 0 or len(sizes) < 2:
        return chosen
    held = 0
    for i, size in enumerate(sizes):
        if held >= target:
            break
        if held + size <= 1.5 * target:
            chosen.add(i)
            held += size
    if not chosen:  # every document is bigger than the target: the smallest one will do
        chosen.add(min(range(len(sizes)), key=sizes.__getitem__))
    return chosen


def write_domain(
    out_dir: str | Path, name: str, docs: list[tuple[str, list[str]]], eval_fraction: float, compress: bool = False
) -> dict:
    """Write ``docs`` as ``out_dir/name/{train,eval}.jsonl[.gz]``; returns the split sizes.

    ``docs`` holds ``(key, pieces)`` in seeded random order (see :class:`DocumentStream`); each
    piece becomes one line.  Eval takes documents from the front (see :func:`eval_indices`); the
    pieces of a document stay in one split.  Gzip output is byte-for-byte reproducible.
    """
    folder = Path(out_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    to_eval = eval_indices([sum(len(p.encode("utf-8")) for p in pieces) for _, pieces in docs], eval_fraction)
    stats = {split: {"docs": 0, "bytes": 0, "sources": 0} for split in ("train", "eval")}
    suffix = ".jsonl.gz" if compress else ".jsonl"
    with contextlib.ExitStack() as stack:
        handles = {}
        for split in ("train", "eval"):
            raw = stack.enter_context(open(folder / f"{split}{suffix}", "wb"))
            handles[split] = (
                stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)) if compress else raw
            )
        for i, (_, pieces) in enumerate(docs):
            split = "eval" if i in to_eval else "train"
            stats[split]["sources"] += 1
            for chunk in pieces:
                handles[split].write((json.dumps({"text": chunk}, ensure_ascii=False) + "\n").encode("utf-8"))
                stats[split]["docs"] += 1
                stats[split]["bytes"] += len(chunk.encode("utf-8"))
    stats["files"] = {s: f"{name}/{s}{suffix}" for s in ("train", "eval")}
    return stats


def _resolve_domains(domains: str | Sequence[str] | None) -> list[SourceDomain]:
    if domains is None:
        return [d for d in DOMAINS.values() if d.default]
    names = [d.strip() for d in domains.split(",")] if isinstance(domains, str) else list(domains)
    unknown = [n for n in names if n not in DOMAINS]
    if unknown:
        raise ValueError(f"domains: unknown corpus domain(s) {unknown}; known: {sorted(DOMAINS)}")
    return [DOMAINS[n] for n in dict.fromkeys(names)]


def build_corpus(
    out_dir: str | Path,
    min_total_mb: float = 200,
    domains: str | Sequence[str] | None = None,
    eval_fraction: float = 0.02,
    seed: int = 0,
    allow_missing: bool = False,
    workers: int | None = None,
) -> dict:
    """Build a multi-domain corpus of at least ``min_total_mb`` MB of text into ``out_dir``.

    Every domain gets an equal share of the total; what small domains cannot fill goes to the
    larger ones.  Domains whose Debian packages are missing raise :class:`MissingPackagesError`
    unless ``allow_missing``, which skips them.  Returns the ``corpus.json`` summary.
    """
    if not isinstance(min_total_mb, (int, float)) or min_total_mb <= 0:
        raise ValueError(f"min_total_mb must be a positive number of MB, got {min_total_mb!r}")
    if not 0 <= eval_fraction < 0.5:
        raise ValueError(f"eval_fraction must be in [0, 0.5), got {eval_fraction!r}")
    chosen = _resolve_domains(domains)
    missing = missing_packages(chosen)
    if missing and not allow_missing:
        raise MissingPackagesError(missing)
    for name in missing:
        log.warning("skipping domain %s: missing packages %s", name, ", ".join(missing[name]))
    chosen = [d for d in chosen if d.name not in missing]
    if not chosen:
        raise MissingPackagesError(missing) if missing else ValueError("domains: none chosen")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        streams = []
        for domain in chosen:
            items = domain.items(seed)
            if not items:
                hint = (
                    f"domain {domain.name!r} found no text although its packages "
                    f"({', '.join(domain.packages) or 'none'}) are installed; a dpkg path-exclude "
                    "in /etc/dpkg/dpkg.cfg.d/ (common in container images) may drop docs/man pages"
                )
                if not allow_missing:
                    raise RuntimeError(hint + "; or pass --allow-missing to skip it")
                log.warning(hint)
                continue
            streams.append(DocumentStream(domain.name, items, seed, pool))
        remaining, active = min_total_mb * MB, list(streams)
        while remaining > 0 and active:  # water-filling: equal shares, leftovers re-shared
            share = remaining / len(active)
            for stream in active:
                remaining -= stream.pull(share)
            active = [s for s in active if not s.exhausted]
            log.info("%.1f MB still to take from %d domains with text left", max(remaining, 0) / MB, len(active))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "format": "jsonl",
        "min_total_mb": min_total_mb,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "skipped_domains": sorted(missing),
        "domains": {},
    }
    for stream in streams:
        domain = DOMAINS[stream.name]
        stats = write_domain(out_dir, stream.name, stream.docs, eval_fraction)
        stats.update(
            bytes=stats["train"]["bytes"] + stats["eval"]["bytes"],
            docs=stats["train"]["docs"] + stats["eval"]["docs"],
            packages=sources.package_versions(alt for req in domain.packages for alt in req.split("|")),
            description=domain.description,
            licence=domain.licence,
        )
        summary["domains"][stream.name] = stats
    summary["total_bytes"] = sum(d["bytes"] for d in summary["domains"].values())
    summary["seconds"] = round(time.monotonic() - started, 1)
    if summary["total_bytes"] < min_total_mb * MB:
        log.warning(
            "only %.1f MB of text available, below min_total_mb=%s: install more packages or add domains",
            summary["total_bytes"] / MB,
            min_total_mb,
        )
    (out_dir / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "DATA_CARD.md").write_text(_data_card(summary))
    return summary


def _data_card(summary: dict) -> str:
    lines = [
        "# Locally built hf_datamix corpus",
        "",
        (
            f"Built by `hf_datamix.data.corpus_build.build_corpus` (min_total_mb="
            f"{summary['min_total_mb']}, seed={summary['seed']}, eval_fraction="
            f"{summary['eval_fraction']}) from text installed on this machine. Each "
            '`<domain>/train.jsonl` / `eval.jsonl` line is `{"text": ...}`, one document '
            f"(or a piece of at most {MAX_DOC_CHARS} characters of one). Sizes are UTF-8 "
            "bytes. Do not redistribute without checking each domain's licence."
        ),
        "",
        "| domain | train docs | train bytes | eval docs | eval bytes | packages |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, d in summary["domains"].items():
        pkgs = ", ".join(f"{p} {v}" for p, v in sorted(d["packages"].items())) or "-"
        lines.append(
            f"| {name} | {d['train']['docs']} | {d['train']['bytes']} | "
            f"{d['eval']['docs']} | {d['eval']['bytes']} | {pkgs} |"
        )
    lines += ["", f"Total: {summary['total_bytes']} bytes.", ""]
    for name, d in summary["domains"].items():
        lines += [f"## {name}", "", d["description"], "", f"Licence: {d['licence']}", ""]
    if summary["skipped_domains"]:
        lines += [f"Skipped (packages missing): {', '.join(summary['skipped_domains'])}", ""]
    return "\n".join(lines)


def _info() -> None:
    print("Embedded corpus (shipped with hf_datamix):")
    for name, files in embedded_corpus_files().items():
        sizes = ", ".join(f"{s} {os.path.getsize(p) / 1e3:.0f} KB gz" for s, p in files.items())
        print(f"  {name:<12} {sizes}")
    missing = missing_packages(list(DOMAINS.values()))
    print("\nDomains `corpus build` can make on this machine:")
    for name, domain in DOMAINS.items():
        state = f"missing {', '.join(missing[name])}" if name in missing else "ready"
        summary = domain.description.split(". ")[0].rstrip(".")
        by_name = "" if domain.default else " (only when named: overlaps another domain)"
        print(f"  {name:<12} {state:<24} {summary[:80]}{by_name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hf-datamix corpus {build,info}``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="hf-datamix corpus", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a large local corpus from installed packages")
    build.add_argument("out_dir", help="folder to write <domain>/train.jsonl, eval.jsonl into")
    build.add_argument("--min-total-mb", type=float, default=200, help="total text size (MB)")
    build.add_argument("--domains", help=f"comma-separated subset of: {','.join(DOMAINS)}")
    build.add_argument(
        "--allow-missing", action="store_true", help="skip domains whose Debian packages are not installed"
    )
    build.add_argument("--eval-fraction", type=float, default=0.02)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--workers", type=int, default=None, help="parallel loaders (CPU count)")
    sub.add_parser("info", aliases=["list"], help="list embedded and buildable domains")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command in ("info", "list"):
        _info()
        return 0
    try:
        summary = build_corpus(
            args.out_dir,
            args.min_total_mb,
            args.domains,
            args.eval_fraction,
            args.seed,
            args.allow_missing,
            args.workers,
        )
    except (MissingPackagesError, ValueError) as err:
        print(f"error: {err}")
        return 2
    for name, d in summary["domains"].items():
        print(f"{name:<12} {d['bytes'] / MB:8.2f} MB  {d['docs']:7d} docs")
    print(
        f"total {summary['total_bytes'] / MB:.2f} MB in {len(summary['domains'])} domains, "
        f"{summary['seconds']} s -> {args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
