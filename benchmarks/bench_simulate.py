"""Throughput of ``slidr simulate``: generation alone, to Parquet, and to Kafka.

    .venv/bin/python benchmarks/bench_simulate.py [--days 1] [--clicks-per-day 1000000]
        [--bootstrap HOST:PORT | --no-kafka]

The Kafka run creates its own topics (deleted afterwards) so it never touches the pipeline's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from slidr.console import make_console
from slidr.kafka_config import client_config
from slidr.settings import KafkaSettings, get_settings
from slidr.simulate.config import SimConfig
from slidr.simulate.runner import run
from slidr.simulate.sinks import KafkaSink, ParquetSink, Sink


def _timed(config: SimConfig, sinks: Sequence[Sink]) -> tuple[int, float]:
    t0 = time.perf_counter()
    summary = run(config, sinks)
    return summary.clicks, time.perf_counter() - t0


def _kafka(config: SimConfig, bootstrap: str, truth: bool) -> tuple[int, float]:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    suffix = uuid.uuid4().hex[:8]
    topics = [f"bench.sim.{name}.{suffix}" for name in ("clicks", "purchases", "truth")]
    admin = AdminClient(client_config(KafkaSettings(), bootstrap=bootstrap))
    for future in admin.create_topics([NewTopic(t, 4, 1) for t in topics]).values():
        future.result(30)
    try:
        sink = KafkaSink(
            KafkaSettings(), topics[0], topics[1], topics[2] if truth else None, bootstrap=bootstrap
        )
        return _timed(config, [sink])
    finally:
        for future in admin.delete_topics(topics).values():
            future.result(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--clicks-per-day", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", default=None, help="default: from slidr settings")
    parser.add_argument("--no-kafka", action="store_true")
    args = parser.parse_args()
    config = SimConfig(
        start=datetime(2026, 1, 5, tzinfo=UTC), days=args.days, clicks_per_day=args.clicks_per_day
    )
    rows: list[tuple[str, int, float]] = []
    rows.append(("generate only", *_timed(config, [])))
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("parquet", *_timed(config, [ParquetSink(Path(tmp))])))
    if not args.no_kafka:
        bootstrap = args.bootstrap or get_settings().kafka.bootstrap
        rows.append(("kafka (clicks+purchases)", *_kafka(config, bootstrap, truth=False)))
        rows.append(("kafka (+ truth topic)", *_kafka(config, bootstrap, truth=True)))
    table = Table("sink", "clicks", "seconds", "clicks/s")
    for sink, clicks, seconds in rows:
        table.add_row(sink, f"{clicks:,}", f"{seconds:.2f}", f"{clicks / seconds:,.0f}")
    make_console().print(table)


if __name__ == "__main__":
    main()
