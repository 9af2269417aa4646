"""examples/custom_strategy: the plugin package installs with pip and its strategy is listed and works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import pip_available, pip_installed

from hf_datamix import Mixture


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_strategy"


def _load_focus(src: Path, monkeypatch):
    spec = importlib.util.spec_from_file_location("focus_example", src / "focus_strategy" / "focus.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module runs.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_focus_strategy_behaves_as_documented(monkeypatch):
    module = _load_focus(EXAMPLE, monkeypatch)
    strategy = module.FocusStrategy(share=0.7, domain="beta")
    context = SimpleNamespace(domains=SimpleNamespace(names=["alpha", "beta", "gamma"]))
    assert strategy.initial_mixture(context).allclose({"alpha": 0.15, "beta": 0.7, "gamma": 0.15})
    assert strategy.next_decision_step(0, 10) == 5 and strategy.next_decision_step(6, 10) is None
    assert strategy.decide(context) == Mixture.uniform(["alpha", "beta", "gamma"])
    with pytest.raises(ValueError, match="share=1.5"):
        module.FocusStrategy(share=1.5)
    with pytest.raises(ValueError, match="domain='code' is not one of"):
        module.FocusStrategy().initial_mixture(context)


@pytest.mark.skipif(
    not pip_available(), reason="pip is not available in this Python, so the example cannot be installed"
)
def test_example_package_installs_and_is_listed(tmp_path):
    with pip_installed(EXAMPLE, tmp_path) as env:
        # Entry points are read per process: list them from a fresh one, as a user would.
        listed = subprocess.run(
            [sys.executable, "-m", "hf_datamix.cli", "strategies"],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )
        assert listed.returncode == 0, listed.stderr
        line = next((row for row in listed.stdout.splitlines() if row.split()[:1] == ["focus"]), None)
        assert line is not None, listed.stdout
        assert "Give one domain a fixed share, the rest equally." in line
