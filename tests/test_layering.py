"""Dependencies point inward (README, "Layout"): the shared core ``slidr/`` imports none of the
packages built on it (only its CLI, which wires them together, does), nothing imports the CLI,
and the streaming path never imports torch or the offline packages. Read from the source, so
an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from slidr.settings import PROJECT_ROOT

OUTER = ("streams", "models", "calibration", "guardrails", "replay")


def imported(path: Path) -> set[str]:
    """Every module a file imports, absolute names (slidr has no relative imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def package_files(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / package).rglob("*.py"))


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(PROJECT_ROOT)} imports {name}"
        for path in files
        for name in sorted(imported(path))
        if name.split(".")[0] in forbidden or name.startswith(forbidden)
    ]


def test_the_shared_core_imports_no_package_built_on_it() -> None:
    core = [p for p in package_files("slidr") if "cli" not in p.relative_to(PROJECT_ROOT).parts]
    assert core, "no files found under slidr/"
    assert offenders(core, OUTER) == []


@pytest.mark.parametrize("package", ["slidr", *OUTER, "benchmarks"])
def test_nothing_imports_the_cli(package: str) -> None:
    files = [p for p in package_files(package) if "cli" not in p.relative_to(PROJECT_ROOT).parts]
    assert offenders(files, ("slidr.cli",)) == []


def test_the_streaming_path_imports_neither_torch_nor_offline_code() -> None:
    live = [p for p in package_files("streams") if "monitor" not in p.parts]
    assert offenders(live, ("torch", "models", "calibration", "guardrails", "replay")) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from models.network import Net\n    import torch.nn\n")
    assert imported(bad) == {"models.network", "torch.nn"}
