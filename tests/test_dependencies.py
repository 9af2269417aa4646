"""setup.cfg declares what the library imports, and nothing it does not."""

from __future__ import annotations

import ast
import configparser
import pathlib
import re
import sys
from importlib.metadata import packages_distributions


ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Imported only inside ``try/except ImportError`` or under an extra (named in setup.cfg's extras).
OPTIONAL = {
    "httpx": "ships with huggingface_hub >= 1.0; guarded",
    "sklearn": "gp extra",
    "threadpoolctl": "scikit-learn's own dependency (gp extra)",
}


def declared(section: str, key: str) -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config[section][key].splitlines()
    return {
        re.split(r"[<>=!~ ;\[]", line.strip())[0].lower().replace("_", "-")
        for line in lines
        if line.strip() and not line.strip().startswith("#")
    }


def imported_distributions() -> dict[str, set[str]]:
    """``{distribution: {module, ...}}`` for every top-level third-party import in hf_datamix/."""
    modules: set[str] = set()
    for path in (ROOT / "hf_datamix").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    found: dict[str, set[str]] = {}
    owners = packages_distributions()
    for module in modules - set(sys.stdlib_module_names) - {"hf_datamix", *OPTIONAL}:
        for dist in owners.get(module, [module]):
            found.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    return found


def test_install_requires_is_what_the_library_imports():
    required = declared("options", "install_requires")
    used = imported_distributions()
    assert sorted(set(used) - required) == [], "imported but not declared in install_requires"
    assert sorted(required - set(used)) == [], "declared in install_requires but never imported"


def test_tests_only_dependencies_are_in_the_test_extra():
    test_extra = declared("options.extras_require", "test")
    assert {"tokenizers", "tensorboard", "pytest"} <= test_extra
    assert "tokenizers" not in imported_distributions()  # the library gets its tokenizers through transformers
