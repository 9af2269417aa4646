"""What every benchmark's result file starts with, and how it is written (shared by the benchmark scripts)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")


def device_description() -> str:
    """The accelerator (or CPU) the numbers were measured on, with torch's version."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}; torch {torch.__version__} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}"


def provenance(name: str, commit: str | None = None) -> dict[str, Any]:
    """The header of a result file: benchmark, command, device, software, commit and date.

    ``commit`` defaults to ``git rev-parse HEAD`` of this checkout (pass it explicitly where the tree
    was copied without its history, as on the GPU machine).
    """
    import torch
    import transformers

    if commit is None:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE,
                                check=False).stdout.strip() or None
    return {
        "benchmark": name,
        "command": " ".join(["python3"] + [os.path.relpath(sys.argv[0]) if sys.argv[0] else "-"] + sys.argv[1:]),
        "device": device_description(),
        "software": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(path: str, payload: Any) -> None:
    """Write ``payload`` atomically (a cut run never leaves half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    os.replace(tmp, path)


def read_json(path: str, default: Any = None) -> Any:
    if not os.path.isfile(path):
        return default
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
