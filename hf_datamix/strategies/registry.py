"""The strategy registry: entry points of the group ``hf_datamix.strategies`` plus in-process registrations.

Built-in strategies are declared in ``setup.cfg`` under ``[options.entry_points]`` exactly like a
plugin's, so they are found the same way.  Entry points are loaded lazily (``module:attr``) the
first time a name is asked for.
"""

from __future__ import annotations

import difflib
import re
from importlib.metadata import entry_points
from typing import Any

from .base import Strategy

ENTRY_POINT_GROUP = "hf_datamix.strategies"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class StrategyRegistry:
    """Maps strategy names to classes; see :func:`get_strategy_class`."""

    def __init__(self, group: str = ENTRY_POINT_GROUP):
        self.group = group
        self._registered: dict[str, type[Strategy]] = {}

    def _entry_points(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Sorted names of every strategy that can be used."""
        return sorted(set(self._entry_points()) | set(self._registered))

    def register(self, name: str, cls: type[Strategy], overwrite: bool = False) -> type[Strategy]:
        """Register ``cls`` under ``name`` in this process (entry points are the way for packages)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"strategy name {name!r} is invalid: use lower-case letters, digits and '_'.")
        _check_class(name, cls)
        if not overwrite and (name in self._registered or name in self._entry_points()):
            raise ValueError(f"a strategy named {name!r} is already registered; pass overwrite=True to replace it.")
        self._registered[name] = cls
        return cls

    def get(self, name: str) -> type[Strategy]:
        """The class registered under ``name``; a miss lists the known names and the closest ones."""
        if name in self._registered:
            return self._registered[name]
        found = self._entry_points()
        if name not in found:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            extra = (
                " No strategies are registered at all: install the package (pip install -e .) so its entry "
                "points exist."
                if not known
                else ""
            )
            raise ValueError(f"Unknown strategy {name!r}.{hint} Known strategies: {known}.{extra}")
        try:
            cls = found[name].load()
        except Exception as error:  # a broken plugin must not hide behind a vague error
            raise ImportError(
                f"strategy {name!r} (entry point {found[name].value!r} in group {self.group!r}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from error
        _check_class(name, cls)
        return cls


def _check_class(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"strategy {name!r} must be a subclass of hf_datamix.Strategy, got {cls!r}.")


REGISTRY = StrategyRegistry()


def available_strategies() -> list[str]:
    """Sorted names of the registered strategies (built-ins and plugins)."""
    return REGISTRY.names()


def register_strategy(name: str, cls: type[Strategy] | None = None, overwrite: bool = False):
    """Register a strategy class in this process; usable as a decorator ``@register_strategy("name")``."""
    if cls is None:
        return lambda klass: REGISTRY.register(name, klass, overwrite)
    return REGISTRY.register(name, cls, overwrite)


def get_strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered under ``name``."""
    return REGISTRY.get(name)


def create_strategy(name: str, config: Any = None, **kwargs: Any) -> Strategy:
    """Instantiate the strategy ``name`` with its settings (a mapping, a config object or keywords)."""
    return get_strategy_class(name)(config, **kwargs)
