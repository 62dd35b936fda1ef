"""``slidr models | promote | rollback | monitor``: the model lifecycle by hand and on watch."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Annotated

import typer
from rich.table import Table

from slidr.cli.options import setting_option
from slidr.console import make_console
from slidr.registry import Entry, Registry, RegistryError, TritonVersions
from slidr.serving_figures import ServingFigures
from slidr.settings import Settings, get_settings

log = logging.getLogger(__name__)
console = make_console()


def _registry(settings: Settings) -> Registry:
    return Registry(settings, TritonVersions(settings.triton))


def _ivr(figures: ServingFigures | None) -> str:
    return "-" if figures is None else f"{figures.ivr:.1%}"


def _note(entry: Entry) -> str:
    return entry.reason or (entry.history[-1].why if entry.history else "")


def models() -> None:
    """List the model's versions: state, IVR expected and observed, loaded in Triton.

    States: candidate (registered), serving, stable (the rollback target), retired, refused
    (by the guardrails or a rollback); the note says why a version is in its state.
    """
    settings = get_settings()
    registry = _registry(settings)
    try:
        loaded: set[int] | None = TritonVersions(settings.triton).loaded()
    except RegistryError:
        loaded = None  # Triton down: the registry is still worth reading
    table = Table(title=f"model {registry.name}")
    for column in ("version", "state", "kind", "registered", "IVR exp.", "IVR obs.", "loaded"):
        table.add_column(column, no_wrap=True)
    table.add_column("note")
    for e in registry.entries():
        table.add_row(
            str(e.version),
            e.state.value if e.on_disk else f"{e.state.value} (deleted)",
            e.kind,
            e.registered_at.strftime("%Y-%m-%d"),
            _ivr(registry.expected(e.version)),
            _ivr(e.observed),
            "?" if loaded is None else ("yes" if e.version in loaded else "no"),
            _note(e),
        )
    console.print(table)
    if loaded is None:
        console.print(f"Triton at {settings.triton.grpc_url} did not answer: loaded is unknown")


def _retain(registry: Registry) -> None:
    deleted = registry.enforce_retention()
    if deleted:
        console.print(f"retention: deleted versions {', '.join(map(str, deleted))}")


def promote(
    version: Annotated[int, typer.Argument(help="The registered version to serve.")],
    force: Annotated[
        bool, typer.Option("--force", help="Serve it even if the guardrails refused it.")
    ] = False,
) -> None:
    """Serve VERSION; the version it replaces becomes the stable one.

    Triton loads VERSION first, then the serving pointer switches atomically and every worker
    follows within SLIDR_WORKER__RELOAD_EVERY_S, without restart. Retired versions beyond
    SLIDR_REGISTRY__KEEP_RETIRED are deleted from disk.
    """
    registry = _registry(get_settings())
    entry = registry.promote(version, why="promoted by hand", force=force)
    console.print(f"version {entry.version} serves; the version it replaced is now stable")
    _retain(registry)


def rollback(
    to: Annotated[
        int | None,
        typer.Option("--to", help="Version to serve instead (default: the stable version)."),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Recorded in the registry with the refused version.")
    ] = "rolled back by hand",
) -> None:
    """Serve the stable version (or --to VERSION) again; the current one is refused.

    The pointer switches at once and workers follow within SLIDR_WORKER__RELOAD_EVERY_S; the
    removed version is unloaded from Triton after SLIDR_REGISTRY__UNLOAD_AFTER_S, once workers
    finished their batches on it.
    """
    settings = get_settings()
    registry = _registry(settings)
    bad, restored = registry.rollback(to=to, why=reason)
    console.print(f"version {restored.version} serves again; version {bad.version} is refused")
    wait = settings.registry.unload_after_s
    console.print(f"unloading version {bad.version} in {wait:.0f} s, once workers follow")
    time.sleep(wait)
    registry.sync_triton()
    _retain(registry)


def monitor(
    window_s: float | None = setting_option(
        "monitor", "window_s", "Sliding window, seconds (default 60)."
    ),
    min_decisions: int | None = setting_option(
        "monitor",
        "min_decisions",
        "Fewest decisions in a window before it is judged (default 500).",
    ),
    auto_rollback: bool | None = setting_option(
        "monitor",
        "auto_rollback",
        "Roll back on a sharp deviation, or only alert (default: roll back).",
        "--auto-rollback/--alert-only",
    ),
    metrics_port: int | None = setting_option(
        "monitor", "metrics_port", "Prometheus port; 0 disables (default 19101)."
    ),
) -> None:
    """Watch the decisions topic and roll a deviating model back to the stable version.

    Each version's decisions are tallied in a sliding window (IVR overall and per slice, the
    share Triton failed to score, the score histogram) and judged against the figures expected
    of the serving version, or those observed for the previous one. A sharp deviation logs an
    ERROR alert, counts in Prometheus and rolls back. With SLIDR_INTRADAY__ENABLED=true it also
    joins purchases with decisions and re-solves the thresholds when the realised FPR leaves
    its band (docs/calibration.md). Runs until interrupted (Ctrl-C, SIGTERM).
    """
    from prometheus_client import start_http_server

    from streams.monitor.consumer import Monitor

    settings = get_settings().overriding(
        "monitor",
        window_s=window_s,
        min_decisions=min_decisions,
        auto_rollback=auto_rollback,
        metrics_port=metrics_port,
    )
    watcher = Monitor(settings, _registry(settings))
    watcher.registry.serving()  # a missing or unreadable registry fails now, clearly
    if settings.monitor.metrics_port:
        start_http_server(
            settings.monitor.metrics_port, addr="127.0.0.1", registry=watcher.metrics.registry
        )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    watcher.run(stop)
