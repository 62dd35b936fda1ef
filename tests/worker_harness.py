"""Run `slidr worker` as a real subprocess against a test's own topics, group and key prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from slidr.events import Click
from slidr.kafka_config import client_config
from slidr.settings import RedisSettings, Settings, TopicSettings, WorkerSettings
from slidr.topics import ensure_topics
from tests.stack_fixtures import free_ports, settings_env

SLIDR = str(Path(sys.executable).parent / "slidr")


def private_topics(prefix: str, partitions: int, clicks: str | None = None) -> TopicSettings:
    """Topics of their own, each named ``{prefix}.<what>`` (the clicks topic ``clicks`` if
    given: a shared backlog)."""
    return TopicSettings(
        clicks=clicks or f"{prefix}.clicks",
        purchases=f"{prefix}.purchases",
        decisions=f"{prefix}.decisions",
        replayed_decisions=f"{prefix}.replayed",
        dead_letters=f"{prefix}.dlq",
        truth=f"{prefix}.truth",
        partitions=partitions,
    )


def isolated(settings: Settings, **worker: object) -> Settings:
    """Same services, but fresh topics, consumer group and Redis key prefix."""
    tag = uuid.uuid4().hex[:8]
    topics = private_topics(f"t{tag}", partitions=2)
    redis = RedisSettings(**{**settings.redis.model_dump(), "key_prefix": f"t{tag}:"})
    worker_settings = WorkerSettings(
        consumer_group=f"worker-{tag}",
        metrics_port=free_ports(1)[0],
        **{"redis_memory_every_s": 0.5, **worker},
    )
    isolated = settings.model_copy(
        update={"topics": topics, "redis": redis, "worker": worker_settings}
    )
    ensure_topics(isolated)
    return isolated


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **settings_env(self.settings)}
        command = [SLIDR, "worker", *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def decide(self, clicks: Sequence[Click], timeout_s: float = 90.0) -> list[dict[str, Any]]:
        """Start, send ``clicks``, read their decisions (or those that came by the timeout),
        stop."""
        self.start()
        try:
            produce(self.settings, clicks)
            topic = self.settings.topics.decisions
            return consume(self.settings, topic, len(clicks), timeout_s=timeout_s)
        finally:
            self.stop()


def produce(settings: Settings, clicks: Iterable[Click], raw: Iterable[bytes] = ()) -> int:
    producer = Producer(client_config(settings.kafka, {"linger.ms": 5}))
    n = 0
    for click in clicks:
        producer.produce(settings.topics.clicks, click.to_json(), click.click_id.encode())
        n += 1
    for payload in raw:
        producer.produce(settings.topics.clicks, payload, b"bad")
        n += 1
    assert producer.flush(30) == 0
    return n


def produce_messages(
    settings: Settings, messages: Iterable[tuple[bytes | None, bytes | None]], partition: int = 0
) -> None:
    """(key, value) pairs to one partition of the clicks topic, in this order (a None value is
    a tombstone). Each is flushed alone, so a large one never shares a request with others."""
    producer = Producer(client_config(settings.kafka))
    for key, value in messages:
        producer.produce(settings.topics.clicks, value, key, partition=partition)
        assert producer.flush(30) == 0


_READER = {"auto.offset.reset": "earliest", "enable.auto.commit": False}


def _reader(settings: Settings, topic: str) -> Consumer:
    """A consumer of ``topic`` from its start, in a group of its own, committing nothing."""
    consumer = Consumer(
        client_config(settings.kafka, {**_READER, "group.id": f"reader-{uuid.uuid4().hex}"})
    )
    consumer.subscribe([topic])
    return consumer


def read_messages(
    settings: Settings, topic: str, want: int, timeout_s: float = 60.0
) -> list[tuple[int, bytes]]:
    """The first ``want`` messages of ``topic`` with a value, as (Kafka timestamp ms, value),
    fewer if the timeout passed."""
    consumer = _reader(settings, topic)
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < want and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                value = msg.value()
                if msg.error() is None and value is not None:
                    out.append((msg.timestamp()[1], value))
    finally:
        consumer.close()
    return out


def read_raw(settings: Settings, topic: str, want: int, timeout_s: float = 60.0) -> list[bytes]:
    """The first ``want`` values of ``topic`` as bytes (fewer if the timeout passed)."""
    return [value for _, value in read_messages(settings, topic, want, timeout_s)]


def watermarks(settings: Settings, topic: str | None = None) -> dict[int, tuple[int, int]]:
    """(low, high) of every non-empty partition of ``topic`` (the clicks topic by default)."""
    topic = topic or settings.topics.clicks
    consumer = Consumer(client_config(settings.kafka, {"group.id": f"probe-{uuid.uuid4()}"}))
    try:
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
            for p in range(settings.topics.partitions)
        }
    finally:
        consumer.close()
    return {p: (low, high) for p, (low, high) in marks.items() if high > low}


def consume(
    settings: Settings, topic: str, want: int, timeout_s: float = 60.0, settle_s: float = 0.0
) -> list[dict[str, Any]]:
    """Read ``topic`` from the start until ``want`` distinct click_ids (or messages without
    one) arrived or the timeout passed, then keep reading for ``settle_s`` so that extra
    messages (duplicates) would be seen too."""
    consumer = _reader(settings, topic)
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    settled_at: float | None = None
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                value = msg.value()
                if msg.error() is None and value is not None:
                    out.append(orjson.loads(value))
            if len({m.get("click_id", i) for i, m in enumerate(out)}) >= want:
                settled_at = settled_at or time.monotonic() + settle_s
                if time.monotonic() >= settled_at:
                    break
    finally:
        consumer.close()
    return out


class DecisionReader:
    """One consumer kept open across waves of traffic, reading decisions as they arrive."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            client_config(settings.kafka, {**_READER, "group.id": f"reader-{uuid.uuid4().hex}"})
        )
        self.consumer.subscribe([settings.topics.decisions])
        self.seen: dict[str, dict[str, Any]] = {}

    def wait_for(self, click_ids: Iterable[str], timeout_s: float = 60) -> dict[str, Any]:
        wanted = set(click_ids)
        deadline = time.monotonic() + timeout_s
        while not wanted <= self.seen.keys() and time.monotonic() < deadline:
            for msg in self.consumer.consume(500, timeout=0.2):
                value = msg.value()
                if msg.error() is None and value is not None:
                    decision = orjson.loads(value)
                    self.seen[decision["click_id"]] = decision
        return {k: self.seen[k] for k in wanted if k in self.seen}

    def close(self) -> None:
        self.consumer.close()
