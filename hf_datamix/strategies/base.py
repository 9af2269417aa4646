"""The strategy plugin interface.

A strategy decides the mixture.  The :class:`~hf_datamix.callbacks.MixingController` asks it for an
initial mixture when a run (or a stage of a continual run) starts, and calls :meth:`Strategy.decide`
at the decision points the strategy announces with :meth:`Strategy.next_decision_step`.  A decision
is computed on the main process (or on every process for ``collective`` strategies) and broadcast,
so every rank applies the same mixture.

Write your own by subclassing :class:`Strategy`, giving it a ``name``, a one-line ``description``
and (optionally) a ``config_class`` dataclass, and registering it under the entry-point group
``hf_datamix.strategies`` (see the README).  A strategy that decides by *simulate → fit a law →
propose* is a schedule plus a composition: see :class:`~hf_datamix.strategies.composed.ComposedStrategy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..mixture import Mixture
from ..settings import build_config, settings_of


if TYPE_CHECKING:  # pragma: no cover
    from ..compute import ComputeLedger
    from ..domains import DomainSet, DomainUpdate


@dataclass
class StrategyConfig:
    """Settings of a strategy; subclass with one dataclass field per setting (with ``metadata={"help": ...}``)."""


@dataclass
class Decision:
    """A mixture plus what the strategy wants recorded in ``mixtures.json`` (candidates, predictions...)."""

    mixture: Mixture
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DecisionContext:
    """What a strategy can see and use when it decides.

    Attributes:
        step: optimizer steps done in this run/stage (0 = before training).
        max_steps: steps planned for this run/stage.
        stage: index of the stage in a continual run (0 for a single run).
        domains: the current :class:`~hf_datamix.domains.DomainSet`.
        token_counts: usable training tokens per domain (after packing).
        drawn_tokens: tokens each domain has given so far in this run/stage, up to the first sample the
            decision applies to (what its repetition cap has left is ``k·token_counts − drawn_tokens``).
        mixture: the mixture in force (None before the first one).
        previous_mixture: the last mixture of the previous stage (None in the first stage).
        update: the :class:`~hf_datamix.domains.DomainUpdate` that opened this stage, if any.
        history: the decision records so far (as written to ``mixtures.json``).
        trainer: the running :class:`~hf_datamix.trainer.DataMixTrainer`: the model, tokenizer,
            accelerator and args, and the data and scoring it hands over (``trainer.probe_batches(mixture)``,
            ``trainer.branch_batches(mixture)``, ``trainer.decision_scorer(...)``).
        ledger: the run's :class:`~hf_datamix.compute.ComputeLedger`.
        max_repetitions: k of the repetition caps (``DataMixArguments.max_repetitions``; None: no cap).
        remaining_tokens: training tokens from this decision to the end of the run/stage (None: unknown).
    """

    step: int
    max_steps: int
    stage: int
    domains: DomainSet
    token_counts: Mapping[str, int]
    mixture: Mixture | None = None
    previous_mixture: Mixture | None = None
    update: DomainUpdate | None = None
    history: list = field(default_factory=list)
    trainer: Any = None
    ledger: ComputeLedger | None = None
    drawn_tokens: Mapping[str, int] = field(default_factory=dict)
    max_repetitions: float | None = None
    remaining_tokens: int | None = None

    def new_and_old(self) -> tuple[list[str], list[str]]:
        """``(new, old)`` domain names of this stage: new = affected by the update that opened it."""
        names = self.domains.names
        new = [n for n in names if self.update is not None and n in self.update.affected]
        return new, [n for n in names if n not in new]

    def old_mixture(self, old: list[str]) -> Mixture:
        """The previous stage's mixture over the ``old`` domains (uniform where there is none)."""
        previous = self.previous_mixture
        if previous is not None and all(n in previous for n in old) and sum(previous[n] for n in old) > 0:
            return previous.restrict(old)
        return Mixture.uniform(old)

    @property
    def model(self):
        return None if self.trainer is None else self.trainer.model

    @property
    def accelerator(self):
        return None if self.trainer is None else self.trainer.accelerator


class Strategy:
    """Base class of mixing strategies (see the module docstring)."""

    #: Registry name (also the ``--strategy`` value).
    name: ClassVar[str] = ""
    #: One line shown by ``hf-datamix strategies``.
    description: ClassVar[str] = ""
    #: Dataclass of the strategy's settings (its flags in the recipes; a mapping from Python is checked against it).
    config_class: ClassVar[type] = StrategyConfig
    #: True if :meth:`decide` must run on every process (it uses collectives); else main process only.
    collective: ClassVar[bool] = False

    def __init__(self, config: StrategyConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        self.config = build_config(self.config_class, config, kwargs, owner=self.owner())

    @classmethod
    def owner(cls) -> str:
        """How messages name this strategy (``strategy 'op_mix'``)."""
        return f"strategy {cls.name or cls.__name__!r}"

    @classmethod
    def settings_classes(cls, simulator: str | None = None) -> list[type]:
        """The dataclasses of this strategy's settings (the recipes' flags): its ``config_class`` and, for
        a strategy that decides through a simulator, the ``simulator``'s (default: its own choice)."""
        return [cls.config_class]

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        """The mixture to start a run or stage with (cheap; heavy work belongs in :meth:`decide`)."""
        return Mixture.uniform(context.domains.names)

    def check(self, domains: DomainSet) -> None:
        """Raise ``ValueError`` (naming the setting, its value and the fix) if this strategy cannot run on
        ``domains``.  Called before any data are loaded or any step runs (every stage of a continual run)."""

    def next_decision_step(self, step: int, max_steps: int) -> int | None:
        """The first step ``>= step`` after which :meth:`decide` runs (0 = before training), or None.

        Must be known ahead: the interleaver's workers stop at the decision point until the
        decision is published.
        """
        return None

    def decide(self, context: DecisionContext) -> Mixture | Decision | None:
        """Return a new mixture (or a :class:`Decision`), or None to keep the current one."""
        return None

    def runs_on_every_process(self, trainer) -> bool:
        """True if :meth:`decide` runs on every process of this ``trainer``'s run (default ``collective``).

        Otherwise the main process decides alone and the decision is broadcast.
        """
        return self.collective

    def learner(self, trainer) -> Any:
        """An object that replaces how the model learns (see ``on_policy_distill``), or None (plain training).

        Only :class:`~hf_datamix.sft.DataMixSFTTrainer` supports learners.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        """Whatever the strategy needs to resume exactly (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def settings(self) -> dict[str, Any]:
        """The strategy's settings, for records and model cards."""
        return settings_of(self.config)
