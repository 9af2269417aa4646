"""The registries (strategies, laws, simulators): built-ins, entry points, in-process registration, name errors,
settings, and a real plugin."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import pip_available, pip_installed

import hf_datamix
from hf_datamix import (
    Mixture,
    Strategy,
    StrategyConfig,
    available_strategies,
    create_strategy,
    register_strategy,
)
from hf_datamix.registry import Registry
from hf_datamix.settings import build_config
from hf_datamix.strategies.registry import ENTRY_POINT_GROUP, STRATEGIES, get_strategy_class
from hf_datamix.strategies.uniform import NaturalStrategy, UniformStrategy


PLUGIN_SRC = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(autouse=True)
def _clean_registry():
    """Whatever a test registers in-process is gone afterwards."""
    saved = dict(STRATEGIES._registered)
    yield
    STRATEGIES._registered.clear()
    STRATEGIES._registered.update(saved)
    STRATEGIES._loaded.clear()


@dataclass
class ToyConfig(StrategyConfig):
    alpha: float = field(default=1.0, metadata={"help": "a number"})
    mode: str = field(default="fast", metadata={"help": "a word"})


class ToyStrategy(Strategy):
    name = "toy"
    description = "Toy strategy for tests."
    config_class = ToyConfig


class OtherStrategy(Strategy):
    name = "other"


def fake_context(names):
    return SimpleNamespace(
        domains=SimpleNamespace(names=list(names)), token_counts={n: 10 * (i + 1) for i, n in enumerate(names)}
    )


# -- listing and lookup -------------------------------------------------------------------------


def test_available_strategies_builtins_sorted():
    names = available_strategies()
    assert {"natural", "uniform"} <= set(names)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert hf_datamix.available_strategies() == names


def test_builtins_resolve_lazily_by_module_and_attribute():
    assert get_strategy_class("uniform") is UniformStrategy
    assert get_strategy_class("natural") is NaturalStrategy
    assert "uniform" not in STRATEGIES._registered  # found as built-in module:attr entries, not registrations
    uniform = create_strategy("uniform")
    assert isinstance(uniform, UniformStrategy) and uniform.settings() == {}
    assert uniform.initial_mixture(fake_context(["a", "b"])) == Mixture({"a": 0.5, "b": 0.5})
    natural = create_strategy("natural")
    assert natural.initial_mixture(fake_context(["a", "b", "c"])).allclose({"a": 1 / 6, "b": 2 / 6, "c": 3 / 6})


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(ValueError) as info:
        create_strategy("unifrom")
    message = str(info.value)
    assert "Unknown strategy 'unifrom'" in message
    assert "Did you mean 'uniform'" in message
    assert repr(available_strategies()) in message  # every known name


def test_unknown_name_without_close_match_has_no_hint():
    with pytest.raises(ValueError, match=r"Unknown strategy 'zzzzzz'\. Known strategies: \[") as info:
        get_strategy_class("zzzzzz")
    assert "Did you mean" not in str(info.value)


def test_unknown_name_suggests_registered_ones_too():
    register_strategy("toy", ToyStrategy)
    with pytest.raises(ValueError, match=r"Did you mean 'toy'"):
        get_strategy_class("tyo")


def test_empty_registry_says_how_to_fix():
    empty = Registry("strategy", Strategy, group="hf_datamix.no_such_group_for_tests")
    assert empty.names() == []
    with pytest.raises(ValueError, match=r"No strategies are registered at all: install the package"):
        empty.get("uniform")


def test_broken_entry_point_names_plugin(monkeypatch):
    reg = Registry("strategy", Strategy, ENTRY_POINT_GROUP)
    broken = EntryPoint(name="broken", value="hf_datamix_no_such_module_xyz:Thing", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(reg, "_entry_points", lambda: {"broken": broken})
    with pytest.raises(
        ImportError,
        match=r"strategy 'broken' \(entry point 'hf_datamix_no_such_module_xyz:Thing'.*failed to load: ModuleNotFoundError",
    ):
        reg.get("broken")


def test_entry_point_to_non_strategy(monkeypatch):
    reg = Registry("strategy", Strategy, ENTRY_POINT_GROUP)
    wrong = EntryPoint(name="wrong", value="json:dumps", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(reg, "_entry_points", lambda: {"wrong": wrong})
    with pytest.raises(TypeError, match=r"strategy 'wrong' must be a subclass of hf_datamix\.Strategy"):
        reg.get("wrong")


# -- register_strategy ---------------------------------------------------------------------------


def test_register_and_create():
    assert register_strategy("toy", ToyStrategy) is ToyStrategy
    assert "toy" in available_strategies()
    assert available_strategies() == sorted(available_strategies())
    assert get_strategy_class("toy") is ToyStrategy
    assert isinstance(create_strategy("toy"), ToyStrategy)


def test_register_as_decorator():
    @register_strategy("decorated")
    class Decorated(Strategy):
        pass

    assert Decorated.__name__ == "Decorated"  # the decorator returns the class itself
    assert get_strategy_class("decorated") is Decorated


@pytest.mark.parametrize("bad", ["", "Toy", "1toy", "toy-x", "toy x", "_toy", None, 5])
def test_register_bad_name(bad):
    with pytest.raises(ValueError, match=r"strategy name .* is invalid: use lower-case letters"):
        register_strategy(bad, ToyStrategy)
    assert bad not in STRATEGIES._registered


@pytest.mark.parametrize("not_a_strategy", [object, dict, ToyConfig, "ToyStrategy", ToyStrategy()])
def test_register_non_strategy_class(not_a_strategy):
    with pytest.raises(TypeError, match=r"strategy 'thing' must be a subclass of hf_datamix\.Strategy"):
        register_strategy("thing", not_a_strategy)
    assert "thing" not in STRATEGIES._registered


def test_register_duplicate_and_overwrite():
    register_strategy("toy", ToyStrategy)
    with pytest.raises(ValueError, match=r"'toy' is already registered; pass overwrite=True"):
        register_strategy("toy", OtherStrategy)
    assert get_strategy_class("toy") is ToyStrategy
    register_strategy("toy", OtherStrategy, overwrite=True)
    assert get_strategy_class("toy") is OtherStrategy


def test_register_cannot_shadow_entry_point_without_overwrite():
    with pytest.raises(ValueError, match=r"'uniform' is already registered"):
        register_strategy("uniform", ToyStrategy)
    assert get_strategy_class("uniform") is UniformStrategy
    register_strategy("uniform", ToyStrategy, overwrite=True)
    assert get_strategy_class("uniform") is ToyStrategy
    assert available_strategies().count("uniform") == 1


def test_registry_cleanup_fixture_restored_state():
    # Runs after the tests above: none of their registrations leaked.
    assert not {"toy", "decorated", "thing"} & set(STRATEGIES._registered)
    assert get_strategy_class("uniform") is UniformStrategy


# -- strategy settings ---------------------------------------------------------------------------


def test_settings_defaults_mapping_object_and_keywords():
    register_strategy("toy", ToyStrategy)
    assert create_strategy("toy").settings() == {"alpha": 1.0, "mode": "fast"}
    assert create_strategy("toy", {"alpha": 2.5}).settings() == {"alpha": 2.5, "mode": "fast"}
    assert create_strategy("toy", ToyConfig(mode="slow")).settings() == {"alpha": 1.0, "mode": "slow"}
    # keywords override the config
    strat = create_strategy("toy", {"alpha": 2.5, "mode": "slow"}, alpha=7)
    assert isinstance(strat.config, ToyConfig)
    assert strat.config.alpha == 7 and strat.config.mode == "slow"
    assert ToyStrategy(alpha=3).config.alpha == 3


def test_settings_unknown_key_names_key_and_known_settings():
    register_strategy("toy", ToyStrategy)
    with pytest.raises(ValueError) as info:
        create_strategy("toy", {"alpha": 2, "beta": 1, "gamma": 0})
    message = str(info.value)
    assert "strategy 'toy' has no setting(s) ['beta', 'gamma']" in message
    assert "its settings are ['alpha', 'mode']" in message
    with pytest.raises(ValueError, match=r"no setting\(s\) \['lr'\]"):
        create_strategy("toy", lr=0.1)


def test_settings_strategy_without_settings():
    with pytest.raises(ValueError, match=r"strategy 'uniform' has no setting\(s\) \['alpha'\]; its settings are none"):
        create_strategy("uniform", {"alpha": 1})


def test_settings_bad_config_type():
    with pytest.raises(ValueError, match=r"strategy 'toy': config must be a ToyConfig or a mapping, got 42"):
        ToyStrategy(42)
    with pytest.raises(ValueError, match="config must be a ToyConfig or a mapping"):
        ToyStrategy(StrategyConfig())


def test_build_config_names_owner():
    with pytest.raises(ValueError, match=r"strategy 'MyOwner' has no setting\(s\) \['x'\]"):
        build_config(ToyConfig, {"x": 1}, {}, owner="strategy 'MyOwner'")


# -- a real plugin package, installed with pip --------------------------------------------------


CHECK_IN_FRESH_PROCESS = textwrap.dedent(
    """
    import json
    from types import SimpleNamespace
    import hf_datamix
    from hf_datamix.strategies.registry import get_strategy_class

    names = hf_datamix.available_strategies()
    strategy = hf_datamix.create_strategy("reverse_alpha", offset=0.0)
    context = SimpleNamespace(domains=SimpleNamespace(names=["b", "c", "a"]))
    mixture = strategy.initial_mixture(context)
    cls = get_strategy_class("reverse_alpha")
    try:
        hf_datamix.create_strategy("reverse_alpha", bogus=1)
        bad_setting = None
    except ValueError as error:
        bad_setting = str(error)
    print(json.dumps({
        "names": names,
        "class": cls.__module__ + ":" + cls.__qualname__,
        "is_strategy": issubclass(cls, hf_datamix.Strategy),
        "weights": mixture.to_dict(),
        "settings": strategy.settings(),
        "bad_setting": bad_setting,
    }))
    """
)


@pytest.mark.skipif(
    not pip_available(), reason="pip is not available in this Python, so the plugin cannot be installed"
)
def test_plugin_entry_point(tmp_path):
    with pip_installed(PLUGIN_SRC, tmp_path) as env:
        # Entry points are cached per process: look in a fresh interpreter.
        check = subprocess.run(
            [sys.executable, "-c", CHECK_IN_FRESH_PROCESS],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )
        assert check.returncode == 0, f"plugin check failed:\n{check.stdout}\n{check.stderr}"
        result = json.loads(check.stdout.strip().splitlines()[-1])
        assert "reverse_alpha" in result["names"]
        assert {"natural", "uniform"} <= set(result["names"])
        assert result["names"] == sorted(result["names"])
        assert result["class"] == "hf_datamix_test_plugin:ReverseAlphaStrategy"
        assert result["is_strategy"] is True
        # reverse alphabetical order c, b, a -> ranks 1, 2, 3 -> weights 1/6, 2/6, 3/6 (keyed in given order)
        assert list(result["weights"]) == ["b", "c", "a"]
        assert result["weights"] == pytest.approx({"a": 3 / 6, "b": 2 / 6, "c": 1 / 6})
        assert result["settings"] == {"offset": 0.0}
        assert "no setting(s) ['bogus']" in result["bad_setting"] and "['offset']" in result["bad_setting"]
    # Gone again, for a fresh process.
    after = subprocess.run(
        [sys.executable, "-c", "import hf_datamix; print('reverse_alpha' in hf_datamix.available_strategies())"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert after.stdout.strip() == "False", after.stderr
    assert not any(PLUGIN_SRC.glob("*.egg-info")) and not (PLUGIN_SRC / "build").exists()
