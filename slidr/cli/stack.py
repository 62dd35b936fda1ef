"""``slidr stack``: the local Kafka, Redis and Triton on loopback."""

from __future__ import annotations

import typer
from rich.table import Table

from models.day_zero import ensure_day_zero_version, serve_current_features
from slidr.console import make_console
from slidr.settings import get_settings
from slidr.stack import LocalStack, ServiceStatus

app = typer.Typer(help="Start, stop and inspect the local stack (real Kafka, Redis, Triton).")
console = make_console(stderr=True)


def _table(statuses: list[ServiceStatus]) -> Table:
    table = Table("service", "port", "pid", "health", "detail")
    for s in statuses:
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        table.add_row(s.name, str(s.port), str(s.pid or "-"), health, s.detail)
    return table


@app.command()
def up() -> None:
    """Start Kafka (KRaft), Redis and Triton on loopback and wait until each answers.

    Idempotent: services already running and healthy are left alone, but the topics the
    settings name are created and Triton loads the registry's versions either way; it returns
    once Triton serves them. The first run fetches the Kafka jars from Maven Central into the
    cache directory (SLIDR_CACHE_DIR).
    """
    settings = get_settings()
    version = ensure_day_zero_version(settings.triton)
    if version is not None:
        console.print(f"installed the day-zero velocity heuristic as model version {version}")
    statuses = LocalStack(settings).up(on_progress=console.print)
    if all(s.healthy for s in statuses):
        replaced = serve_current_features(settings)
        if replaced is not None:
            console.print(
                f"model version {replaced[0]} was trained on another feature list than this "
                f"slidr computes: installed the day-zero heuristic for the current features as "
                f"version {replaced[1]} and serving it (train a version to replace it)"
            )
    console.print(_table(statuses))
    console.print(f"logs: {statuses[0].log_file.parent.parent}/<service>/<service>*.log")
    started = {s.name: s.started_in_s for s in statuses if s.started_in_s is not None}
    if started:
        console.print(
            "start-up: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in started.items())
        )
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop exactly the services `slidr stack up` started."""
    stopped = LocalStack(get_settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Show each service, its port and its health; exit 1 if any is down."""
    statuses = LocalStack(get_settings()).status()
    console.print(_table(statuses))
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)
