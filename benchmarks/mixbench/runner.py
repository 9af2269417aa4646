"""Resumable units of work: a store of finished units, workers that share the pending ones, a time budget.

A benchmark is a list of *units* (one oracle branch, one simulator at one decision point, one baseline
run), each with a key and an estimated cost.  ``run_units`` reads the finished ones from a JSON store,
hands the pending ones to ``procs`` worker processes (several runs share one GPU well when the model
is small: each worker is an independent run of the benchmark with its own share), and merges what
they wrote back into the store.  Every worker rewrites its own file after every unit and stops
before a unit that would not end before its deadline, so a command cut by a time limit keeps every
finished unit and the same command, run again, goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import glob
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import read_json, write_json  # noqa: E402


def store_name(variant: str, set_name: str, shape: str) -> str:
    """The file name of a store: ``<kind[_variant]>-<set>-<shape>.json`` (e.g. ``fidelity_planned-five-gpu.json``)."""
    return f"{variant}-{set_name}-{shape}.json"


def as_stored(value: Any) -> Any:
    """``value`` as it reads back from a store's JSON file (tuples become lists)."""
    return json.loads(json.dumps(value))


def differences(a: dict[str, Any], b: dict[str, Any], extensible: tuple[str, ...]) -> list[str]:
    """Settings in which ``a`` and ``b`` disagree; an ``extensible`` one (a list or a mapping that grows from
    call to call) disagrees only in the entries both have (``key.entry`` for a mapping)."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if key in extensible and isinstance(x, dict) and isinstance(y, dict):
            out += [f"{key}.{k}" for k in sorted(set(x) & set(y)) if x[k] != y[k]]
        elif not (key in extensible and isinstance(x, list) and isinstance(y, list)) and x != y:
            out.append(key)
    return out


def _union(a: dict[str, Any], b: dict[str, Any], extensible: tuple[str, ...]) -> dict[str, Any]:
    """``a`` with the entries of ``b``'s extensible settings that ``a`` lacks (a list keeps ``a``'s order first)."""
    out = dict(a)
    for key in extensible:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out[key] = {**x, **{k: v for k, v in y.items() if k not in x}}
        elif isinstance(x, list) and isinstance(y, list):
            out[key] = x + [v for v in y if v not in x]
    return out


class Store:
    """Finished units of one benchmark configuration (``settings`` must match to add to it).

    ``extensible`` settings may grow (more seeds, more arms): the store's settings are the union, and
    only an entry both define differently (an arm whose definition changed) refuses the store.
    """

    def __init__(self, path: str, settings: dict[str, Any], extensible: tuple[str, ...] = ()):
        settings = as_stored(settings)
        self.path, self.extensible = path, tuple(extensible)
        data = read_json(path, default={"settings": settings, "units": {}, "calls": []})
        changed = differences(settings, data["settings"], self.extensible)
        if changed:
            raise ValueError(f"{path} holds units of other settings (differ: {changed}); use another --store.")
        self.settings = _union(data["settings"], settings, self.extensible)
        self.units: dict[str, Any] = data["units"]
        self.calls: list[dict] = data["calls"]
        #: Units computed again by a later call (same settings, a fresh run): the first is kept in
        #: ``units``, the others here, so run-to-run (GPU nondeterminism) differences are measured.
        self.replicates: dict[str, list[Any]] = data.get("replicates", {})

    def merge_files(self, paths: list[str]) -> int:
        """Add the units of worker files (of this configuration); returns how many were new."""
        added = 0
        for path in paths:
            data = read_json(path, default=None)
            if not data or differences(data.get("settings", {}), self.settings, self.extensible):
                continue
            for key, value in data["units"].items():
                if key not in self.units:
                    self.units[key] = value
                    added += 1
                elif value != self.units[key] and value not in self.replicates.get(key, []):
                    self.replicates.setdefault(key, []).append(value)
            if data.get("call") and data["call"] not in self.calls:
                self.calls.append(data["call"])
        return added

    def save(self) -> None:
        write_json(
            self.path,
            {"settings": self.settings, "units": self.units, "calls": self.calls, "replicates": self.replicates},
        )


class WorkerFile:
    """The units one worker finished in this call, rewritten after each."""

    def __init__(self, path: str, settings: dict[str, Any], call: dict[str, Any]):
        self.path, self.settings, self.call, self.units = path, settings, call, {}

    def add(self, key: str, value: Any) -> None:
        self.units[key] = value
        write_json(self.path, {"settings": self.settings, "call": self.call, "units": self.units})


def assign(units: list[tuple[str, float]], procs: int) -> list[list[str]]:
    """Split ``[(key, cost)]`` over ``procs`` workers, longest first onto the least loaded (deterministic);
    each worker's keys keep the given order."""
    loads, shares = [0.0] * procs, [[] for _ in range(procs)]
    order = {key: i for i, (key, _) in enumerate(units)}
    for key, cost in sorted(units, key=lambda u: (-u[1], order[u[0]])):
        k = loads.index(min(loads))
        shares[k].append(key)
        loads[k] += cost
    return [sorted(share, key=order.get) for share in shares]


def launch_workers(argv: list[str], procs: int, work: str, cwd: str) -> list[int]:
    """Run ``argv + ['--worker', k]`` in ``cwd`` for every worker at once; returns their exit codes."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    children = []
    for k in range(procs):
        log = open(os.path.join(work, f"worker-{k}.log"), "w")  # noqa: SIM115 - closed below
        child = subprocess.Popen([*argv, "--worker", str(k)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        children.append((child, log))
    codes = []
    try:
        for child, log in children:
            codes.append(child.wait())
            log.close()
    except BaseException:  # stopped from outside: the workers stop too (their finished units are on disk)
        for child, log in children:
            child.terminate()
            child.wait()
            log.close()
        raise
    for k in range(procs):  # the workers' own words, for the command's output
        with open(os.path.join(work, f"worker-{k}.log"), encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-3000:]
        print(f"---- worker {k} (exit {codes[k]}) ----\n{tail}", flush=True)
    return codes


def pending_units(plan, done: dict[str, Any]) -> list[tuple[str, float]]:
    """``[(key, cost)]`` of the plan's units not finished in ``done`` (a store's units).  A plan whose unit of work
    stands for several stored records (quality's arms sharing a decision) says itself what is left:
    ``plan.units(done)``."""
    if "done" in inspect.signature(plan.units).parameters:
        return plan.units(done)
    return [(key, cost) for key, cost in plan.units() if key not in done]


def worker_files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "worker-*.json")))


class Board:
    """What the workers of one call share when units depend on each other: the finished units (the store's and
    every worker file's in ``folder``) and which unit each worker has taken (a claim file per unit, holding the
    claimer's pid, so a unit is trained once and a dead worker's claim is ignored)."""

    def __init__(self, folder: str, done: dict[str, Any] | None = None):
        self.folder, self.done = folder, dict(done or {})
        self.claims = os.path.join(folder, "claims")
        os.makedirs(self.claims, exist_ok=True)

    def clear(self) -> None:
        """Forget the claims of an earlier call (called before the workers start)."""
        for path in glob.glob(os.path.join(self.claims, "*")):
            os.remove(path)

    def results(self) -> dict[str, Any]:
        out = dict(self.done)
        for path in worker_files(self.folder):
            out.update((read_json(path, default=None) or {}).get("units", {}))
        return out

    def _path(self, key: str) -> str:
        return os.path.join(self.claims, key.replace("/", "__"))

    def claim(self, key: str) -> bool:
        """Take ``key`` for this process; False if a live worker has it."""
        path = self._path(key)
        if self.busy(key):
            return False
        if os.path.exists(path):  # a dead worker's claim
            os.remove(path)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    def any_busy(self) -> bool:
        """True if a live worker other than this process holds a claim on a unit not yet finished."""
        finished = self.results()
        return any(
            self.busy(key)
            for key in (os.path.basename(p).replace("__", "/") for p in glob.glob(os.path.join(self.claims, "*")))
            if key not in finished
        )

    def busy(self, key: str) -> bool:
        """True if a live process (other than this one) holds ``key``'s claim."""
        try:
            with open(self._path(key), encoding="utf-8") as handle:
                pid = int(handle.read() or 0)
        except (FileNotFoundError, ValueError):
            return False
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        try:  # a worker that died before its parent reaped it is a zombie: not working
            with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True

    def release(self, key: str) -> None:
        """Give ``key`` back (its unit failed in this process)."""
        if os.path.exists(self._path(key)) and not self.busy(key):
            os.remove(self._path(key))


def run_ready(
    board: Board,
    ready: Callable[[dict[str, Any]], list[tuple]],
    out: WorkerFile,
    budget: Budget,
    show: Callable[[str, Any], str],
    poll_s: float = 2.0,
) -> None:
    """Take units whose inputs are done until none is left or none fits the budget: ``ready(results)`` gives
    ``[(key, cost, job)]`` or ``[(key, cost, job, claim)]`` (``claim``: the board's key when it is not ``key``, e.g.
    a unit done elsewhere that this machine must redo) in the order to take them; ``job()`` gives the unit's value,
    added to ``out`` as ``key``; ``show(key, value)`` is the line printed after it."""
    while True:
        units = [(*u, u[0])[:4] for u in ready(board.results())]
        units = [u for u in units if not board.busy(u[3])]
        fitting = [u for u in units if budget.allows(u[1])]
        if not fitting:
            if units:
                print(
                    f"stop: {len(units)} ready units would not end before the deadline ({budget.left:.0f} s left)",
                    flush=True,
                )
                return
            if not board.any_busy() or budget.left <= 0:
                return
            time.sleep(poll_s)
            continue
        key, cost, job, claim = fitting[0]
        if not board.claim(claim):
            continue
        started = time.perf_counter()
        try:
            value = job()
        except BaseException:
            board.release(claim)  # the others need not wait for it
            raise
        out.add(key, value)
        if claim != key:
            board.release(claim)
        seconds = time.perf_counter() - started
        if cost:
            budget.observe(cost, seconds)
        print(f"{key}: {show(key, value)} in {seconds:.0f} s", flush=True)


class Budget:
    """A deadline, and a running estimate of seconds per unit of cost (e.g. per training step); ``per_cost``:
    a first estimate (e.g. :func:`measured_rate` of the store), so the call's first unit is checked too.
    ``by_kind``: first estimates per kind of unit (:func:`unit_kind`), for units whose cost in steps does not
    say their time (a LoRA-probe unit compiles its probes: ≈ 2–3× its steps' time); a kind without one is
    paced by ``per_cost``."""

    def __init__(self, seconds: float, per_cost: float | None = None, by_kind: dict[str, float] | None = None):
        self.deadline = time.monotonic() + float(seconds)
        self.per_cost: float | None = per_cost
        self.by_kind: dict[str, float] = dict(by_kind or {})

    def observe(self, cost: float, seconds: float, kind: str | None = None) -> None:
        rate = seconds / max(cost, 1e-9)
        self.per_cost = rate if self.per_cost is None else 0.5 * (self.per_cost + rate)
        if kind is not None:
            self.by_kind[kind] = rate if kind not in self.by_kind else 0.5 * (self.by_kind[kind] + rate)

    def allows(self, cost: float, margin: float = 1.15, kind: str | None = None) -> bool:
        per_cost = self.by_kind.get(kind, self.per_cost)
        if per_cost is None:
            return time.monotonic() < self.deadline
        return time.monotonic() + margin * cost * per_cost < self.deadline

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()


def unit_kind(plan, key: str) -> str | None:
    """The kind of unit ``key`` is, where the plan tells (``plan.unit_kind``; fidelity: ``oracle``,
    ``sim/lora``, ...), for pacing each kind by its own measured seconds per unit of cost."""
    return plan.unit_kind(key) if hasattr(plan, "unit_kind") else None


def _unit_costs(plan) -> dict[str, float]:
    """``{key: cost}`` of a plan whose units are one record each (none for a plan that groups records, whose
    ``units`` takes ``done``: quality's)."""
    return {} if "done" in inspect.signature(plan.units).parameters else dict(plan.units())


def unit_cost(plan, key: str, costs: dict[str, float] | None = None) -> float | None:
    """The estimated cost of one stored record ``key``: an arm's alone (``plan.cost(arm)``, quality and its
    kin; an arm of the plan's table that this call did not ask for is costed as its table defines it, so a call
    for one new arm is paced by the store's other arms), else the plan's unit of that name (from ``costs``,
    :func:`_unit_costs` when not given); None when the plan cannot tell."""
    arm = key.rsplit("/", 1)[0]
    if hasattr(plan, "cost") and arm in getattr(plan, "definitions", {}):
        return float(plan.cost(arm))
    if hasattr(plan, "cost") and arm in getattr(plan, "table", {}):
        return float(dataclasses.replace(plan, arms=(arm,)).cost(arm))
    return (_unit_costs(plan) if costs is None else costs).get(key)


def measured_rate(plan, units: dict[str, Any]) -> dict[str, Any] | None:
    """Seconds per unit of cost of the store's finished units, as they ran (median over the records with
    ``seconds`` and a known cost): ``{"seconds_per_cost", "units"}``, or None without any."""
    rates, costs, cost_of = [], _unit_costs(plan), {}  # the plan's units once; an arm's cost once, not per seed
    for key, value in units.items():
        seconds = value.get("seconds") if isinstance(value, dict) else None
        same_cost = key.rsplit("/", 1)[0] if hasattr(plan, "cost") else key  # an arm's records cost the same
        if same_cost not in cost_of:
            cost_of[same_cost] = unit_cost(plan, key, costs)
        cost = cost_of[same_cost]
        if isinstance(seconds, int | float) and seconds > 0 and cost:
            rates.append(seconds / cost)
    if not rates:
        return None
    by_kind: dict[str, list[float]] = {}
    for key, value in units.items():  # the same records, grouped by kind where the plan names kinds
        seconds, kind = (value.get("seconds") if isinstance(value, dict) else None), unit_kind(plan, key)
        cost = cost_of.get(key.rsplit("/", 1)[0] if hasattr(plan, "cost") else key)
        if kind is not None and isinstance(seconds, int | float) and seconds > 0 and cost:
            by_kind.setdefault(kind, []).append(seconds / cost)
    rate = {"seconds_per_cost": float(sorted(rates)[len(rates) // 2]), "units": len(rates)}
    if by_kind:
        rate["by_kind"] = {kind: float(sorted(r)[len(r) // 2]) for kind, r in by_kind.items()}
    return rate
