"""Text extractors: turn text that Debian and Python packages install into plain-text documents.

Each ``*_items`` function returns a list of :data:`Item` pairs ``(key, load)``: ``key`` names one
source document (a file, a chapter, a group of dictionary entries) stably, so builders can shuffle
and split by hashing it, and ``load()`` returns that document's plain text ("" to skip it).
Loading is deferred because a builder that needs a few MB should only render those few MB
(a man page costs one groff run).  :func:`chunk_text` cuts long documents to a size limit.
"""

from __future__ import annotations

import fnmatch
import gzip
import math
import os
import random
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from html.parser import HTMLParser
from pathlib import Path


Item = tuple[str, Callable[[], str]]


def chunk_text(text: str, max_chars: int = 4000) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars`` characters, at paragraph or line ends."""
    text = text.strip("\n")
    chunks: list[str] = []
    while len(text) > max_chars:
        cut = text.rfind("\n\n", 0, max_chars)
        if cut < max_chars // 4:  # no paragraph end in reach: a line end keeps lines whole
            cut = text.rfind("\n", 0, max_chars)
        if cut < max_chars // 4:
            cut = max_chars
        head, text = text[:cut].rstrip(), text[cut:].lstrip("\n")
        if head.strip():
            chunks.append(head)
    if text.strip():
        chunks.append(text)
    return chunks


def _const(text: str) -> str:
    return text


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of a file (gzip-compressed if it ends in .gz); "" if it is not UTF-8."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        return raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:  # binary or legacy-encoded files are not worth guessing at
        return ""


def list_files(
    root: str | Path, patterns: Sequence[str], exclude: Sequence[str] = (), max_bytes: int | None = None
) -> list[Path]:
    """Regular files under ``root`` whose name matches one of ``patterns``, sorted.

    ``exclude`` holds glob patterns matched against the path relative to ``root``; symlinks are
    skipped (they duplicate another file) and so are files larger than ``max_bytes``.
    """
    found: list[Path] = []

    def visit(folder: str, rel: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        for entry in entries:
            rel_path = rel + entry.name
            if entry.is_symlink() or any(fnmatch.fnmatchcase(rel_path, p) for p in exclude):
                continue
            if entry.is_dir():
                if any(fnmatch.fnmatchcase(rel_path + "/", p) for p in exclude):
                    continue  # "dir/*" excludes the whole folder: do not walk it
                if entry.name != "__pycache__":
                    visit(entry.path, rel_path + "/")
            elif (
                entry.is_file()
                and any(fnmatch.fnmatchcase(entry.name, p) for p in patterns)
                and (max_bytes is None or entry.stat().st_size <= max_bytes)
            ):
                found.append(Path(entry.path))

    visit(str(root), "")
    return sorted(found)


def file_items(
    root: str | Path,
    patterns: Sequence[str],
    label: str,
    exclude: Sequence[str] = (),
    max_bytes: int | None = 1_000_000,
) -> list[Item]:
    """One item per matching text file under ``root`` (source code, headers, plain text)."""
    root = Path(root)
    return [
        (f"{label}/{p.relative_to(root).as_posix()}", partial(read_text_file, p))
        for p in list_files(root, patterns, exclude, max_bytes)
    ]


# ---------------------------------------------------------------------------------------- HTML
_BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "dt",
    "dd",
    "tr",
    "pre",
    "table",
    "ul",
    "ol",
    "dl",
    "br",
    "blockquote",
    "hr",
    "figure",
    "caption",
    "title",
}
_SKIP_TAGS = {"script", "style", "head", "nav", "noscript", "object"}


class _HTMLText(HTMLParser):
    def __init__(self, main_role: str | None, skip_classes: Sequence[str]):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.main_role, self.skip_classes = main_role, set(skip_classes)
        self.div_stack: list[tuple[bool, bool]] = []  # (opens main part, opens skipped part)
        self.skip_tags = 0
        self.pre = 0

    def _active(self) -> bool:
        in_main = self.main_role is None or any(m for m, _ in self.div_stack)
        return in_main and not self.skip_tags and not any(s for _, s in self.div_stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("div", "section", "main", "footer", "header"):
            classes = set((attrs.get("class") or "").split())
            self.div_stack.append(
                (
                    attrs.get("role") == self.main_role or tag == "main",
                    bool(classes & self.skip_classes) or tag == "footer",
                )
            )
        elif tag in _SKIP_TAGS:
            self.skip_tags += 1
        if tag == "pre":
            self.pre += 1
        if self._active():
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.parts.append("\n\n")
            elif tag == "li":
                self.parts.append("\n- ")
            elif tag in ("td", "th"):
                self.parts.append(" ")
            elif tag in _BLOCK_TAGS and not (self.parts and self.parts[-1] == "\n- "):
                self.parts.append("\n")  # (a paragraph right inside a list item stays on its line)

    def handle_endtag(self, tag):
        if self._active() and tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag in ("p", "pre", "h1", "h2", "h3", "h4") else "\n")
        if tag in ("div", "section", "main", "footer", "header") and self.div_stack:
            self.div_stack.pop()
        elif tag in _SKIP_TAGS:
            self.skip_tags = max(0, self.skip_tags - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data):
        if not self._active():
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
        self.parts.append(data)


def html_to_text(markup: str, main_role: str | None = None, skip_classes: Sequence[str] = ()) -> str:
    """Readable plain text of an HTML page.

    With ``main_role`` only elements with that ``role`` attribute (Sphinx: ``"main"``) count;
    elements with a class in ``skip_classes`` (navigation bars, footers) are dropped.
    """
    parser = _HTMLText(main_role, skip_classes)
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts).replace("\u00b6", "")  # Sphinx permalink pilcrows
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _load_html(path: Path, main_role: str | None, skip_classes: Sequence[str]) -> str:
    return html_to_text(read_text_file(path), main_role, skip_classes)


def html_items(
    root: str | Path,
    label: str,
    main_role: str | None = None,
    skip_classes: Sequence[str] = (),
    exclude: Sequence[str] = (),
    patterns: Sequence[str] = ("*.html",),
) -> list[Item]:
    """One item per HTML page under ``root``, loaded as plain text."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        (f"{label}/{p.relative_to(root).as_posix()}", partial(_load_html, p, main_role, tuple(skip_classes)))
        for p in list_files(root, patterns, exclude, max_bytes=None)
    ]


# ------------------------------------------------------------------------------ dictd dictionaries
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64_number(digits: str) -> int:
    value = 0
    for c in digits:
        value = value * 64 + _B64[c]
    return value


def dictd_entries(name: str, dictd_dir: str | Path = "/usr/share/dictd") -> list[str]:
    """The entries of the dictd database ``name`` (e.g. ``"wn"``), in file order, metadata dropped."""
    dictd_dir = Path(dictd_dir)
    data = gzip.decompress((dictd_dir / f"{name}.dict.dz").read_bytes())  # dictzip is gzip
    spans = set()  # many headwords point at one entry: keep each entry once
    for line in (dictd_dir / f"{name}.index").read_text("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith(("00-database", "00database")):
            continue
        spans.add((_b64_number(fields[1]), _b64_number(fields[2])))
    return [data[o : o + n].decode("utf-8", "replace").strip("\n") for o, n in sorted(spans)]


def group_texts(texts: Iterable[str], label: str, group_chars: int = 3000, sep: str = "\n\n") -> list[Item]:
    """Items made of consecutive short texts joined until a group reaches ``group_chars``."""
    items: list[Item] = []
    group: list[str] = []
    size = 0
    for text in texts:
        if not text.strip():
            continue
        group.append(text)
        size += len(text) + len(sep)
        if size >= group_chars:
            items.append((f"{label}/{len(items):06d}", partial(_const, sep.join(group))))
            group, size = [], 0
    if group:
        items.append((f"{label}/{len(items):06d}", partial(_const, sep.join(group))))
    return items


def dictd_items(name: str, dictd_dir: str | Path = "/usr/share/dictd", group_chars: int = 3000) -> list[Item]:
    """Items of alphabetically consecutive entries of the dictd database ``name``."""
    return group_texts(dictd_entries(name, dictd_dir), f"dictd-{name}", group_chars)


# ------------------------------------------------------------------------------------ scripture
def kjv_chapter_items(bible_cmd: str = "bible") -> list[Item]:
    """One item per chapter of the King James Bible, read through the ``bible`` program."""
    out = subprocess.run([bible_cmd, "-l0", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    chapters: list[list[str]] = []
    for line in out.splitlines():
        if re.fullmatch(r"\S.* \d+", line):  # "Genesis 1", "1 Kings 3": chapter headings
            chapters.append([line, ""])
        elif line.strip() and chapters:
            chapters[-1].append(line.strip())
    return [(f"kjv/{lines[0]}", partial(_const, "\n".join(lines))) for lines in chapters]


# ------------------------------------------------------------------------------------ man pages
# Ragged-right text without hyphenation: justified, hyphenated output is noise for a tokenizer.
_MAN_PRELUDE = b".ad l\n.de ad\n..\n.nh\n.de hy\n..\n"


def render_man_page(path: str | Path) -> str:
    """Plain UTF-8 text of one man page rendered by groff; "" for ``.so`` aliases and failures."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    body = [ln for ln in raw.splitlines() if ln.strip() and not ln.startswith((b'.\\"', b"'\\\""))]
    if not body or body[0].startswith(b".so "):  # an alias of another page: rendered there
        return ""
    # no check: groff warns about many pages yet renders them, and the output is what counts
    proc = subprocess.run(
        ["groff", "-Kutf-8", "-t", "-e", "-mandoc", "-Tutf8", "-P-cbu", "-rLL=80n"],
        input=_MAN_PRELUDE + raw,
        capture_output=True,
        timeout=120,
        check=False,
    )
    lines = [line.rstrip() for line in proc.stdout.decode("utf-8", "replace").splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def man_page_items(paths: Iterable[str | Path], label: str) -> list[Item]:
    """One item per man page file; ``label`` prefixes the keys (e.g. the language)."""
    return [
        (f"{label}/{Path(p).parent.name}/{Path(p).name}", partial(render_man_page, Path(p)))
        for p in sorted(set(map(str, paths)))
    ]


# ------------------------------------------------------------------------------------- fortunes
def fortune_items(fortune_dir: str | Path = "/usr/share/games/fortunes", group_chars: int = 3000) -> list[Item]:
    """Items of consecutive fortunes (quotations, jokes) from each fortune file."""
    items: list[Item] = []
    for path in list_files(fortune_dir, ["*"], exclude=["*.dat", "*.u8"]):
        quotes = [q.strip("\n") for q in re.split(r"^%\s*$", read_text_file(path), flags=re.MULTILINE)]
        items += group_texts(quotes, f"fortunes/{path.name}", group_chars)
    return items


# ----------------------------------------------------------------------------------- arithmetic
def _column_addition(a: int, b: int) -> str:
    names = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands"]
    steps, carry, place = [], 0, 0
    while a or b:
        da, db = a % 10, b % 10
        total = da + db + carry
        step = f"{names[place]}: {da} + {db}" + (f" + {carry}" if carry else "") + f" = {total}"
        carry = total // 10
        steps.append(step + (f", write {total % 10} carry {carry}" if carry else ""))
        a, b, place = a // 10, b // 10, place + 1
    if carry:
        steps.append(f"the last carry {carry} becomes the leading digit")
    return "; ".join(steps)


def _arithmetic_problem(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        a, b = rng.randrange(10, 10 ** rng.randint(2, 5)), rng.randrange(10, 10 ** rng.randint(2, 5))
        return f"Problem: {a} + {b} = ?\nWork: {_column_addition(a, b)}.\nAnswer: {a + b}"
    if kind == 1:
        b = rng.randrange(10, 5000)
        a = b + rng.randrange(1, 5000)
        parts = [int(d) * 10**i for i, d in enumerate(reversed(str(b))) if d != "0"][::-1]
        steps, cur = [], a
        for part in parts:
            steps.append(f"{cur} - {part} = {cur - part}")
            cur -= part
        return f"Problem: {a} - {b} = ?\nWork: {'; '.join(steps)}.\nAnswer: {a - b}"
    if kind == 2:
        a, b = rng.randrange(12, 1000), rng.randrange(12, 100)
        tens, ones = b - b % 10, b % 10
        work = (
            f"{a} * {tens} = {a * tens}; {a} * {ones} = {a * ones}; {a * tens} + {a * ones} = {a * b}"
            if ones
            else f"{a} * {tens} = {a * b}"
        )
        return f"Problem: {a} * {b} = ?\nWork: {work}.\nAnswer: {a * b}"
    if kind == 3:
        d = rng.randrange(2, 13)
        n = rng.randrange(d, 5000)
        q, r = divmod(n, d)
        return (
            f"Problem: divide {n} by {d}, giving quotient and remainder.\n"
            f"Work: {d} * {q} = {d * q}; {n} - {d * q} = {r}.\nAnswer: {q} remainder {r}"
        )
    if kind == 4:
        k, x, c = rng.randrange(2, 13), rng.randrange(-20, 21), rng.randrange(1, 60)
        sign = rng.choice([1, -1])
        lhs = f"{k}x {'+' if sign > 0 else '-'} {c}"
        rhs = k * x + sign * c
        move = f"subtract {c} from" if sign > 0 else f"add {c} to"
        return (
            f"Problem: solve {lhs} = {rhs}.\nWork: {move} both sides: {k}x = {k * x}; "
            f"divide both sides by {k}: x = {x}.\nAnswer: x = {x}"
        )
    if kind == 5:
        p, q, r, s = rng.randrange(1, 10), rng.randrange(2, 13), rng.randrange(1, 10), rng.randrange(2, 13)
        den = q * s // math.gcd(q, s)
        num = p * den // q + r * den // s
        g = math.gcd(num, den)
        tail = f"; simplify by {g}: {num // g}/{den // g}" if g > 1 else ""
        return (
            f"Problem: {p}/{q} + {r}/{s} = ?\nWork: common denominator {den}: "
            f"{p * den // q}/{den} + {r * den // s}/{den} = {num}/{den}{tail}.\n"
            f"Answer: {num // g}/{den // g}"
        )
    base, pct = 20 * rng.randrange(1, 60), 5 * rng.randrange(1, 20)  # 20 * 5 = 100: exact results
    return (
        f"Problem: what is {pct}% of {base}?\nWork: {base} * {pct} = {base * pct}; "
        f"{base * pct} / 100 = {base * pct // 100}.\nAnswer: {base * pct // 100}"
    )


def arithmetic_document(seed: int, index: int, problems: int = 12) -> str:
    """Document ``index`` of generated arithmetic problems with worked answers (deterministic)."""
    rng = random.Random(f"arithmetic:{seed}:{index}")  # str seeds hash with SHA-512: stable
    return "\n\n".join(_arithmetic_problem(rng) for _ in range(problems))


def arithmetic_items(n_docs: int, seed: int = 0) -> list[Item]:
    """``n_docs`` items of generated arithmetic problems with worked answers."""
    return [(f"arithmetic/{i:07d}", partial(arithmetic_document, seed, i)) for i in range(n_docs)]


# ---------------------------------------------------------------------------- Debian packages
def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Versions of the installed Debian packages among ``names``; the others are left out."""
    names = sorted(set(names))
    if not names or shutil.which("dpkg-query") is None:
        return {}
    # dpkg-query exits 1 when a name is unknown but still reports the known ones
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Status}\t${Version}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    versions = {}
    for line in proc.stdout.splitlines():
        pkg, status, version = (line.split("\t") + ["", ""])[:3]
        if status.endswith(" installed"):
            versions[pkg.split(":")[0]] = version
    return versions


def package_files(package: str) -> list[Path]:
    """Files that the installed Debian package ``package`` put on the system."""
    proc = subprocess.run(
        ["dpkg-query", "-L", package], capture_output=True, text=True, check=False
    )  # not installed: no files
    return [Path(line) for line in proc.stdout.splitlines() if line.startswith("/")]
