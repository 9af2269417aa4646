"""The package's shape: no import cycle, the registries' built-ins declared in setup.cfg, settings that can be flags."""

from __future__ import annotations

import ast
import configparser
import dataclasses
import os
from pathlib import Path

import pytest
from transformers import TrainingArguments

from hf_datamix import DataMixArguments
from hf_datamix.laws import BUILTIN_LAWS, LAWS
from hf_datamix.recipe_args import RunArguments
from hf_datamix.sft import DataMixSFTConfig
from hf_datamix.simulate.base import BUILTIN_SIMULATORS, SIMULATORS, available_simulators
from hf_datamix.strategies.composed import ComposedStrategy
from hf_datamix.strategies.registry import BUILTIN_STRATEGIES, STRATEGIES, available_strategies, get_strategy_class


ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hf_datamix"


def module_imports() -> dict[str, set[str]]:
    """``{module: hf_datamix modules it imports}``, every import statement counted: at module level, in a
    function (lazy imports) and under ``TYPE_CHECKING``."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = path.name == "__init__.py"
        name = ".".join(parts[:-1] if package else parts)
        modules[name] = (path, package)
    graph = {}
    for name, (path, package) in modules.items():
        here = name.split(".") if package else name.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (
                    ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                    if node.level
                    else node.module
                )
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    graph = module_imports()
    assert {"hf_datamix.trainer", "hf_datamix.callbacks", "hf_datamix.laws.base"} <= set(graph)
    assert "hf_datamix.mixture" in graph["hf_datamix.card"]  # the walk sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_cycle_would_be_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize(
    "group, builtins, registry",
    [
        ("hf_datamix.strategies", BUILTIN_STRATEGIES, STRATEGIES),
        ("hf_datamix.laws", BUILTIN_LAWS, LAWS),
        ("hf_datamix.simulators", BUILTIN_SIMULATORS, SIMULATORS),
    ],
)
def test_setup_cfg_declares_every_builtin_under_its_entry_point_group(group, builtins, registry):
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = dict(line.split(" = ") for line in config["options.entry_points"][group].strip().splitlines())
    assert declared == builtins
    for name in builtins:
        assert issubclass(registry.get(name), registry.base) and registry.get(name).name == name


FLAG_CLASSES = (TrainingArguments, DataMixArguments, DataMixSFTConfig, RunArguments)


@pytest.mark.parametrize("name", available_strategies())
def test_every_strategys_settings_can_be_flags_next_to_the_recipes(name):
    """Settings are flags of the recipes: no strategy (with any simulator) may repeat a name of those."""
    taken = {f.name for cls in FLAG_CLASSES for f in dataclasses.fields(cls)}
    cls = get_strategy_class(name)
    simulators = available_simulators() if issubclass(cls, ComposedStrategy) else [None]
    for simulator in simulators:
        seen = set(taken)
        for settings in cls.settings_classes(simulator):
            fields = {f.name for f in dataclasses.fields(settings)}
            assert not fields & seen, f"{name} / {simulator}: {sorted(fields & seen)} clash"
            assert all(f.metadata.get("help") for f in dataclasses.fields(settings)), f"{settings.__name__} lacks help"
            seen |= fields


def test_one_home_for_file_names():
    names = ("mixtures.json", "mixture.json", "compute.json", "results.json", "datamix_state.json")
    for path in PACKAGE.rglob("*.py"):
        if path.name != "constants.py":
            text = path.read_text()
            assert not [n for n in names if f'"{n}"' in text], f"{os.path.relpath(path, ROOT)} spells a file name"
