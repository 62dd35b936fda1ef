"""``slidr decisions``: read the decisions topic back and summarise it per slice."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated, cast

import orjson
import typer
from confluent_kafka import Consumer, TopicPartition
from rich.table import Table

from slidr.console import make_console
from slidr.errors import StackError
from slidr.events import IvtCategory
from slidr.kafka_config import client_config
from slidr.settings import get_settings
from slidr.stack.service import port_open

console = make_console()


def _read_all(topic: str, idle_s: float) -> list[dict[str, object]]:
    """Every message of ``topic`` from the beginning, without joining any consumer group."""
    settings = get_settings()
    if not port_open(settings.kafka.host, settings.kafka.port):
        raise StackError(f"no Kafka broker at {settings.kafka.bootstrap}: run `slidr stack up`")
    consumer = Consumer(
        client_config(
            settings.kafka, {"group.id": f"slidr-cli-{uuid.uuid4()}", "enable.auto.commit": False}
        )
    )
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
    """Summarise the decisions topic per slice: clicks, GIVT (invalid by a list, before the
    model), the model's invalidation rate (IVR, on the clicks it judged) and degraded."""
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
    givt: Counter[str] = Counter()
    givt_reasons: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    for r in latest.values():
        s = str(r["slice"])
        totals[s] += 1
        if r.get("ivt_category") == IvtCategory.GIVT:
            givt[s] += 1
            givt_reasons[str(cast(list[str], r["reason_codes"])[0])] += 1
            continue
        invalid[s] += r["verdict"] == "invalid"
        degraded[s] += bool(r["degraded"])
        versions[int(str(r["model_version"]))] += 1

    def ivr(k: int, n: int) -> str:
        return f"{k / n:.1%}" if n else "-"

    table = Table("slice", "clicks", "GIVT", "model IVR", "degraded")
    for s in sorted(totals):
        table.add_row(
            s, f"{totals[s]:,}", f"{givt[s]:,}", ivr(invalid[s], totals[s] - givt[s]),
            f"{degraded[s]:,}",
        )  # fmt: skip
    n, g, k = sum(totals.values()), sum(givt.values()), sum(invalid.values())
    table.add_row("[bold]all[/]", f"{n:,}", f"{g:,}", ivr(k, n - g), f"{sum(degraded.values()):,}")
    console.print(table)
    if givt_reasons:
        console.print(
            f"GIVT (decided by lists before the model): {g / n:.1%} of clicks; "
            + ", ".join(f"{reason}: {c:,}" for reason, c in sorted(givt_reasons.items()))
        )
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
