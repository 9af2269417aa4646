"""DomainSpec and DomainSet: the named data domains a run mixes, and how the set changes.

A domain's train and eval data can be a ``datasets.Dataset``, a streaming
``datasets.IterableDataset``, local files (``.txt``, ``.json``/``.jsonl``, ``.parquet``, optionally
compressed) or a Hub dataset id.  Domains are keyed by name everywhere, so a set can be updated
between stages: :meth:`DomainSet.add`, :meth:`~DomainSet.remove`, :meth:`~DomainSet.partition` and
:meth:`~DomainSet.revise` return a :class:`DomainUpdate` holding the new set and the affected names.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import datasets

from .mixture import check_domain_name


Source = datasets.Dataset | datasets.IterableDataset | str | Sequence[str]

_FILE_BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")


@dataclass(frozen=True)
class DomainSpec:
    """One named domain.

    Args:
        name: unique name, e.g. ``"code"`` or ``"web:news"`` (the part before ``:`` is the domain's
            group, used by hierarchical swarm sampling).
        train: training data: a ``datasets.Dataset``/``IterableDataset``, a local file, directory or
            glob (or a list of them), or a Hub dataset id.
        eval: held-out data in the same forms. Required, unless ``eval_size`` carves it from ``train``.
            Final evaluation reports on it (the *test* split).
        decision: held-out data that decisions score on (probes' candidates, proxies, laws), in the
            same forms.  None (default): ``DataMixArguments.decision_blocks`` are carved from ``eval``,
            so decisions never see the blocks results are reported on.
        text_field: the column that holds the text.
        eval_size: if ``eval`` is None, hold out this many train documents (int) or this fraction (float).
        num_tokens: token count, when known ahead (needed for repetition caps on streaming domains).
        streaming: load a Hub id or files as a streaming ``IterableDataset``.
        hub_config, train_split, eval_split: for Hub ids.
    """

    name: str
    train: Source
    eval: Source | None = None
    text_field: str = "text"
    eval_size: int | float | None = None
    num_tokens: int | None = None
    streaming: bool = False
    hub_config: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    decision: Source | None = None

    def __post_init__(self):
        check_domain_name(self.name, "DomainSpec.name")
        if self.train is None:
            raise ValueError(f"DomainSpec {self.name!r}: `train` is None; give a dataset, files or a Hub id.")
        if self.eval is None and self.eval_size is None:
            raise ValueError(
                f"DomainSpec {self.name!r}: no eval split. Give `eval=` (dataset, files or Hub id) or "
                "`eval_size=` (documents or fraction of train to hold out)."
            )
        if self.eval_size is not None and not (
            (isinstance(self.eval_size, int) and not isinstance(self.eval_size, bool) and self.eval_size > 0)
            or (isinstance(self.eval_size, float) and 0 < self.eval_size < 1)
        ):
            raise ValueError(
                f"DomainSpec {self.name!r}: eval_size={self.eval_size!r}; use a positive int or a float in (0, 1)."
            )

    def check(self) -> None:
        """Raise ``ValueError`` (naming the domain, the field and the fix) if a local source is missing or empty.

        Reads no data: recipes call it for every domain of every stage before anything is trained.
        """
        for field_name, source in (("train", self.train), ("eval", self.eval)):
            if source is None or isinstance(
                source, (datasets.Dataset, datasets.IterableDataset, datasets.DatasetDict)
            ):
                continue
            for path in [source] if isinstance(source, (str, os.PathLike)) else list(source):
                problem = _local_problem(os.fspath(path))
                if problem:
                    raise ValueError(f"Domain {self.name!r}: {field_name}={os.fspath(path)!r} {problem}")

    @property
    def group(self) -> str:
        """The source/topic group: the name's prefix before ``:`` (the name itself if there is none)."""
        return self.name.split(":", 1)[0]

    def load(self) -> tuple[datasets.Dataset | datasets.IterableDataset, datasets.Dataset | datasets.IterableDataset]:
        """Resolve the sources and return ``(train, eval)`` datasets."""
        train = _load_source(self, self.train, self.train_split, "train")
        if self.eval is not None:
            evaluation = _load_source(self, self.eval, self.eval_split, "eval")
        else:
            if isinstance(train, datasets.IterableDataset):
                size = self.eval_size if isinstance(self.eval_size, int) else None
                if size is None:
                    raise ValueError(
                        f"DomainSpec {self.name!r}: a streaming domain cannot hold out a fraction; "
                        "give eval_size as a number of documents or an explicit `eval`."
                    )
                evaluation, train = train.take(size), train.skip(size)
            else:
                split = train.train_test_split(test_size=self.eval_size, seed=0, shuffle=True)
                train, evaluation = split["train"], split["test"]
        for split_name, data in (("train", train), ("eval", evaluation)):
            columns = data.column_names
            # Conversational / prompt-completion data (for DataMixSFTTrainer) need no text column.
            sft_format = columns is not None and ({"prompt", "completion"} <= set(columns) or "messages" in columns)
            if columns is not None and self.text_field not in columns and not sft_format:
                raise ValueError(
                    f"Domain {self.name!r} {split_name} data has no column {self.text_field!r} "
                    f"(columns: {columns}); set DomainSpec.text_field."
                )
        return train, evaluation

    def load_decision(self) -> datasets.Dataset | datasets.IterableDataset | None:
        """The explicit decision split (``decision``), or None when it is carved from ``eval``."""
        if self.decision is None:
            return None
        return _load_source(self, self.decision, self.eval_split, "decision")


def _load_source(spec: DomainSpec, source: Source, split: str, field_name: str):
    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        return source
    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise ValueError(f"Domain {spec.name!r}: DatasetDict has no split {split!r} ({list(source)}).")
        return source[split]
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if len(paths) == 1 and os.path.isdir(paths[0]) and _looks_like_hub_repo(os.fspath(paths[0])):
        # A local folder laid out like a Hub dataset repo loads exactly as the repo would.
        return _load_hub(spec, os.fspath(paths[0]), split)
    for path in paths:
        problem = _local_problem(os.fspath(path))
        if problem:  # before any Hub lookup: a mistyped path is not a dataset id
            raise ValueError(f"Domain {spec.name!r}: {field_name}={os.fspath(path)!r} {problem}")
    files = _expand_files(paths)
    if files:
        builder = _builder_for(spec.name, files)
        try:
            return datasets.load_dataset(builder, data_files=files, split="train", streaming=spec.streaming)
        except Exception as error:  # e.g. a bare StopIteration from a file with no rows
            shown = f"{files[:3]}{' ...' if len(files) > 3 else ''}"
            field = f" with a {spec.text_field!r} field" if builder != "text" else ""
            raise ValueError(
                f"Domain {spec.name!r}: could not read {field_name} files {shown} as {builder} "
                f"({type(error).__name__}: {str(error) or 'no rows'}); check that they hold one document per row{field}."
            ) from error
    if isinstance(source, str) and not os.path.exists(source) and not any(c in source for c in "*?["):
        return _load_hub(spec, source, split)
    raise ValueError(f"Domain {spec.name!r}: no files match {paths!r}.")


def _local_problem(path: str) -> str | None:
    """Why a source that must be local is unusable (missing, empty, matching nothing); None if fine or a Hub id."""
    if any(c in path for c in "*?["):
        return None if glob.glob(path, recursive=True) else "matches no file; check the pattern."
    if os.path.isfile(path):
        return "is an empty file; give it documents or leave it out." if os.path.getsize(path) == 0 else None
    if os.path.exists(path) or not _looks_local(path):
        return None
    return f"is no file or folder (paths are relative to {os.getcwd()}); check the path."


def _looks_local(source: str) -> bool:
    # A Hub id is "name" or "owner/name"; a path has a data-file extension, several parts, or a path prefix.
    return (
        source.startswith(("/", "./", "../", "~"))
        or os.sep in source.replace("/", "")
        or source.count("/") > 1
        or _extension(source) in _FILE_BUILDERS
    )


def _load_hub(spec: DomainSpec, source: str, split: str):
    try:
        return datasets.load_dataset(source, spec.hub_config, split=split, streaming=spec.streaming)
    except Exception as error:  # datasets raises many types; re-raise with the domain named
        local = "" if "/" not in source else f"there is no local folder {source!r} (from {os.getcwd()}), and "
        raise ValueError(
            f"Domain {spec.name!r}: {local}could not load {source!r} split {split!r} as a Hub dataset "
            f"({type(error).__name__}: {error}). Check the path or the id, `hub_config`, the split names, and your "
            "network/token."
        ) from error


def _expand_files(paths: Sequence[str]) -> list[str]:
    files: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            files.extend(
                sorted(
                    os.path.join(root, name)
                    for root, _, names in os.walk(path)
                    for name in names
                    if _extension(name) in _FILE_BUILDERS
                )
            )
        elif any(c in path for c in "*?["):
            files.extend(sorted(glob.glob(path, recursive=True)))
        elif os.path.isfile(path):
            files.append(path)
    return files


def _looks_like_hub_repo(path: str) -> bool:
    # A folder holding a dataset script, a README with YAML config, or data/ splits is loaded the
    # way the Hub would load it (so local mirrors of Hub repos behave like the repo itself).
    return os.path.isfile(os.path.join(path, "README.md")) or os.path.isdir(os.path.join(path, "data"))


def _extension(name: str) -> str:
    name = name.lower()
    for suffix in _COMPRESSION:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return os.path.splitext(name)[1]


def _builder_for(domain: str, files: list[str]) -> str:
    builders = {_FILE_BUILDERS.get(_extension(f)) for f in files}
    if None in builders or len(builders) != 1:
        raise ValueError(
            f"Domain {domain!r}: files {files[:5]} mix or use unsupported formats; "
            f"use one of {sorted(_FILE_BUILDERS)} (optionally compressed with {', '.join(_COMPRESSION)})."
        )
    return builders.pop()


@dataclass(frozen=True)
class DomainUpdate:
    """The result of a DomainSet update.

    Attributes:
        kind: ``"add"``, ``"remove"``, ``"partition"`` or ``"revise"``.
        domains: the new DomainSet.
        affected: names in the *new* set whose data changed (added, revised, or parts of a partition).
        removed: names that left the set (a removed or partitioned domain).
        previous: the set before the update.
    """

    kind: str
    domains: DomainSet
    affected: tuple[str, ...]
    removed: tuple[str, ...] = ()
    previous: DomainSet | None = None

    @property
    def unaffected(self) -> tuple[str, ...]:
        """Domains of the new set whose data did not change (Olmix's D_fix)."""
        return tuple(name for name in self.domains.names if name not in self.affected)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "affected": list(self.affected), "removed": list(self.removed)}


@dataclass(frozen=True)
class DomainSet:
    """An ordered, immutable set of :class:`DomainSpec` keyed by name."""

    specs: tuple[DomainSpec, ...] = field(default_factory=tuple)

    def __init__(self, specs: Sequence[DomainSpec] | Mapping[str, DomainSpec] = ()):
        specs = tuple(specs.values()) if isinstance(specs, Mapping) else tuple(specs)
        if not specs:
            raise ValueError("DomainSet is empty: give at least one DomainSpec.")
        seen = set()
        for spec in specs:
            if not isinstance(spec, DomainSpec):
                raise ValueError(f"DomainSet takes DomainSpec objects, got {type(spec).__name__}: {spec!r}.")
            if spec.name in seen:
                raise ValueError(f"DomainSet has domain {spec.name!r} twice: domain names must be unique.")
            seen.add(spec.name)
        object.__setattr__(self, "specs", specs)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def __getitem__(self, name: str) -> DomainSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(f"No domain {name!r} in this DomainSet; domains are {self.names}.")

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[DomainSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def groups(self) -> dict[str, list[str]]:
        """Domains grouped by the prefix before ``:`` (source/topic hierarchy)."""
        grouped: dict[str, list[str]] = {}
        for spec in self.specs:
            grouped.setdefault(spec.group, []).append(spec.name)
        return grouped

    def check(self) -> None:
        """:meth:`DomainSpec.check` for every domain (no data are read)."""
        for spec in self.specs:
            spec.check()

    def select(self, names: Sequence[str]) -> DomainSet:
        """A DomainSet with only ``names`` (in that order)."""
        return DomainSet([self[name] for name in names])

    # -- updates --------------------------------------------------------------------------------
    def add(self, *specs: DomainSpec) -> DomainUpdate:
        """Add new domains."""
        for spec in specs:
            if spec.name in self:
                raise ValueError(f"add: domain {spec.name!r} already exists; use revise() to change its data.")
        return DomainUpdate("add", DomainSet(self.specs + specs), tuple(s.name for s in specs), (), self)

    def remove(self, *names: str) -> DomainUpdate:
        """Remove domains (no data changes for the others)."""
        for name in names:
            self[name]  # raises KeyError naming the domain
        remaining = [s for s in self.specs if s.name not in names]
        if not remaining:
            raise ValueError(f"remove: removing {list(names)} would leave no domains.")
        return DomainUpdate("remove", DomainSet(remaining), (), tuple(names), self)

    def partition(self, name: str, parts: Sequence[DomainSpec]) -> DomainUpdate:
        """Replace domain ``name`` by several finer domains (e.g. a web crawl split by topic)."""
        self[name]
        if len(parts) < 2:
            raise ValueError(f"partition: {name!r} needs at least two parts, got {len(parts)}.")
        others = {s.name for s in self.specs if s.name != name}
        clash = [p.name for p in parts if p.name in others]
        if clash:
            raise ValueError(f"partition: part names {clash} already exist in the set.")
        specs: list[DomainSpec] = []
        for spec in self.specs:
            specs.extend(parts if spec.name == name else [spec])
        return DomainUpdate("partition", DomainSet(specs), tuple(p.name for p in parts), (name,), self)

    def revise(self, name: str, spec: DomainSpec | None = None, **changes: Any) -> DomainUpdate:
        """Replace a domain's data (a new version of it); keeps its name and position."""
        old = self[name]
        new = spec if spec is not None else replace(old, **changes)
        if new.name != name:
            raise ValueError(f"revise: the revised spec is named {new.name!r}, expected {name!r}.")
        specs = [new if s.name == name else s for s in self.specs]
        return DomainUpdate("revise", DomainSet(specs), (name,), (), self)
