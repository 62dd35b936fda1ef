"""The Kafka topics slidr owns: names, keys, partitions and retention, created idempotently."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from slidr.errors import StackError
from slidr.kafka_config import client_config, with_error_recorder
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
    return AdminClient(client_config(settings.kafka))


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics; return the names created (existing ones are left as is).

    Each gets ``kafka.replication_factor`` copies and ``kafka.min_insync_replicas``: with
    producers on ``acks=all``, a write is acknowledged once that many copies hold it.
    """
    admin = admin_client(settings)
    k = settings.kafka
    new = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=k.replication_factor,
            config={
                "retention.ms": str(spec.retention_hours * _HOUR_MS),
                "min.insync.replicas": str(k.min_insync_replicas),
            },
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
        _wait_listed(admin, created, timeout_s)
        log.info("created topics: %s", ", ".join(created))
    return created


def _wait_listed(admin: AdminClient, names: Collection[str], timeout_s: float) -> None:
    """Wait until the broker's metadata lists ``names``: a topic is created before it is listed,
    and a client that looks in between (a worker's start-up check) would find it missing."""
    deadline = time.monotonic() + timeout_s
    while missing := set(names) - set(admin.list_topics(timeout=timeout_s).topics):
        if time.monotonic() > deadline:
            raise StackError(f"Kafka created topics {sorted(missing)} but does not list them")
        time.sleep(0.1)


def missing_topics(
    settings: Settings, names: Collection[str], timeout_s: float = 10.0
) -> list[str]:
    """The topics among ``names`` that the broker does not have."""
    config, recorder = with_error_recorder(settings.kafka)
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    while True:
        # Short tries: a refused login only shows in error_cb (served by poll), and should end
        # the wait at once instead of after the whole timeout.
        try:
            meta = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            admin.poll(0)
            if refused := recorder.explain(settings.kafka):
                raise StackError(refused) from None
            if time.monotonic() >= deadline:
                raise StackError(
                    f"Kafka at {settings.kafka.bootstrap} did not list its topics ({exc}): "
                    "is it up? `slidr stack status`"
                ) from exc
    return sorted(name for name in names if name not in meta.topics)


def require_topics(settings: Settings, *fields: str) -> None:
    """Raise StackError naming the fix unless the topics of these ``TopicSettings`` fields exist.

    Faust would log "Ignoring missing topic" and wait for it forever instead.
    """
    by_name = {str(getattr(settings.topics, field)): field for field in fields}
    missing = missing_topics(settings, by_name)
    if not missing:
        return
    variables = ", ".join(f"SLIDR_TOPICS__{by_name[name].upper()}" for name in missing)
    what = f"topic {missing[0]} does" if len(missing) == 1 else f"topics {', '.join(missing)} do"
    raise StackError(
        f"{what} not exist: run `slidr stack up` (it creates the topics the settings name) "
        f"or set {variables} to the topic{'s' if len(missing) > 1 else ''} to use"
    )
