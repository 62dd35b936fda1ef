"""Where the project constructs a client of Kafka, Redis or Triton, and whether it builds it
from the settings: the scan behind the tests that every client honours the security settings."""

from __future__ import annotations

import ast
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from slidr.settings import PROJECT_ROOT

#: The project's code (tests aside): every client in it must be built from the settings.
SCANNED = ("slidr", "streams", "replay", "models", "benchmarks")


def called_name(call: ast.Call) -> str | None:
    """``f`` for ``f(...)`` and for ``x.f(...)``."""
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def spreads_a_call_to(call: ast.Call, builders: Collection[str]) -> bool:
    """Whether one of ``call``'s ``**`` arguments is a call to one of ``builders``."""
    return any(
        kw.arg is None
        and isinstance(kw.value, ast.Call)
        and isinstance(kw.value.func, ast.Name)
        and kw.value.func.id in builders
        for kw in call.keywords
    )


def construction_sites(
    find: Callable[[Path], Iterable[tuple[int, bool]]], also: Iterable[str] = ()
) -> dict[str, bool]:
    """``path:line`` -> built from the settings, for each construction ``find`` reports as
    (line, built from the settings) in the files of :data:`SCANNED` and of ``also`` (folders
    or single files)."""
    sites = {}
    for name in (*SCANNED, *also):
        top = PROJECT_ROOT / name
        for path in [top] if top.suffix == ".py" else sorted(top.rglob("*.py")):
            for line, ok in find(path):
                sites[f"{path.relative_to(PROJECT_ROOT)}:{line}"] = ok
    return sites
