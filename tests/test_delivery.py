"""A batch is committed only once Kafka acknowledged all its decisions: a real broker refuses
the decisions (the topic's message size limit), the worker exits without committing, and a
restarted worker decides every click exactly once."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from prometheus_client import CollectorRegistry, Histogram

from slidr.settings import Settings
from slidr.topics import admin_client
from streams.metrics import observe_many
from tests.factories import make_click
from tests.worker_harness import WorkerProcess, consume, isolated, produce


def test_observe_many_is_observe_for_each_value() -> None:
    values = np.asarray([0.0, 0.0005, 0.0007, 0.003, 0.003, 2.0, 99.0])
    one, many = (
        Histogram("h", "h", registry=r, buckets=(0.0005, 0.001, 0.01, 1.0))
        for r in (CollectorRegistry(), CollectorRegistry())
    )
    for v in values:
        one.observe(v)
    observe_many(many, values)

    def counts(h: Histogram) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, s.value)
            for metric in h.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        ]

    assert counts(one) == counts(many)


def _max_message_bytes(settings: Settings, value: int) -> None:
    entry = ConfigEntry(
        "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(
        ResourceType.TOPIC, settings.topics.decisions, incremental_configs=[entry]
    )
    admin = admin_client(settings)  # kept alive until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def _committed(settings: Settings) -> list[int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": settings.worker.consumer_group}
    )
    try:
        partitions = [TopicPartition(settings.topics.clicks, p) for p in range(2)]
        return [tp.offset for tp in consumer.committed(partitions, timeout=30)]
    finally:
        consumer.close()


@pytest.mark.integration
def test_undelivered_decisions_leave_the_batch_uncommitted(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(stack_settings).model_copy(update={"state_dir": tmp_path / "state"})
    at = datetime.now(UTC) - timedelta(minutes=5)
    clicks = [make_click(i, prefix="dr", at=at + timedelta(seconds=i)) for i in range(40)]
    produce(settings, clicks)
    _max_message_bytes(settings, 64)  # every decision is larger: the broker refuses them all

    worker = WorkerProcess(settings, tmp_path / "refused.log")
    worker.start()
    assert worker.proc is not None
    try:
        code = worker.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        worker.stop()
        pytest.fail(f"the worker kept running although no decision was delivered:\n{worker.log()}")
    assert code == 70, worker.log()
    assert "not delivered" in worker.log()
    assert all(offset < 0 for offset in _committed(settings)), "a refused batch was committed"

    _max_message_bytes(settings, 1_048_588)  # the broker's default again
    worker = WorkerProcess(settings, tmp_path / "delivered.log")
    worker.start()
    try:
        decided = consume(settings, settings.topics.decisions, len(clicks), settle_s=3)
    finally:
        worker.stop()
    assert sorted(d["click_id"] for d in decided) == sorted(c.click_id for c in clicks)
