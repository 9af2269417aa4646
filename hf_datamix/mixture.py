"""Mixture: a validated map from domain name to sampling weight.

A mixture is the one object every strategy produces and the interleaver consumes.  Besides
validation and normalisation it implements the *virtual-domain* operation shared by OP-Mix's
collapsed "old" coordinate and Olmix's mixture reuse: ``collapse`` merges a group of domains into
one coordinate whose internal ratios are remembered, ``expand`` splits such a coordinate back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .atomic import write_text_atomic
from .constants import MIXTURE_FILE, SIMPLEX_TOLERANCE


logger = logging.getLogger(__name__)

#: Domain names appear in metric keys (``mix/<name>``, ``eval_<name>_loss``) and file names.
DOMAIN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")


def check_domain_name(name: Any, field: str = "domain name") -> str:
    """Return ``name`` if it is a valid domain name, else raise a ValueError naming ``field``."""
    if not isinstance(name, str) or not DOMAIN_NAME_PATTERN.match(name):
        raise ValueError(
            f"{field} {name!r} is not a valid domain name: use letters, digits and '_', '.', ':', '+', '-' "
            "(starting with a letter or digit), e.g. 'web:news' or 'code_python'."
        )
    return name


class Mixture(Mapping[str, float]):
    """Domain weights on the probability simplex.

    Args:
        weights: a mapping ``{domain: weight}`` or a sequence of ``(domain, weight)`` pairs
            (pairs let duplicate names be detected).
        domains: if given, the known domain names: every weight must name one of them, and known
            domains missing from ``weights`` get weight 0.
        normalize: rescale weights that do not sum to 1 (within 1e-6) and log a note; if False,
            such weights are an error.
    """

    __slots__ = ("_weights",)

    def __init__(
        self,
        weights: Mapping[str, float] | Iterable[tuple[str, float]],
        domains: Sequence[str] | None = None,
        normalize: bool = True,
    ):
        pairs = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        if not pairs:
            raise ValueError("Mixture weights are empty: give at least one domain with a positive weight.")
        seen: dict[str, float] = {}
        for item in pairs:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"Mixture entry {item!r} is not a (domain, weight) pair.")
            name, weight = item
            check_domain_name(name)
            if name in seen:
                raise ValueError(f"Mixture has domain {name!r} twice: give each domain one weight.")
            try:
                value = float(weight)
            except (TypeError, ValueError):
                raise ValueError(f"Mixture weight of {name!r} is {weight!r}, not a number.") from None
            if math.isnan(value) or math.isinf(value):
                raise ValueError(f"Mixture weight of {name!r} is {value}: weights must be finite numbers >= 0.")
            if value < 0:
                raise ValueError(f"Mixture weight of {name!r} is {value}: weights must be >= 0.")
            seen[name] = value
        if domains is not None:
            known = list(domains)
            unknown = [name for name in seen if name not in known]
            if unknown:
                raise ValueError(f"Mixture names unknown domain(s) {unknown}; the known domains are {sorted(known)}.")
            seen = {name: seen.get(name, 0.0) for name in known}
        # Scale by the largest weight first: finite weights near float max must not sum to inf.
        largest = max(seen.values())
        if largest > 0:
            seen = {name: value / largest for name, value in seen.items()}
        total = math.fsum(seen.values())
        if total <= 0:
            raise ValueError(f"Mixture weights {seen} sum to 0: at least one weight must be positive.")
        raw_total = total * largest
        if abs(raw_total - 1.0) > SIMPLEX_TOLERANCE:
            if not normalize:
                raise ValueError(f"Mixture weights sum to {raw_total:.8g}, not 1 (normalize=False).")
            logger.info("Mixture weights summed to %.6g; normalised to 1.", raw_total)
        self._weights = {name: value / total for name, value in seen.items()}

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def uniform(cls, domains: Sequence[str]) -> Mixture:
        """Equal weight on every domain."""
        return cls(dict.fromkeys(domains, 1.0))

    @classmethod
    def proportional(cls, sizes: Mapping[str, float]) -> Mixture:
        """Weights proportional to ``sizes`` (e.g. token counts: the *natural* mixture)."""
        return cls(dict(sizes))

    @classmethod
    def from_array(cls, domains: Sequence[str], values: Sequence[float] | np.ndarray) -> Mixture:
        """Build from parallel sequences of names and weights."""
        values = list(np.asarray(values, dtype=float).reshape(-1))
        if len(values) != len(domains):
            raise ValueError(f"{len(domains)} domains but {len(values)} weights.")
        # Solvers return tiny negative values (-1e-12) at active bounds; clip those, not real negatives.
        return cls(list(zip(domains, [0.0 if -1e-9 < v < 0 else v for v in values])))

    # -- mapping protocol -----------------------------------------------------------------------
    def __getitem__(self, name: str) -> float:
        return self._weights[name]

    def __iter__(self):
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.4f}" for k, v in self._weights.items())
        return f"Mixture({inner})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._weights) == dict(other)

    def __hash__(self):
        return hash(frozenset(self._weights.items()))

    @property
    def domains(self) -> list[str]:
        """Domain names in order."""
        return list(self._weights)

    def to_array(self, domains: Sequence[str] | None = None) -> np.ndarray:
        """Weights as a float64 vector in the order of ``domains`` (default: this mixture's order)."""
        names = self.domains if domains is None else list(domains)
        return np.array([self._weights.get(name, 0.0) for name in names], dtype=np.float64)

    def allclose(self, other: Mapping[str, float], atol: float = 1e-9) -> bool:
        """True if both name the same domains with weights equal within ``atol``."""
        return set(self) == set(other) and all(abs(self[k] - other[k]) <= atol for k in self)

    def restrict(self, domains: Sequence[str]) -> Mixture:
        """The mixture renormalised over ``domains`` (used when a domain is removed or runs dry)."""
        missing = [name for name in domains if name not in self._weights]
        if missing:
            raise ValueError(f"restrict: domains {missing} are not in this mixture ({self.domains}).")
        return Mixture({name: self._weights[name] for name in domains})

    # -- virtual domains ------------------------------------------------------------------------
    def collapse(self, groups: Mapping[str, Sequence[str]]) -> tuple[Mixture, dict[str, Mixture]]:
        """Merge each group of domains into one virtual domain.

        Args:
            groups: ``{virtual_name: [member, ...]}``; members must be domains of this mixture and
                belong to one group at most.

        Returns:
            ``(collapsed, internals)``: the mixture over virtual domains plus the ungrouped ones
            (a virtual domain's weight is the sum of its members'), and for each virtual domain the
            members' internal ratios, which ``expand`` needs to split it back.  A group whose
            members all have weight 0 gets uniform internal ratios.
        """
        owner: dict[str, str] = {}
        for virtual, members in groups.items():
            check_domain_name(virtual, "virtual domain name")
            if not members:
                raise ValueError(f"collapse: group {virtual!r} has no members.")
            for member in members:
                if member not in self._weights:
                    raise ValueError(
                        f"collapse: group {virtual!r} names {member!r}, which is not in this mixture ({self.domains})."
                    )
                if member in owner:
                    raise ValueError(f"collapse: {member!r} is in groups {owner[member]!r} and {virtual!r}.")
                owner[member] = virtual
            if virtual in self._weights and virtual not in members:
                raise ValueError(f"collapse: virtual name {virtual!r} clashes with an existing domain.")
        collapsed: dict[str, float] = {}
        for name, weight in self._weights.items():
            key = owner.get(name, name)
            collapsed[key] = collapsed.get(key, 0.0) + weight
        internals = {}
        for virtual, members in groups.items():
            total = sum(self._weights[m] for m in members)
            internals[virtual] = (
                Mixture({m: self._weights[m] for m in members}) if total > 0 else Mixture.uniform(members)
            )
        return Mixture(collapsed), internals

    def expand(self, internals: Mapping[str, Mapping[str, float]]) -> Mixture:
        """Split each virtual domain back into its members.

        ``internals[v]`` gives the members' internal ratios p̃ (normalised here); member ``j`` of
        ``v`` gets ``weight(v) * p̃_j``.  Members that are also named directly in this mixture get
        the sum of both shares.
        """
        expanded: dict[str, float] = {}
        for name, weight in self._weights.items():
            if name in internals:
                ratios = Mixture(dict(internals[name]))
                for member, ratio in ratios.items():
                    expanded[member] = expanded.get(member, 0.0) + weight * ratio
            else:
                expanded[name] = expanded.get(name, 0.0) + weight
        unused = [v for v in internals if v not in self._weights]
        if unused:
            raise ValueError(f"expand: virtual domains {unused} are not in this mixture ({self.domains}).")
        return Mixture(expanded)

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, float]:
        """Plain ``{domain: weight}`` dict."""
        return dict(self._weights)

    def to_json(self, **extra: Any) -> str:
        """JSON text ``{"weights": {...}, **extra}``."""
        return json.dumps({"weights": self.to_dict(), **extra}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Mixture:
        """Parse JSON written by :meth:`to_json` (or a bare ``{domain: weight}`` object)."""
        data = json.loads(text)
        if isinstance(data, Mapping) and "weights" in data:
            data = data["weights"]
        if not isinstance(data, Mapping):
            raise ValueError('Mixture JSON must be an object {domain: weight} or {"weights": {...}}.')
        return cls(data)

    def save(self, path: str | os.PathLike, **extra: Any) -> None:
        """Write the mixture as JSON; a directory gets ``mixture.json`` inside it."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, MIXTURE_FILE)
        write_text_atomic(path, self.to_json(**extra))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mixture:
        """Read a mixture from a JSON file, or from ``mixture.json`` in a directory."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, MIXTURE_FILE)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            return cls.from_json(text)
        except ValueError as error:  # JSONDecodeError included: say which file, and what it should hold
            raise ValueError(
                f'{path} is not a mixture file ({error}); it should hold {{"weights": {{domain: weight}}}}, '
                "as Mixture.save and every run's mixture.json do."
            ) from None

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload mixture with hf_datamix",
        api: Any = None,
    ):
        """Upload this mixture as ``mixture.json`` to the Hub repo ``repo_id`` (one commit)."""
        from .hub import push_mixture  # huggingface_hub is only needed when talking to the Hub

        return push_mixture(
            self.to_json(), repo_id, token=token, private=private, commit_message=commit_message, api=api
        )

    @classmethod
    def from_pretrained(
        cls, repo_id_or_path: str | os.PathLike, revision: str | None = None, token: str | None = None
    ) -> Mixture:
        """Load a mixture from a Hub repo id, a folder holding ``mixture.json`` or a JSON file."""
        from .hub import mixture_file

        return cls.load(mixture_file(repo_id_or_path, revision=revision, token=token))


def expansion_matrix(
    collapsed_domains: Sequence[str], internals: Mapping[str, Mapping[str, float]], full_domains: Sequence[str]
) -> np.ndarray:
    """The linear map E with ``E @ x_collapsed = x_full`` (what :meth:`Mixture.expand` does).

    Shape ``(len(full_domains), len(collapsed_domains))``; column ``v`` of a virtual domain holds its
    members' internal ratios, the column of an ordinary domain is a unit vector.  Convex programs
    (the proposer's KL term) use it to price a collapsed solution in the full domain space.
    """
    index = {name: i for i, name in enumerate(full_domains)}
    matrix = np.zeros((len(full_domains), len(collapsed_domains)))
    for col, name in enumerate(collapsed_domains):
        if name in internals:
            ratios = Mixture(dict(internals[name]))
            for member, ratio in ratios.items():
                if member not in index:
                    raise ValueError(f"expansion_matrix: member {member!r} of {name!r} is not a full domain.")
                matrix[index[member], col] += ratio
        elif name in index:
            matrix[index[name], col] = 1.0
        else:
            raise ValueError(f"expansion_matrix: {name!r} is neither a virtual nor a full domain.")
    return matrix
