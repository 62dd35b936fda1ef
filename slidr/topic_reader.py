"""Read whole topics as they stand: every message from the beginning to the end offsets seen
when reading starts, without joining a consumer group (the CLI's summaries, billing)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence

from confluent_kafka import Consumer, TopicPartition

from slidr.errors import StackError
from slidr.kafka_config import client_config
from slidr.settings import Settings
from slidr.stack.service import kafka_reachable


def read_to_end(
    settings: Settings, topics: Sequence[str], *, idle_s: float = 3.0
) -> Iterator[bytes]:
    """Each message value of ``topics`` (none null), up to their end offsets at the start.

    Stops early after ``idle_s`` without a message (an end offset may point past records that
    are not readable, e.g. transaction markers)."""
    if not kafka_reachable(settings.kafka):
        raise StackError(f"no Kafka broker at {settings.kafka.bootstrap}: run `slidr stack up`")
    consumer = Consumer(
        client_config(
            settings.kafka,
            {"group.id": f"slidr-reader-{uuid.uuid4()}", "enable.auto.commit": False},
        )
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        starts = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[(topic, p)] = high
                    starts.append(TopicPartition(topic, p, low))
        if not starts:
            return
        consumer.assign(starts)
        last = time.monotonic()
        while ends and time.monotonic() - last < idle_s:
            for msg in consumer.consume(1000, timeout=0.5):
                value, partition, offset = msg.value(), msg.partition(), msg.offset()
                if msg.error() is not None or partition is None:
                    continue
                last = time.monotonic()
                place = (str(msg.topic()), partition)
                if offset is not None and place in ends and offset < ends[place] and value:
                    yield value
                if (offset or 0) + 1 >= ends.get(place, 0):
                    ends.pop(place, None)
    finally:
        consumer.close()
