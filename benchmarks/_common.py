"""What the benchmark scripts share: the provenance header of a result file, how it is written, timers.

Every script's result file starts with :func:`provenance` (benchmark, command, device, software,
commit, date), and methods are timed with :func:`timed_methods` / :func:`time_method`, which raise when
the method they wrap does not exist (a library move must not leave a timer measuring nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any


HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")


def device_description() -> str:
    """The accelerator (or CPU) the numbers were measured on, with torch's version."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}; torch {torch.__version__} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}"


def git_state(commit: str | None = None, env: str | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of this checkout: ``commit`` if given, else ``git rev-parse HEAD``, else ``$env``;
    ``dirty`` whether tracked files differ from it (None when not read from git)."""
    if commit:
        return commit, None

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE, check=False).stdout.strip()

    try:
        found = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if found else None
    except OSError:
        found, dirty = "", None
    return found or (os.environ.get(env) if env else None) or None, dirty


def command_line(argv: Iterable[str] | None = None) -> str:
    """How the benchmark was run: ``python3 <script relative to the checkout> <arguments>``."""
    argv = list(sys.argv if argv is None else argv)
    script = os.path.relpath(os.path.abspath(argv[0]), os.path.dirname(HERE)) if argv and argv[0] else "-"
    return " ".join(["python3", script, *argv[1:]])


def provenance(
    name: str,
    commit: str | None = None,
    *,
    commit_env: str | None = None,
    argv: Iterable[str] | None = None,
    software: Iterable[str] = (),
) -> dict[str, Any]:
    """The header of a result file: benchmark, command, device, software, commit (and whether the tree was
    dirty) and date.

    ``commit`` defaults to ``git rev-parse HEAD`` of this checkout, else ``$commit_env`` (pass it
    explicitly where the tree was copied without its history, as on the GPU machine).  ``software``
    names more packages whose versions to record.
    """
    import importlib

    import torch
    import transformers

    commit, dirty = git_state(commit, commit_env)
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    for package in software:
        versions[package] = getattr(importlib.import_module(package), "__version__", "unknown")
    return {
        "benchmark": name,
        "command": command_line(argv),
        "device": device_description(),
        "software": versions,
        "commit": commit,
        "tree_dirty": dirty,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def time_method(
    owner: Any, attr: str, key: str, times: dict[str, float], sync: Callable[[], None] | None = None
) -> Callable[[], None]:
    """Wrap ``owner.attr`` to add its seconds to ``times[key]`` (``sync`` before and after); returns the undo.

    Raises AttributeError when ``owner`` has no ``attr``: a timer around a method the library moved
    would silently measure nothing.
    """
    if not hasattr(owner, attr):
        raise AttributeError(
            f"cannot time {getattr(owner, '__name__', owner)}.{attr}: it does not exist "
            "(the library moved it; update the benchmark)"
        )
    original = getattr(owner, attr)

    def timed(*args, **kwargs):
        if sync:
            sync()
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if sync:
                sync()
            times[key] = times.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, attr, timed)
    return lambda: setattr(owner, attr, original)


@contextlib.contextmanager
def timed_methods(
    targets: Iterable[tuple[Any, str, str]], times: dict[str, float], sync: Callable[[], None] | None = None
):
    """``(owner, attr, key)`` methods timed into ``times`` for the block (see :func:`time_method`); restored after."""
    undo = []
    try:
        for owner, attr, key in targets:
            undo.append(time_method(owner, attr, key, times, sync))
        yield times
    finally:
        for restore in reversed(undo):
            restore()


def free_port() -> int:
    """A TCP port nothing listens on now, for ``accelerate launch --main_process_port``.

    Two multi-process launches on one machine (parallel test workers, a benchmark beside a run) must not
    share accelerate's default port 29500: the second one's processes join the first one's rendezvous.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_process_group(command: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True, timeout=...)`` that, on a timeout, kills the
    command's whole process group before raising :class:`subprocess.TimeoutExpired`.

    ``subprocess.run`` kills only the child: the worker processes ``accelerate launch`` started would live
    on, holding their rendezvous port and CPU, and hang the next launch.
    """
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def decision_records(history: list[dict]) -> list[dict]:
    """The decisions in a run's ``mixtures.json`` records (``trainer.history``), kept-mixture decisions included."""
    return [record for record in history if record.get("kind") in ("decision", "kept")]


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
