"""The examples in docstrings are tests: every module of the packages that has one is run."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("slidr", "streams", "models", "calibration", "guardrails", "replay")


def _modules_with_examples() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>> " in path.read_text(encoding="utf-8"):
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


MODULES = _modules_with_examples()


def test_the_small_pure_functions_have_examples() -> None:
    for module in ("slidr.slices", "slidr.features", "slidr.settings"):
        assert module in MODULES
    assert "streams.feature_store.batch" in MODULES  # epoch_ms


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed: run python -m doctest"
