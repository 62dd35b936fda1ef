"""Publish to Kafka a batch at a time, and know when the whole batch is acknowledged.

librdkafka (confluent-kafka) rather than Faust's aiokafka producer: Faust gives every message an
asyncio future, which costs more CPU per decision than building it; here ``produce`` only
queues the message in C, and one ``flush`` per batch waits for all delivery reports. The
producer is idempotent with ``acks=all``, so a retried send is never written twice.

The worker and a replay both publish through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from slidr.errors import SlidrError
from slidr.kafka_config import client_config
from slidr.settings import KafkaSettings

Headers = list[tuple[str, str | bytes | None]]


class DeliveryFailed(SlidrError):
    """Some messages of the batch were not acknowledged by the broker."""


class BatchProducer:
    """Queue messages, then ``flush`` once: it returns only when every one is acknowledged,
    and raises :class:`DeliveryFailed` otherwise."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        linger_ms: float = 1.0,
        client_id: str = "slidr",
        delivery_timeout_ms: int = 30_000,
    ) -> None:
        self.failed: list[KafkaError] = []
        self.producer = Producer(
            client_config(
                kafka,
                {
                    "client.id": client_id,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": linger_ms,
                    "batch.size": 1_000_000,
                    "compression.type": "lz4",
                    # A message not acknowledged by then is reported failed, and the batch with it.
                    "delivery.timeout.ms": delivery_timeout_ms,
                    # The JVM clients' partitioner (Faust's aiokafka uses it too): a click's
                    # decision lands on the same partition number whoever writes it.
                    "partitioner": "murmur2_random",
                },
            )
        )

    def _delivered(self, error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            self.failed.append(error)

    def produce(
        self,
        topic: str,
        keys: Sequence[str | bytes | None],
        values: Sequence[bytes],
        headers: Headers | None = None,
    ) -> None:
        """Queue messages (a full local queue waits for deliveries to drain)."""
        produce, on_delivery = self.producer.produce, self._delivered
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        self.producer.poll(0)

    async def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every queued message is acknowledged; DeliveryFailed if one was not."""
        left = await asyncio.to_thread(self.producer.flush, timeout_s)
        failed, self.failed = self.failed, []
        if failed or left:
            why = (
                failed[0].str() if failed else f"{left} messages unacknowledged after {timeout_s} s"
            )
            raise DeliveryFailed(f"{len(failed) or left} messages not delivered: {why}")

    def close(self) -> None:
        """Drop what is still queued (its batch was not acknowledged, so it is sent again by
        whoever reads it next) and disconnect."""
        self.producer.purge()
        self.producer.close()
