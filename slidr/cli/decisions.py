"""``slidr decisions``: read the decisions topic back and summarise it per slice."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated

import orjson
import typer
from confluent_kafka import Consumer, TopicPartition
from rich.table import Table

from slidr.console import make_console
from slidr.errors import StackError
from slidr.settings import get_settings
from slidr.stack.service import port_open

console = make_console()


def _read_all(topic: str, idle_s: float) -> list[dict[str, object]]:
    """Every message of ``topic`` from the beginning, without joining any consumer group."""
    settings = get_settings()
    if not port_open(settings.kafka.host, settings.kafka.port):
        raise StackError(f"no Kafka broker at {settings.kafka.bootstrap}: run `slidr stack up`")
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"slidr-cli-{uuid.uuid4()}",
         "enable.auto.commit": False}
    )  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends: dict[int, int] = {}
        starts = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        out: list[dict[str, object]] = []
        last = time.monotonic()
        while ends and time.monotonic() - last < idle_s:
            for msg in consumer.consume(1000, timeout=0.5):
                value, partition, offset = msg.value(), msg.partition(), msg.offset()
                if msg.error() is not None or value is None or partition is None:
                    continue
                last = time.monotonic()
                out.append(orjson.loads(value))
                if (offset or 0) + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
        return out
    finally:
        consumer.close()


def _truth(path: Path | None) -> dict[str, bool]:
    if path is None:
        return {}
    import pyarrow.dataset as ds

    table = ds.dataset(path, partitioning="hive").to_table(columns=["click_id", "is_bot"])
    return dict(zip(table["click_id"].to_pylist(), table["is_bot"].to_pylist(), strict=True))


def decisions(
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Simulator ground truth (the truth/ Parquet dir of --truth-out) to add bot "
            "recall, precision and the human false-positive rate.",
            envvar="SLIDR_DECISIONS_TRUTH",
        ),
    ] = None,
    idle_s: Annotated[
        float, typer.Option(help="Stop reading after this long without a message, seconds.")
    ] = 3.0,
) -> None:
    """Summarise the decisions topic: clicks, invalidation rate (IVR) and degraded per slice."""
    settings = get_settings()
    rows = _read_all(settings.topics.decisions, idle_s)
    if not rows:
        console.print(f"no decisions on {settings.topics.decisions} yet")
        raise typer.Exit(1)
    latest = {str(r["click_id"]): r for r in rows}  # billing's view: last decision per click
    labels = _truth(truth)
    totals: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    degraded: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    for r in latest.values():
        s = str(r["slice"])
        totals[s] += 1
        invalid[s] += r["verdict"] == "invalid"
        degraded[s] += bool(r["degraded"])
        versions[int(str(r["model_version"]))] += 1
    table = Table("slice", "clicks", "IVR", "degraded")
    for s in sorted(totals):
        table.add_row(s, f"{totals[s]:,}", f"{invalid[s] / totals[s]:.1%}", f"{degraded[s]:,}")
    n, k = sum(totals.values()), sum(invalid.values())
    table.add_row("[bold]all[/]", f"{n:,}", f"{k / n:.1%}", f"{sum(degraded.values()):,}")
    console.print(table)
    console.print(
        f"{len(rows):,} messages, {len(latest):,} distinct clicks; model versions: "
        + ", ".join(f"v{v}: {c:,}" for v, c in sorted(versions.items()))
    )
    if labels:
        known = [(labels[c], r["verdict"] == "invalid") for c, r in latest.items() if c in labels]
        bots = sum(b for b, _ in known)
        humans = len(known) - bots
        caught = sum(b and f for b, f in known)
        false_pos = sum((not b) and f for b, f in known)
        console.print(
            f"ground truth on {len(known):,} clicks: bot recall {caught / max(bots, 1):.1%}, "
            f"precision {caught / max(caught + false_pos, 1):.1%}, "
            f"human false-positive rate {false_pos / max(humans, 1):.2%}"
        )
