"""Benchmark of replay on the real stack: `python benchmarks/bench_replay.py`.

Starts a private local stack (free ports, temporary state), writes N clicks to a clicks topic
and, for each, the decision a live worker would have logged (with its feature vector, source
partition and offset) to the decisions topic, then replays the whole range in-process through
the day-zero model on Triton and prints one table: clicks/s of each mode, end to end (reading
both topics, scoring, building and publishing decisions, checkpoints), and the CPU time the
replay process itself used. Client, broker, Redis and Triton share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay.plan import plan_replay
from replay.request import parse_request
from replay.runner import ReplayRunner
from slidr.events import DeviceType
from slidr.features import FEATURE_HASH, N_FEATURES
from slidr.kafka_config import client_config
from slidr.settings import Settings
from slidr.slices import slice_of
from slidr.stack import LocalStack
from tests.factories import make_click
from tests.stack_fixtures import private_settings
from tests.worker_harness import isolated


def write_history(settings: Settings, n: int) -> dict[int, tuple[int, int]]:
    """n clicks and their logged decisions; returns each partition's offset range."""
    rng = np.random.default_rng(7)
    start = datetime.now(UTC) - timedelta(hours=2)
    devices = list(DeviceType)
    producer = Producer(
        client_config(
            settings.kafka, {"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4"}
        )
    )
    where: dict[str, tuple[int, int]] = {}

    def delivered(error: KafkaError | None, msg: Message) -> None:
        key, partition, offset = msg.key(), msg.partition(), msg.offset()
        if error is None and key is not None and partition is not None and offset is not None:
            where[key.decode()] = (partition, offset)

    clicks = []
    for i in range(n):
        click = make_click(
            i,
            prefix="bench",
            at=start + timedelta(milliseconds=36 * i),
            session=f"s-{rng.integers(5000)}",
            customer=f"u-{rng.integers(800)}" if rng.random() < 0.3 else None,
            ip=f"10.0.{rng.integers(4)}.{rng.integers(250)}",
            device=devices[i % 3],
        )
        clicks.append(click)
        _produce(producer, settings.topics.clicks, click.to_json(), click.click_id, delivered)
    producer.flush(120)
    features = rng.poisson(3, size=(n, N_FEATURES)).astype(np.float32).tolist()
    for click, row in zip(clicks, features, strict=True):
        partition, offset = where[click.click_id]
        decision = {
            "schema_version": 1,
            "click_id": click.click_id,
            "event_time": click.event_time.isoformat().replace("+00:00", "Z"),
            "verdict": "valid",
            "score": 0.1,
            "threshold": 0.5,
            "slice": slice_of(click.device_type, click.logged_in),
            "model_name": "slidr",
            "model_version": 1,
            "reason_codes": [],
            "feature_hash": FEATURE_HASH,
            "features": row,
            "degraded": False,
            "processing_ms": 1.0,
            "decided_at": click.event_time.isoformat().replace("+00:00", "Z"),
            "replay_run_id": None,
            "source_partition": partition,
            "source_offset": offset,
        }
        _produce(producer, settings.topics.decisions, orjson.dumps(decision), click.click_id)
    producer.flush(120)
    ranges: dict[int, tuple[int, int]] = {}
    for partition, offset in where.values():
        first, last = ranges.get(partition, (offset, offset))
        ranges[partition] = (min(first, offset), max(last, offset))
    return ranges


Delivered = Callable[[KafkaError | None, Message], None]


def _produce(
    producer: Producer, topic: str, value: bytes, key: str, callback: Delivered | None = None
) -> None:
    while True:
        try:
            producer.produce(topic, value, key.encode(), on_delivery=callback)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


def replay(
    settings: Settings, ranges: dict[int, tuple[int, int]], **options: object
) -> dict[str, str]:
    request = parse_request(
        {
            "from_offsets": {p: r[0] for p, r in ranges.items()},
            "to_offsets": {p: r[1] for p, r in ranges.items()},
            "model_version": 1,
            "force": True,
            **options,
        }
    )
    started, cpu = time.perf_counter(), time.process_time()
    plan = plan_replay(settings, request)
    summary = asyncio.run(ReplayRunner(settings, plan).run())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "mode": f"{summary.features}{' (dry run)' if summary.dry_run else ''}",
        "clicks": f"{summary.decided:,}",
        "published": f"{summary.published:,}",
        "context clicks": f"{summary.context_clicks:,}",
        "seconds": f"{wall:.1f}",
        "clicks/s": f"{summary.decided / wall:,.0f}",
        # The replay process's own CPU (all its threads): what one free core would give.
        "replay CPU s": f"{cpu:.1f}",
        "clicks per CPU s": f"{summary.decided / cpu:,.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=200_000, help="clicks in the range")
    parser.add_argument(
        "--recompute-clicks",
        type=int,
        default=20_000,
        help="clicks for the recompute mode (0 skips it)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = private_settings(Path(tmp))
        stack = LocalStack(settings)
        stack.up()
        try:
            case = isolated(settings)
            t0 = time.perf_counter()
            ranges = write_history(case, args.clicks)
            print(f"wrote {args.clicks:,} clicks and decisions in {time.perf_counter() - t0:.1f} s")
            rows = [replay(case, ranges), replay(case, ranges, dry_run=True)]
            if args.recompute_clicks:
                small = isolated(settings)
                rows.append(
                    replay(small, write_history(small, args.recompute_clicks), features="recompute")
                )
        finally:
            stack.down()
    table = Table(*rows[0].keys(), title="slidr replay, one process, day-zero model on Triton")
    for row in rows:
        table.add_row(*row.values())
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
