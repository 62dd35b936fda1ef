"""The Kafka topics slidr owns: names, keys, partitions and retention, created idempotently."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from slidr.errors import StackError
from slidr.settings import Settings

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    partitions: int
    retention_hours: int
    purpose: str


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    p = t.partitions
    return [
        TopicSpec(t.clicks, "click_id", p, t.clicks_retention_hours, "click events from loggers"),
        TopicSpec(t.purchases, "click_id or purchase_id", p, t.clicks_retention_hours,
                  "purchases, the weak human label"),
        TopicSpec(t.decisions, "click_id", p, t.decisions_retention_hours,
                  "one decision per click, for billing"),
        TopicSpec(t.replayed_decisions, "click_id", p, t.decisions_retention_hours,
                  "delayed decisions from replays"),
        TopicSpec(t.dead_letters, "original key", 1, t.dead_letters_retention_hours,
                  "refused events with the reason"),
        TopicSpec(t.truth, "click_id", p, t.clicks_retention_hours,
                  "simulator ground truth, evaluation only"),
        TopicSpec(settings.replay.requests_topic, "request id", 1, t.decisions_retention_hours,
                  "replay requests for `slidr replay-agent`"),
        TopicSpec(settings.replay.progress_topic, "request id", 1, t.decisions_retention_hours,
                  "replay progress and results"),
    ]  # fmt: skip


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka.bootstrap})


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics; return the names created (existing ones are left as is)."""
    admin = admin_client(settings)
    new = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=1,
            config={"retention.ms": str(spec.retention_hours * _HOUR_MS)},
        )
        for spec in topic_specs(settings)
    ]
    created = []
    for name, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"could not create topic {name}: {exc}") from exc
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created
