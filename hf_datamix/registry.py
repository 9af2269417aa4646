"""One registry class for everything pluggable: strategies, mixing laws and simulators.

A :class:`Registry` maps names to classes of one base class.  Entries are lazy ``"module:attr"``
strings, loaded (and checked against the base class) the first time a name is asked for, so
listing names imports nothing.  Names come from three places, in this order of precedence:

1. in-process registrations (:meth:`Registry.register`, also as a decorator);
2. the built-ins, given as ``module:attr`` strings (the same strings ``setup.cfg`` declares under
   the entry-point group, so an editable install whose metadata predates a move still finds them);
3. the installed entry points of the group (``hf_datamix.strategies``, ``hf_datamix.laws``,
   ``hf_datamix.simulators``): how another package adds its own.

A miss lists the known names and the closest ones ("did you mean").
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def load_reference(reference: str) -> Any:
    """The object a ``"package.module:attr"`` string names."""
    module, sep, attr = reference.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{reference!r} is not a 'module:attr' reference.")
    value = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


class Registry:
    """Names -> classes derived from ``base`` (see the module docstring).

    Args:
        kind: what the entries are, for messages (``"strategy"``).
        base: the class every entry must derive from.
        group: the entry-point group plugins declare their entries under.
        builtins: ``{name: "module:attr"}`` of the library's own entries.
        base_name: how messages name ``base`` (default: ``hf_datamix.<base.__name__>``).
    """

    def __init__(
        self,
        kind: str,
        base: type,
        group: str,
        builtins: Mapping[str, str] | None = None,
        base_name: str | None = None,
    ):
        self.kind, self.base, self.group = kind, base, group
        self.base_name = base_name or f"hf_datamix.{base.__name__}"
        self._builtins = dict(builtins or {})
        self._registered: dict[str, Any] = {}
        self._loaded: dict[str, type] = {}

    # -- what is known ----------------------------------------------------------------------------
    def _entry_points(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Sorted names of every entry that can be used."""
        return sorted(set(self._registered) | set(self._builtins) | set(self._entry_points()))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def reference(self, name: str) -> str | None:
        """Where ``name`` comes from: its ``module:attr`` (None for a class registered as an object)."""
        entry = self._registered.get(name, self._builtins.get(name))
        if entry is None and name in (found := self._entry_points()):
            return found[name].value
        return entry if isinstance(entry, str) else None

    # -- registering -------------------------------------------------------------------------------
    def register(self, name: str, obj: type | str | None = None, overwrite: bool = False) -> Any:
        """Register a class (or a lazy ``"module:attr"`` string) under ``name`` in this process.

        Without ``obj`` it returns a decorator.  A name already known (built-in, plugin or registered)
        is refused unless ``overwrite=True``.
        """
        if obj is None:
            return lambda cls: self.register(name, cls, overwrite)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} is invalid: use lower-case letters, digits and '_'.")
        if not isinstance(obj, str) or ":" not in obj:
            self._check(name, obj)
        if not overwrite and name in self.names():
            raise ValueError(f"a {self.kind} named {name!r} is already registered; pass overwrite=True to replace it.")
        self._registered[name] = obj
        self._loaded.pop(name, None)
        return obj

    def unregister(self, name: str) -> None:
        """Forget an in-process registration (built-ins and entry points stay)."""
        self._registered.pop(name, None)
        self._loaded.pop(name, None)

    # -- looking up --------------------------------------------------------------------------------
    def get(self, name: str) -> type:
        """The class registered under ``name``; a miss lists the known names and the closest ones."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self._registered.get(name)
        if entry is None:
            entry = self._builtins.get(name)
        source = "built-in"
        if entry is None:
            found = self._entry_points()
            if name not in found:
                raise ValueError(self.unknown_message(name))
            entry, source = found[name], f"entry point {found[name].value!r} in group {self.group!r}"
        elif name in self._registered:
            source = "registered"
        cls = self._load(name, entry, source)
        self._check(name, cls)
        self._loaded[name] = cls
        return cls

    def unknown_message(self, name: Any) -> str:
        """``Unknown <kind> 'x'. Did you mean ...? Known <kinds>: [...]`` (and how to fix an empty registry)."""
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        extra = (
            ""
            if known
            else f" No {self.plural} are registered at all: install the package (pip install -e .) so its entry "
            "points exist."
        )
        return f"Unknown {self.kind} {name!r}.{hint} Known {self.plural}: {known}.{extra}"

    @property
    def plural(self) -> str:
        return self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """An instance of the class registered under ``name``."""
        return self.get(name)(*args, **kwargs)

    def _load(self, name: str, entry: Any, source: str) -> Any:
        if not isinstance(entry, str) and not hasattr(entry, "load"):
            return entry  # a class registered as an object
        try:
            return entry.load() if hasattr(entry, "load") else load_reference(entry)
        except Exception as error:  # a broken plugin must not hide behind a vague error
            where = source if source.startswith("entry point") else f"{source} {entry!r}"
            raise ImportError(
                f"{self.kind} {name!r} ({where}) failed to load: {type(error).__name__}: {error}"
            ) from error

    def _check(self, name: str, cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(
                f"{self.kind} {name!r} must be a subclass of {self.base_name} (or a 'module:attr' string "
                f"naming one), got {cls!r}."
            )


def registrar(registry: Registry) -> Callable:
    """``register(name, cls=None, overwrite=False)`` for ``registry``, usable as ``@register("name")``."""

    def register(name: str, cls: type | str | None = None, overwrite: bool = False):
        return registry.register(name, cls, overwrite)

    register.__doc__ = (
        f'Register a {registry.kind} class in this process; usable as a decorator ``@register("name")``.'
    )
    return register
