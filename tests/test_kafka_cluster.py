"""A replicated Kafka cluster you can lose a broker of (issue 17 item 5).

The settings name the brokers, the replication factor and ``min.insync.replicas``; the local
stack starts that many KRaft brokers and creates every topic with that many copies. With
``acks=all`` a write is acknowledged once ``min.insync.replicas`` copies hold it, so a broker
killed (-9) and started again loses nothing that was acknowledged, and consumers keep going.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import ConfigResource

from slidr.kafka_config import client_config
from slidr.settings import KafkaSettings, Settings
from slidr.stack.kafka_broker import KafkaService
from slidr.topics import admin_client, ensure_topics
from tests.stack_fixtures import kafka_cluster, running


def test_brokers_ports_and_bootstrap_come_from_the_settings() -> None:
    one = KafkaSettings()
    assert one.bootstrap == "127.0.0.1:19092" and one.broker_ports == [19092]
    three = KafkaSettings(brokers=3, replication_factor=3, min_insync_replicas=2)
    assert three.broker_ports == [19092, 19094, 19096]
    assert three.controller_ports == [19093, 19095, 19097]
    assert three.bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert client_config(three)["bootstrap.servers"] == three.bootstrap


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replication_factor": 3}, "needs at least as many brokers"),
        ({"brokers": 3, "replication_factor": 2, "min_insync_replicas": 3}, "every write"),
        ({"brokers": 2, "port": 9092, "controller_port": 9094}, "overlap"),
    ],
)
def test_replication_settings_that_cannot_work_are_refused(
    values: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSettings(**values)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    """Three brokers, topics with 3 replicas and min.insync.replicas 2 (Kafka only)."""
    tag = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("kafka-cluster")
    settings = Settings(state_dir=root / "state", kafka=kafka_cluster(heap="256m"))
    topics = settings.topics.model_copy(update={"clicks": f"cluster{tag}.clicks", "partitions": 3})
    with running(KafkaService(settings.model_copy(update={"topics": topics}))) as service:
        ensure_topics(service.settings)
        yield service


@pytest.mark.integration
def test_the_stack_starts_three_brokers_and_replicates_every_topic(
    cluster: KafkaService,
) -> None:
    settings = cluster.settings
    health = cluster.health()
    assert health.ok and health.detail.startswith("3 brokers"), health.detail
    admin = admin_client(settings)
    # A broker learns a new topic from the controller a moment after another one created it:
    # ask until the answering broker knows it (a loaded machine takes seconds).
    deadline = time.monotonic() + 30
    meta = admin.list_topics(timeout=10)
    while settings.topics.clicks not in meta.topics and time.monotonic() < deadline:
        time.sleep(0.5)
        meta = admin.list_topics(timeout=10)
    assert sorted(meta.brokers) == [1, 2, 3]
    topic = meta.topics[settings.topics.clicks]
    assert all(len(p.replicas) == 3 for p in topic.partitions.values())
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topics.clicks)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["min.insync.replicas"].value == "2"
    # the consumer offsets live on three brokers too: a group survives losing one
    props = (cluster.nodes[0].workdir / "server.properties").read_text()
    assert "offsets.topic.replication.factor=3" in props
    assert "transaction.state.log.min.isr=2" in props


@pytest.mark.integration
def test_a_broker_killed_and_restarted_loses_no_acknowledged_message(
    cluster: KafkaService,
) -> None:
    settings = cluster.settings
    topic = settings.topics.clicks
    acked: set[bytes] = set()
    failed: list[KafkaError] = []
    seen: list[tuple[float, bytes]] = []
    stop = threading.Event()

    def delivered(error: KafkaError | None, msg: Message) -> None:
        if error is None:
            acked.add(msg.value() or b"")
        else:
            failed.append(error)

    producer = Producer(
        client_config(settings.kafka, {"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    )
    group = f"cluster-test-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(
        client_config(
            settings.kafka,
            {"group.id": group, "auto.offset.reset": "earliest", "session.timeout.ms": 10_000},
        )
    )
    consumer.subscribe([topic])

    def consume() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                seen.append((time.monotonic(), msg.value() or b""))

    reader = threading.Thread(target=consume)
    reader.start()
    sent = 0

    def produce_for(seconds: float) -> None:
        nonlocal sent
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(20):
                producer.produce(topic, f"m{sent}".encode(), f"k{sent}", on_delivery=delivered)
                sent += 1
            producer.poll(0.05)

    try:
        produce_for(2)
        # the leader of partition 0 crashes: its partitions must move to the other two
        leader = admin_client(settings).list_topics(timeout=10).topics[topic].partitions[0].leader
        killed_at = time.monotonic()
        cluster.kill_node(leader - 1)
        # Past the 6 s broker session timeout: leaders moved (20 s: on a loaded 2-core
        # machine the consumer once read nothing in the outage's first 12 s).
        produce_for(20)
        assert not cluster.health().ok  # `slidr stack status` shows the lost broker
        cluster.start_node(leader - 1)
        produce_for(2)
        assert producer.flush(60) == 0
        deadline = time.monotonic() + 60
        while {v for _, v in seen} < acked and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
        consumer.close()
    assert not failed, failed[:3]
    assert len(acked) == sent
    assert {v for _, v in seen} >= acked  # every acknowledged message is readable
    # and the consumer read during the outage, not only after the broker came back
    during = [t for t, _ in seen if killed_at + 1 < t < killed_at + 20]
    assert during, "the consumer stopped while a broker was down"
    assert cluster.health().ok
    assert _caught_up(cluster, timeout_s=60), "the restarted broker never rejoined the ISR"


def _caught_up(cluster: KafkaService, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while cluster.under_replicated():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_the_single_broker_layout_is_unchanged(tmp_path: Path) -> None:
    """One broker keeps its pid file, log and data where they always were."""
    service = KafkaService(Settings(state_dir=tmp_path))
    assert [m.name for m in service.nodes] == ["kafka"]
    assert service.nodes[0].workdir == tmp_path / "kafka"
