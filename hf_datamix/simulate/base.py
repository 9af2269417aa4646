"""The simulator interface: how a decision gets scores for candidate mixtures it has not trained on.

Every mixing method here is the loop *simulate candidates → fit a law → propose → train*.  A
:class:`Simulator` is the first step: given the decision context and the mixture in force, it
returns a :class:`Simulation` — candidates in its own coordinates (domains, or virtual domains such
as op_mix's "old" probe), how those coordinates expand to domains, and each candidate's scores per
target domain on the *decision* split (lower is better).  The law and the proposer take it from there.

``simulate(context, around, candidates=[...])`` scores exactly the given data mixtures instead of
the simulator's own candidate design; benchmarks use it to compare simulators on the same mixtures
(``benchmarks/mixbench``).  ``groups`` (mixture reuse) asks it to keep some domains together at fixed
internal ratios, as one virtual coordinate.

Simulators are found by name in :data:`SIMULATORS`: the built-ins (``lora_probes``, ``proxy_swarm``,
``branches``, ``calibrated``) and whatever other packages declare under the entry-point group ``hf_datamix.simulators``.
A strategy that decides through a simulator takes ``simulator=<name>`` and the simulator's settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..mixture import Mixture, expansion_matrix
from ..registry import Registry, registrar
from ..settings import build_config, settings_of


@dataclass
class Simulation:
    """Candidates of one decision and their simulated scores.

    Attributes:
        coordinates: names of the columns of ``X``: domains, or virtual coordinates listed in ``groups``.
        groups: ``{virtual coordinate: its internal ratios over domains}``.
        domains: the full domains (columns of :meth:`mixtures`).
        X: ``(C, m)`` candidate weights over ``coordinates`` (rows on the simplex).
        Y: ``(C, T)`` scores of each candidate per target (lower is better), on the decision split.
        targets: the target names (columns of ``Y``).
        record: what to keep in ``mixtures.json`` (probes, branches, their costs ...).
        data: ``(C, len(domains))`` the data mixture each candidate was actually simulated on, where it
            differs from what ``X`` expands to (LoRA probe *d* trains on ``0.9·d + 0.1·old``, while
            the published map reads its weight as a share of *d* alone); None: :meth:`mixtures`.
        prior: the simulator's reference KL prior over ``coordinates`` (op_mix's reference code: half
            on "old"), used by ``prior_space="coordinates"``; None: uniform over the coordinates.
    """

    coordinates: list[str]
    groups: dict[str, Mixture]
    domains: list[str]
    X: np.ndarray
    Y: np.ndarray
    targets: list[str]
    record: dict[str, Any] = field(default_factory=dict)
    data: np.ndarray | None = None
    prior: dict[str, float] | None = None

    def __post_init__(self):
        self.X, self.Y = np.asarray(self.X, dtype=float), np.asarray(self.Y, dtype=float)
        if self.X.ndim != 2 or self.X.shape[1] != len(self.coordinates):
            raise ValueError(f"Simulation.X has shape {self.X.shape}; expected (candidates, {len(self.coordinates)}).")
        if self.Y.shape != (len(self.X), len(self.targets)):
            raise ValueError(f"Simulation.Y has shape {self.Y.shape}; expected ({len(self.X)}, {len(self.targets)}).")
        if self.data is not None:
            self.data = np.asarray(self.data, dtype=float)
            if self.data.shape != (len(self.X), len(self.domains)):
                raise ValueError(
                    f"Simulation.data has shape {self.data.shape}; expected ({len(self.X)}, {len(self.domains)})."
                )
        if self.prior is not None:
            unknown = sorted(set(self.prior) - set(self.coordinates))
            if unknown:
                raise ValueError(f"Simulation.prior names {unknown}, which are not coordinates {self.coordinates}.")

    def mixtures(self) -> np.ndarray:
        """``(C, len(domains))``: the data mixture each candidate stands for (virtual coordinates expanded)."""
        return self.X @ expansion_matrix(self.coordinates, self.groups, self.domains).T

    def data_mixtures(self) -> np.ndarray:
        """``(C, len(domains))``: the data each candidate was simulated on (``data``, else :meth:`mixtures`)."""
        return self.mixtures() if self.data is None else self.data

    def identifiable(self) -> bool:
        """True if every data mixture has one preimage in ``coordinates`` (the expansion has full column
        rank).  op_mix's "old" probe is itself a mixture of the domains, so its coordinates are not."""
        E = expansion_matrix(self.coordinates, self.groups, self.domains)
        return int(np.linalg.matrix_rank(E)) == len(self.coordinates)

    def coordinate_prior(self) -> np.ndarray:
        """The prior over ``coordinates`` (``prior``, else uniform), normalised."""
        if self.prior is None:
            return np.full(len(self.coordinates), 1.0 / len(self.coordinates))
        q = np.array([float(self.prior.get(c, 0.0)) for c in self.coordinates])
        return q / q.sum()

    def mean_scores(self) -> np.ndarray:
        """The candidates' mean score over targets (what the proposer minimises with equal target weights)."""
        return self.Y.mean(axis=1)


@dataclass
class SimulatorConfig:
    """Settings of a simulator; subclass with one dataclass field per setting (with ``metadata={"help": ...}``).

    Their names are flags of the recipes next to the strategy's and ``TrainingArguments``', so they
    must not repeat those (``seed`` is the strategy's ``decision_seed``, handed to the simulator).
    """


class Simulator:
    """Base class of simulators (see the module docstring).

    Subclasses set ``name`` (and a one-line ``description``), a ``config_class`` dataclass of their
    settings, and implement :meth:`simulate`.

    Args:
        config: a ``config_class`` instance or a mapping of settings.
        seed: seed of the simulator's random draws (a strategy hands over its ``decision_seed``).
        **kwargs: settings, overriding ``config``.
    """

    #: Registry name (``simulator=<name>`` in a strategy's settings).
    name: ClassVar[str] = ""
    #: One line shown by ``hf-datamix strategies``-style listings.
    description: ClassVar[str] = ""
    #: Dataclass of the simulator's settings.
    config_class: ClassVar[type] = SimulatorConfig
    #: True if every process must call :meth:`simulate` together (it uses collectives).
    collective: bool = False
    #: True if :meth:`simulate` honours ``groups`` (mixture reuse keeps domains together).
    supports_groups: ClassVar[bool] = False
    #: Settings that only choose or score the candidates, not what the simulator trains: simulations whose
    #: settings differ only in these can share that training (:meth:`shared`).
    design_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None, *, seed: int = 0, **kwargs: Any):
        self.config = build_config(
            self.config_class, config, kwargs, owner=f"simulator {self.name or type(self).__name__!r}"
        )
        self.seed = int(seed)

    def settings(self) -> dict[str, Any]:
        """The simulator's settings, for records and model cards."""
        return settings_of(self.config)

    def check(self, domains) -> None:
        """Raise ``ValueError`` (naming the setting) if this simulator cannot run on ``domains``; called
        before any data are loaded."""

    def runs_on_every_process(self, trainer) -> bool:
        """True if every process of ``trainer``'s run must call :meth:`simulate` together."""
        return self.collective

    def refuse_groups(self, groups: Mapping[str, Mixture] | None) -> None:
        """Raise if ``groups`` are asked of a simulator that does not :attr:`supports_groups`."""
        if groups and not self.supports_groups:
            raise ValueError(f"{self.name} cannot hold reused domains together (groups); use simulator=proxy_swarm.")

    def simulate(
        self,
        context,
        around: Mixture,
        candidates: Sequence[Mapping[str, float]] | None = None,
        groups: Mapping[str, Mixture] | None = None,
    ) -> Simulation | None:
        """Simulate around the mixture in force ``around``; score ``candidates`` (data mixtures) if given.

        ``groups`` (``{virtual coordinate: internal ratios}``) keeps those domains together at those
        ratios, for a simulator that :attr:`supports_groups`.  Returns None when the simulation failed
        (e.g. every probe diverged); the mixture is then kept.
        """
        raise NotImplementedError

    def with_design(self, **design: Any) -> Simulator:
        """A simulator of this class with this one's settings and seed, but the given :attr:`design_settings`."""
        unknown = sorted(set(design) - set(self.design_settings))
        if unknown:
            raise ValueError(
                f"simulator {self.name!r}: {unknown} are not settings of the candidate design; those are "
                f"{list(self.design_settings)} (the others change what the simulator trains)."
            )
        return type(self)(dataclasses.replace(self.config, **design), seed=self.seed)

    @contextlib.contextmanager
    def shared(self, context, around: Mixture) -> Iterator[Callable[..., Simulation | None]]:
        """Several simulations around ``around`` that share what they train, e.g. to compare candidate designs.

        Yields ``simulate(candidates=None, **design)``: what :meth:`simulate` of :meth:`with_design`
        ``(**design)`` would return at this point.  This default shares nothing (each call simulates in
        full); a simulator with :attr:`design_settings` trains once on entry and restores the model on exit.
        """

        def simulate(candidates: Sequence[Mapping[str, float]] | None = None, **design: Any) -> Simulation | None:
            return (self.with_design(**design) if design else self).simulate(context, around, candidates)

        yield simulate

    def interpolate(
        self, context, ends: Mapping[str, Mixture], weights: Sequence[Mapping[str, float]]
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """``(C, T)`` scores of the blends ``Σ_e w_e·ends[e]`` for each ``w`` in ``weights`` (and what to record).

        op_mix's continual schedule scores the line between an "old" and a "new" mixture this way.  By
        default each blend is simulated as a data mixture; a simulator may do better (LoRA probes
        interpolate two probes' weight deltas).  None when the simulation failed.
        """
        names = context.domains.names
        around = context.mixture or Mixture.uniform(names)
        simulation = self.simulate(context, around, candidates=blends(ends, weights, names))
        return None if simulation is None else (simulation.Y, simulation.record)


DESIGNS = ("dirichlet", "covering")


def reference_mixtures(domains: Sequence[str], token_counts: Mapping[str, int | None]) -> dict[str, Mixture]:
    """The mixtures a user gets for free, for a ``covering`` candidate design: ``uniform`` and, when every
    domain's size is known, ``natural`` (token shares)."""
    out = {"uniform": Mixture.uniform(domains)}
    counts = {name: token_counts.get(name) for name in domains}
    if all(counts.values()):
        out["natural"] = Mixture.proportional(counts)
    return out


def covering_size(coordinates: int, requested: int) -> int:
    """Candidates of a ``covering`` design: at least 5 per parameter of a law with one weight per
    coordinate and a constant, ``5·(coordinates + 1)``, or ``requested`` if larger."""
    return max(int(requested), 5 * (coordinates + 1))


def blends(
    ends: Mapping[str, Mixture], weights: Sequence[Mapping[str, float]], domains: Sequence[str]
) -> list[dict[str, float]]:
    """The data mixtures ``Σ_e w_e·ends[e]`` over ``domains``, one per ``w`` in ``weights``."""
    arrays = {e: mixture.to_array(domains) for e, mixture in ends.items()}
    return [dict(zip(domains, sum(w.get(e, 0.0) * arrays[e] for e in ends))) for w in weights]


def data_mixtures(candidates: Sequence[Mapping[str, float]], domains: Sequence[str]) -> list[Mixture]:
    """Validated data mixtures over exactly ``domains`` (absent domains get 0)."""
    out = []
    for i, candidate in enumerate(candidates):
        unknown = sorted(set(candidate) - set(domains))
        if unknown:
            raise ValueError(f"candidate {i} names domains {unknown} that are not in this run ({list(domains)}).")
        out.append(Mixture({name: float(candidate.get(name, 0.0)) for name in domains}))
    return out


#: The library's own simulators (``setup.cfg`` declares the same under ``hf_datamix.simulators``).
BUILTIN_SIMULATORS = {
    "lora_probes": "hf_datamix.simulate.probes:LoRAProbes",
    "proxy_swarm": "hf_datamix.simulate.proxy_swarm:ProxySwarm",
    "branches": "hf_datamix.simulate.branches:Branches",
    "calibrated": "hf_datamix.simulate.calibrated:Calibrated",
}
SIMULATORS = Registry(
    "simulator", Simulator, "hf_datamix.simulators", BUILTIN_SIMULATORS, base_name="hf_datamix.simulate.base.Simulator"
)

register_simulator = registrar(SIMULATORS)


def available_simulators() -> list[str]:
    """Sorted names of the registered simulators (built-ins and plugins)."""
    return SIMULATORS.names()


def get_simulator_class(name: str) -> type[Simulator]:
    """The simulator class registered under ``name``."""
    return SIMULATORS.get(name)


def create_simulator(name: str, config: Any = None, **kwargs: Any) -> Simulator:
    """Instantiate the simulator ``name`` with its settings (a mapping, a config object or keywords)."""
    return get_simulator_class(name)(config, **kwargs)
