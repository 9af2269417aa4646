"""Typed settings: strategy and simulator configs built from a config object, a mapping or keywords.

Every setting is a dataclass field with ``metadata={"help": ...}``; the same dataclasses are the
recipes' command-line flags (:mod:`hf_datamix.recipe_args`).  Values from a mapping (Python, YAML)
are checked against the field types here, so ``probe_steps="abc"`` is refused by name, with the
field's help (which states the allowed values), instead of failing later as a TypeError.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any


_EXAMPLES = {int: 100, float: 0.5, bool: True}
_KINDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def field_names(config_class: type) -> list[str]:
    """The settings of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(config_class)]


def settings_of(config: Any) -> dict[str, Any]:
    """A config dataclass as ``{setting: value}`` (empty for anything else)."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) and not isinstance(config, type) else {}


def as_values(config_class: type, config: Any, owner: str) -> dict[str, Any]:
    """``config`` (an instance of ``config_class``, a mapping or None) as a plain dict."""
    if isinstance(config, config_class):
        return dataclasses.asdict(config)
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    raise ValueError(f"{owner}: config must be a {config_class.__name__} or a mapping, got {config!r}.")


def build_config(config_class: type, config: Any, overrides: Mapping[str, Any], owner: str):
    """Build ``config_class`` from a config object, a mapping and keyword overrides, naming bad keys.

    ``owner`` names whose settings they are in messages (``"strategy 'op_mix'"``).
    """
    values = as_values(config_class, config, owner)
    values.update(overrides)
    known = field_names(config_class)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{owner} has no setting(s) {unknown}; its settings are {sorted(known) or 'none'}.")
    return config_class(**typed(config_class, values, owner))


def help_of(config_class: type, name: str) -> str:
    """The ``help`` text of a setting (empty when it has none)."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    return str(fields[name].metadata.get("help", "")) if name in fields else ""


def typed(config_class: type, values: Mapping[str, Any], owner: str) -> dict:
    """``values`` checked against the config's field types (and ``2.0`` made ``2`` for an int)."""
    hints = typing.get_type_hints(config_class)
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    out = dict(values)
    for name, value in values.items():
        allowed = (
            typing.get_args(hints[name])
            if typing.get_origin(hints[name]) in (typing.Union, types.UnionType)
            else (hints[name],)
        )
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
            hint = f"; e.g. --{name} {json.dumps(example)}" if example is not None else ""
            about = help_of(config_class, name)
            raise ValueError(
                f"{owner}: {name}={values[name]!r} is not {expected}{hint}"
                + (f" ({name}: {about})" if about else "")
                + "."
            )
    return out


def check_ranges(owner: str, config: Any, checks: Mapping[str, tuple[bool, str]]) -> None:
    """Raise one ValueError naming every setting whose ``(in range, the range)`` check failed."""
    bad = [f"{name}={getattr(config, name)!r} (must be {allowed})" for name, (ok, allowed) in checks.items() if not ok]
    if bad:
        raise ValueError(f"{owner} settings out of range: {', '.join(bad)}.")
