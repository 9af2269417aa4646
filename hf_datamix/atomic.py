"""Files written whole or not at all: through a temporary file in the same folder and a rename."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` to ``path`` so that a crash at any moment leaves the old file or the new one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str, data) -> str:
    """Write JSON to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
