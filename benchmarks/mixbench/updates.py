"""Domain-set update sequences (Olmix's add / partition / revise / remove), as data, and the stages they make.

A sequence starts from an initial set and applies its updates in order with the DomainSet methods.  Only
leaves are staged; two kinds of domain that exist before an update are derived from them when the leaves
are unpacked, the same way on every machine:

* the **parent** of a partition: the union of its parts, their documents interleaved part by part (document
  0 of each part, then document 1, ...), so its decision and test blocks draw on every part;
* the **first version** of a revised domain: the first half of its staged training documents (the corpus's
  seeded order), with the domain's own eval split; the revision brings in all of them.

``reopen`` is partial reuse's hand-chosen list (as in the paper): unaffected domains of the same kind as
the update's, which the proposer may move again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from .common import SETS


KINDS = ("add", "partition", "revise", "remove")


@dataclass(frozen=True)
class Update:
    """One update: ``kind``; ``domains`` added, the parts of ``parent``, the revised or the removed ones."""

    kind: str
    domains: tuple[str, ...]
    parent: str | None = None
    reopen: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sequence:
    """An initial set (leaves, partition parents, first versions of revised domains) and its updates."""

    initial: tuple[str, ...]
    updates: tuple[Update, ...]

    def to_dict(self) -> dict:
        return {"initial": list(self.initial), "updates": [asdict(u) for u in self.updates]}


SEQUENCES: dict[str, Sequence] = {
    "leaves": Sequence(
        initial=(
            "python_stdlib",
            "docs_library",
            "docs_guides",
            "gcide",
            "wordnet",
            "jargon",
            "foldoc",
            "man_en",
            "man_de",
            "kjv_ot",
            "headers_glibc",
            "arithmetic",
        ),
        updates=(
            Update("add", ("man_fr", "man_es"), reopen=("man_en", "man_de")),
            Update(
                "partition",
                ("stdlib_test", "stdlib_modules", "stdlib_packages", "stdlib_tools"),
                parent="python_stdlib",
                reopen=("docs_library",),
            ),
            Update("revise", ("wordnet",), reopen=("gcide",)),
            Update("remove", ("arithmetic",)),
            Update("add", ("kjv_nt", "headers_linux", "docs_capi"), reopen=("kjv_ot", "headers_glibc")),
        ),
    ),
}
V1 = "@v1"  # file-name suffix of a revised domain's first version


def stage_names(set_name: str) -> list[list[str]]:
    """The domain names of every stage (0: the initial set, k: after update k), from the data alone."""
    seq = SEQUENCES[set_name]
    current, out = list(seq.initial), [list(seq.initial)]
    for u in seq.updates:
        if u.kind == "add":
            current = current + list(u.domains)
        elif u.kind == "partition":
            i = current.index(u.parent)
            current = current[:i] + list(u.domains) + current[i + 1 :]
        elif u.kind == "remove":
            current = [n for n in current if n not in u.domains]
        out.append(list(current))
    return out


def affected(update: Update) -> list[str]:
    """The update's D_comp names in the new set (a removal affects none)."""
    return [] if update.kind == "remove" else list(update.domains)


def check(set_name: str) -> None:
    """Raise ValueError naming the problem if the sequence of ``set_name`` does not fit its leaves."""
    seq, leaves = SEQUENCES[set_name], set(SETS[set_name])
    parents = {u.parent: u.domains for u in seq.updates if u.kind == "partition"}
    names = stage_names(set_name)
    for k, u in enumerate(seq.updates, start=1):
        if u.kind not in KINDS:
            raise ValueError(f"{set_name} update {k}: kind {u.kind!r} is not one of {KINDS}.")
        before, after = names[k - 1], names[k]
        if u.kind in ("revise", "remove") or u.kind == "partition":
            missing = [n for n in (u.domains if u.kind != "partition" else (u.parent,)) if n not in before]
            if missing:
                raise ValueError(f"{set_name} update {k} ({u.kind}) names {missing}, not in the set before it.")
        bad = [n for n in u.reopen if n not in after or n in affected(u)]
        if bad:
            raise ValueError(f"{set_name} update {k}: reopen {bad} are not unaffected domains of the new set.")
    used = {n for stage in names for n in stage} - set(parents)
    unknown, unused = sorted(used - leaves), sorted(leaves - used)
    if unknown or unused:
        raise ValueError(f"{set_name}: sequence names {unknown} that are not leaves of SETS, leaves {unused} unused.")
    for parent, parts in parents.items():
        if any(p not in leaves for p in parts):
            raise ValueError(f"{set_name}: partition parent {parent!r} needs leaves for parts, got {parts}.")


def interleave(parts: list[list[str]]) -> list[str]:
    """Documents of every part in turn: part 0's first, part 1's first, ..., then each part's second ..."""
    out = []
    for i in range(max(map(len, parts), default=0)):
        out += [docs[i] for docs in parts if i < len(docs)]
    return out


def first_version(texts: list[str]) -> list[str]:
    """A revised domain before its revision: the first half of its training documents."""
    return texts[: max(1, len(texts) // 2)]


def _read(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def _write(path: str, texts: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def derived_texts(set_name: str, read) -> dict[str, dict[str, list[str]]]:
    """``{name: {split: texts}}`` of the derived domains, given ``read(leaf, split) -> texts``."""
    seq, out = SEQUENCES[set_name], {}
    for u in seq.updates:
        if u.kind == "partition":
            out[u.parent] = {s: interleave([read(p, s) for p in u.domains]) for s in ("train", "eval")}
        elif u.kind == "revise":
            out[u.domains[0] + V1] = {
                "train": first_version(read(u.domains[0], "train")),
                "eval": read(u.domains[0], "eval"),
            }
    return out


def stages(set_name: str, work: str, data_dir: str):
    """``(sets, updates)``: the DomainSet of every stage and the DomainUpdate opening stages 1.. (files
    unpacked and derived into ``work`` once)."""
    from hf_datamix import DomainSet, DomainSpec

    from .common import domain_set

    leaves = domain_set(set_name, work, data_dir)  # unpacks the staged leaves
    files = {s.name: {"train": s.train, "eval": s.eval} for s in leaves}
    folder = os.path.join(work, "data", set_name)
    for name, splits in derived_texts(set_name, lambda leaf, split: _read(files[leaf][split])).items():
        files[name] = {}
        for split, texts in splits.items():
            path = os.path.join(folder, name, f"{split}.jsonl")
            if not os.path.isfile(path):
                _write(path, texts)
            files[name][split] = path

    def spec(name, version=""):
        return DomainSpec(name, train=files[name + version]["train"], eval=files[name + version]["eval"])

    seq = SEQUENCES[set_name]
    revised = {u.domains[0] for u in seq.updates if u.kind == "revise"}
    current = DomainSet([spec(n, V1 if n in revised else "") for n in seq.initial])
    sets, updates = [current], []
    for u in seq.updates:
        if u.kind == "add":
            update = current.add(*[spec(n) for n in u.domains])
        elif u.kind == "partition":
            update = current.partition(u.parent, [spec(n) for n in u.domains])
        elif u.kind == "revise":
            update = current.revise(u.domains[0], spec(u.domains[0]))
        else:
            update = current.remove(*u.domains)
        updates.append(update)
        current = update.domains
        sets.append(current)
    return sets, updates


def describe(set_name: str, data_dir: str) -> dict:
    """Add the derived domains (rule, documents, tokens per split) to the staged set's manifest."""
    import lzma

    from .common import tokenizer

    tok = tokenizer()

    def read(leaf, split):
        with lzma.open(os.path.join(data_dir, set_name, f"{leaf}.{split}.jsonl.xz"), "rt", encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle if line.strip()]

    def count(texts):
        return sum(len(ids) + 1 for ids in tok(texts, add_special_tokens=False)["input_ids"]) if texts else 0

    path = os.path.join(data_dir, set_name, "manifest.json")
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    rules = {
        "partition": "the parts' documents interleaved part by part (updates.interleave)",
        "revise": "the first half of the revised leaf's staged training documents, its eval split "
        "(updates.first_version)",
    }
    manifest["derived"] = {}
    for name, splits in derived_texts(set_name, read).items():
        kind = "revise" if name.endswith(V1) else "partition"
        manifest["derived"][name] = {
            "rule": rules[kind],
            **{s: {"docs": len(t), "tokens": count(t)} for s, t in splits.items()},
        }
    manifest["sequence"] = SEQUENCES[set_name].to_dict()
    manifest["train_tokens"] = {n: d["train"]["tokens"] for n, d in manifest["domains"].items()}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    return manifest
