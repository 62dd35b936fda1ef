"""``slidr simulate``: seeded traffic of humans and bots to Parquet or Kafka, truth kept apart."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from slidr.archive import CLICKS, CUSTOMERS_FILE, PURCHASES, TRUTH
from slidr.console import make_console
from slidr.settings import get_settings
from slidr.simulate.bots import DEFAULT_MIX
from slidr.simulate.config import SimConfig, SimulationConfigError, parse_mix, window_ending_now
from slidr.simulate.runner import Summary, manifest, run
from slidr.simulate.sinks import MANIFEST_FILE, KafkaSink, ParquetSink, Sink

logger = logging.getLogger(__name__)

_DEFAULT_MIX_TEXT = ",".join(f"{k.value}={w}" for k, w in DEFAULT_MIX.items())


class Output(StrEnum):
    PARQUET = "parquet"
    KAFKA = "kafka"


def _time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO-8601 time", param_hint=option) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _start(text: str | None, days: int) -> datetime:
    return window_ending_now(days) if text is None else _time(text, "--start")


def simulate(
    days: Annotated[
        int,
        typer.Option(
            "--days",
            min=1,
            max=366,
            envvar="SLIDR_SIMULATE_DAYS",
            help="Days of traffic to simulate.",
        ),
    ] = 1,
    clicks_per_day: Annotated[
        int,
        typer.Option(
            "--clicks-per-day",
            min=24,
            envvar="SLIDR_SIMULATE_CLICKS_PER_DAY",
            help="Average clicks per day, humans and bots together (weekends get more).",
        ),
    ] = 100_000,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            min=0,
            envvar="SLIDR_SIMULATE_SEED",
            help="Same seed + options => same events.",
        ),
    ] = 7,
    bot_share: Annotated[
        float,
        typer.Option(
            "--bot-share",
            envvar="SLIDR_SIMULATE_BOT_SHARE",
            help="Target share of bot clicks in [0, 0.95]; each day drifts around it.",
        ),
    ] = 0.3,
    bot_mix: Annotated[
        str,
        typer.Option(
            "--bot-mix",
            envvar="SLIDR_SIMULATE_BOT_MIX",
            help="Relative weights of the bot kinds, KIND=WEIGHT,... (unnamed kinds get 0).",
        ),
    ] = _DEFAULT_MIX_TEXT,
    drift: Annotated[
        float,
        typer.Option(
            "--drift",
            envvar="SLIDR_SIMULATE_DRIFT",
            help="Strength of the daily random walk of bot share, mix and speed; 0 = none.",
        ),
    ] = 1.0,
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            envvar="SLIDR_SIMULATE_START",
            help="First hour, ISO-8601 UTC (e.g. 2026-01-05T00:00Z). Default: the window ends at "
            "the current hour, so the pipeline accepts the events (it refuses events 8+ days old).",
        ),
    ] = None,
    origin: Annotated[
        str | None,
        typer.Option(
            "--origin",
            envvar="SLIDR_SIMULATE_ORIGIN",
            help="The simulated world's first hour, at or before --start (default: --start). "
            "With the same --seed and --origin, a later --start continues the world: the same "
            "customers and IPs, new sessions, the bots' drift carried on. Without it, a later "
            "--start replays the first days of the world.",
        ),
    ] = None,
    to: Annotated[
        Output,
        typer.Option("--to", envvar="SLIDR_SIMULATE_TO", help="Where the events go."),
    ] = Output.PARQUET,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            envvar="SLIDR_SIMULATE_OUT",
            help=f"Parquet output directory: {CLICKS}/, {PURCHASES}/, {TRUTH}/ (date=/hour= "
            f"partitions), {CUSTOMERS_FILE}, {MANIFEST_FILE}.",
        ),
    ] = Path("sim-data"),
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            envvar="SLIDR_SIMULATE_OVERWRITE",
            help="Replace an earlier run in --out.",
        ),
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            min=1.0,
            envvar="SLIDR_SIMULATE_RATE",
            help="Kafka only: clicks per second (purchases ride along). Default: full speed.",
        ),
    ] = None,
    truth_out: Annotated[
        Path | None,
        typer.Option(
            "--truth-out",
            envvar="SLIDR_SIMULATE_TRUTH_OUT",
            help=f"Kafka only: also write {TRUTH}/ and {CUSTOMERS_FILE} as Parquet here.",
        ),
    ] = None,
    truth_topic: Annotated[
        bool,
        typer.Option(
            "--truth-topic/--no-truth-topic",
            envvar="SLIDR_SIMULATE_TRUTH_TOPIC",
            help="Kafka only: publish ground truth to the truth topic (for evaluation only).",
        ),
    ] = True,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            envvar="SLIDR_SIMULATE_BOOTSTRAP",
            help="Kafka bootstrap servers. Default: from the settings (SLIDR_KAFKA__HOST/PORT).",
        ),
    ] = None,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            envvar="SLIDR_SIMULATE_PROGRESS",
            help="Progress bar on stderr.",
        ),
    ] = True,
) -> None:
    """Simulate ad clicks of humans and bots, with purchases and ground truth.

    Humans: daily and weekly cycles, sessions, logins, purchases, NATs and carrier gateways.

    Bots: scrapers, low-and-slow, botnets, residential proxies, night bursts, hijacked accounts;
    their share, mix and speed drift from day to day.

    Ground truth never enters the events: it goes to truth/ (Parquet) or to the truth topic.
    """
    try:
        config = SimConfig(
            start=_start(start, days),
            origin=None if origin is None else _time(origin, "--origin"),
            days=days,
            clicks_per_day=clicks_per_day,
            seed=seed,
            bot_share=bot_share,
            bot_mix=parse_mix(bot_mix),
            drift=drift,
        )
    except SimulationConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    if to is Output.PARQUET and (rate is not None or truth_out is not None):
        raise typer.BadParameter("--rate and --truth-out only apply with --to kafka")
    sinks: list[Sink] = []
    parquet: ParquetSink | None = None
    if to is Output.PARQUET:
        parquet = ParquetSink(out, overwrite=overwrite)
        sinks.append(parquet)
    else:
        settings = get_settings()
        if truth_out is not None:
            parquet = ParquetSink(truth_out, datasets=(TRUTH,), overwrite=overwrite)
            sinks.append(parquet)
        sinks.append(
            KafkaSink(
                settings.kafka,
                settings.topics.clicks,
                settings.topics.purchases,
                settings.topics.truth if truth_topic else None,
                rate=rate,
                bootstrap=bootstrap,
            )
        )
    t0 = time.perf_counter()
    summary = run(config, sinks, show_progress=progress)
    seconds = time.perf_counter() - t0
    if parquet is not None:
        parquet.write_manifest(manifest(config, summary))
    _print_summary(config, summary, seconds, to)


def _print_summary(config: SimConfig, summary: Summary, seconds: float, to: Output) -> None:
    console = make_console()
    console.print(
        f"[bold]{summary.clicks:,}[/] clicks ({summary.bot_share:.1%} bots) and "
        f"[bold]{summary.purchases:,}[/] purchases, {config.start:%Y-%m-%d %H:%M} to "
        f"{config.end:%Y-%m-%d %H:%M} UTC, to {to.value} in {seconds:.1f} s "
        f"({summary.clicks / max(seconds, 1e-9):,.0f} clicks/s)"
    )
    slices = Table("slice", "clicks", "bot share", title="per slice")
    for name, (clicks, bots) in summary.per_slice().items():
        slices.add_row(name, f"{clicks:,}", f"{bots / clicks:.1%}" if clicks else "-")
    kinds = Table("kind", "clicks", title="per kind")
    for name, clicks in summary.per_kind().items():
        kinds.add_row(name, f"{clicks:,}")
    console.print(slices, kinds)
