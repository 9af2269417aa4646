"""The strategy plugin interface.

A strategy decides the mixture.  The :class:`~hf_datamix.callbacks.MixingCallback` asks it for an
initial mixture when a run (or a stage of a continual run) starts, and calls :meth:`Strategy.decide`
at the decision points the strategy announces with :meth:`Strategy.next_decision_step`.  A decision
is computed on the main process (or on every process for ``collective`` strategies) and broadcast,
so every rank applies the same mixture.

Write your own by subclassing :class:`Strategy`, giving it a ``name``, a one-line ``description``
and (optionally) a ``config_class`` dataclass, and registering it under the entry-point group
``hf_datamix.strategies`` (see the README).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..mixture import Mixture

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
        trainer: the running :class:`~hf_datamix.trainer.DataMixTrainer` (model, tokenizer,
            accelerator, args, eval blocks, and helpers such as ``trainer.probe_batches(mixture)``).
        ledger: the run's :class:`~hf_datamix.compute.ComputeLedger`.
    """

    step: int
    max_steps: int
    stage: int
    domains: "DomainSet"
    token_counts: Mapping[str, int]
    mixture: Mixture | None = None
    previous_mixture: Mixture | None = None
    update: "DomainUpdate | None" = None
    history: list = field(default_factory=list)
    trainer: Any = None
    ledger: "ComputeLedger | None" = None
    drawn_tokens: Mapping[str, int] = field(default_factory=dict)

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
    #: Dataclass of the strategy's settings; ``strategy_args`` are validated against it.
    config_class: ClassVar[type] = StrategyConfig
    #: True if :meth:`decide` must run on every process (it uses collectives); else main process only.
    collective: ClassVar[bool] = False

    def __init__(self, config: StrategyConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        self.config = build_config(self.config_class, config, kwargs, owner=self.name or type(self).__name__)

    def initial_mixture(self, context: DecisionContext) -> Mixture:
        """The mixture to start a run or stage with (cheap; heavy work belongs in :meth:`decide`)."""
        return Mixture.uniform(context.domains.names)

    def check(self, domains: "DomainSet") -> None:
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
        return dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else {}


def build_config(config_class: type, config: Any, overrides: Mapping[str, Any], owner: str):
    """Build a strategy config from a config object, a mapping and keyword overrides, naming bad keys."""
    if isinstance(config, config_class):
        values = dataclasses.asdict(config)
    elif config is None:
        values = {}
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise ValueError(f"strategy {owner!r}: config must be a {config_class.__name__} or a mapping, got {config!r}.")
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"strategy {owner!r} has no setting(s) {unknown}; its settings are {sorted(known) or 'none'}."
        )
    return config_class(**_typed(config_class, values, owner))


_EXAMPLES = {int: 100, float: 0.5, bool: True}
_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list",
          dict: "a mapping"}


def _typed(config_class: type, values: dict, owner: str) -> dict:
    """``values`` checked against the config's field types (and ``2.0`` made ``2`` for an int), so a
    setting such as ``probe_steps=abc`` is refused by name instead of failing later as a TypeError."""
    import typing

    hints = typing.get_type_hints(config_class)
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    out = dict(values)
    for name, value in values.items():
        allowed = typing.get_args(hints[name]) if typing.get_origin(hints[name]) in (typing.Union, _union_type()) else (hints[name],)
        kinds = [typing.get_origin(t) or t for t in allowed]
        if value is None and type(None) in kinds:
            continue
        for kind in kinds:
            if kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if kind is list and isinstance(value, str):
                value = [value]
            if isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)):
                out[name] = value
                break
        else:
            if any(k is typing.Any for k in kinds):
                continue
            expected = " or ".join(_KINDS.get(k, getattr(k, "__name__", str(k))) for k in kinds if k is not type(None))
            example = defaults[name] if defaults[name] not in (dataclasses.MISSING, None) else _EXAMPLES.get(kinds[0])
            hint = f"; e.g. --strategy_args {name}={json.dumps(example)}" if example is not None else ""
            raise ValueError(f"strategy {owner!r}: {name}={values[name]!r} is not {expected}{hint}.")
    return out


def _union_type():
    import types

    return types.UnionType
