"""``slidr topics``: what is on each slidr topic, for a quick look or on-call."""

from __future__ import annotations

import typer
from confluent_kafka import Consumer, TopicPartition
from rich.table import Table

from slidr.console import make_console
from slidr.errors import StackError
from slidr.kafka_config import client_config
from slidr.settings import get_settings
from slidr.stack.service import kafka_reachable
from slidr.topics import admin_client, topic_specs

console = make_console()


def topics(
    sample: str | None = typer.Option(
        None, "--sample", metavar="TOPIC", help="Also print the newest message of TOPIC."
    ),
) -> None:
    """Show every slidr topic: partitions, messages held, key and purpose."""
    settings = get_settings()
    if not kafka_reachable(settings.kafka):
        raise StackError(
            f"no Kafka broker at {settings.kafka.bootstrap}: start it with `slidr stack up`"
        )
    meta = admin_client(settings).list_topics(timeout=10)
    consumer = Consumer(client_config(settings.kafka, {"group.id": "slidr-cli"}))
    table = Table("topic", "partitions", "messages", "key", "purpose")
    newest: dict[str, tuple[int, int]] = {}
    try:
        for spec in topic_specs(settings):
            if spec.name not in meta.topics:
                table.add_row(spec.name, "-", "missing", spec.key, spec.purpose)
                continue
            total = 0
            for p in meta.topics[spec.name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(spec.name, p), timeout=10)
                total += high - low
                if high > low and (spec.name not in newest or high > newest[spec.name][1]):
                    newest[spec.name] = (p, high)
            parts = str(len(meta.topics[spec.name].partitions))
            table.add_row(spec.name, parts, f"{total:,}", spec.key, spec.purpose)
        console.print(table)
        if sample is not None:
            if sample not in newest:
                raise StackError(f"topic {sample} is empty or not a slidr topic")
            partition, high = newest[sample]
            consumer.assign([TopicPartition(sample, partition, high - 1)])
            msg = consumer.poll(10)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value is None:
                raise StackError(f"could not read the newest message of {sample}")
            console.print_json(value.decode("utf-8", errors="replace"))
    finally:
        consumer.close()
