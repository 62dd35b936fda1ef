"""The local stack really serves: Kafka round trips, Redis answers, Triton scores."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from confluent_kafka import Consumer, Producer

from models.heuristic import velocity_score
from slidr.errors import StackError
from slidr.features import INDEX, N_FEATURES
from slidr.registry import Registry, TritonVersions
from slidr.settings import Settings, TopicSettings
from slidr.stack import LocalStack
from slidr.stack.service import port_open
from slidr.topics import admin_client, topic_specs
from tests.stack_fixtures import private_model, private_settings, process_alive

pytestmark = pytest.mark.integration


def test_status_reports_every_service_healthy(stack_settings: Settings) -> None:
    statuses = LocalStack(stack_settings).status()
    assert [s.name for s in statuses] == ["redis", "kafka", "triton"]
    assert all(s.healthy and s.pid for s in statuses), statuses


def test_up_is_idempotent(stack_settings: Settings) -> None:
    stack = LocalStack(stack_settings)
    before = {s.name: s.pid for s in stack.status()}
    after = stack.up()
    assert {s.name: s.pid for s in after} == before
    assert all(s.started_in_s is None for s in after)


def test_up_on_a_running_stack_creates_the_topics_the_settings_now_name(
    stack_settings: Settings,
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(**{f: f"up{tag}.{f}" for f in ("clicks", "purchases", "truth")})
    renamed = stack_settings.model_copy(update={"topics": topics})
    before = {s.name: s.pid for s in LocalStack(stack_settings).status()}
    after = LocalStack(renamed).up()
    assert {s.name: s.pid for s in after} == before  # nothing restarted
    existing = admin_client(renamed).list_topics(timeout=10).topics
    assert {topics.clicks, topics.purchases, topics.truth} <= set(existing)


def test_up_returns_once_triton_serves_the_registry_versions(stack_settings: Settings) -> None:
    """Triton reports itself not ready while it unloads what the registry does not keep."""
    settings = private_model(stack_settings)
    t = settings.triton
    assert Registry(settings, TritonVersions(t)).kept() == {1}
    model = Path(t.model_repository) / t.model_name
    shutil.copytree(model / "1", model / "2")  # on disk, not kept: as after a (re)start
    client = triton_http.InferenceServerClient(f"{t.host}:{t.http_port}")
    try:
        client.load_model(t.model_name)  # the config's policy: every version on disk
        assert client.is_model_ready(t.model_name, "2")
    finally:
        client.close()
    LocalStack(settings).up()
    for _ in range(15):  # what `slidr stack status` right after `up` sees, for 1.5 s
        triton_status = LocalStack(settings).status()[2]
        assert triton_status.healthy, triton_status.detail
        assert triton_status.detail == f"model {t.model_name} versions 1"
        time.sleep(0.1)


def test_waiting_for_versions_triton_never_serves_fails_in_bounded_time(
    stack_settings: Settings,
) -> None:
    started = time.monotonic()
    with pytest.raises(StackError, match=r"versions \[1, 99\]\) not ready after 1 s"):
        LocalStack(stack_settings).triton.wait_serving({1, 99}, timeout_s=1)
    assert time.monotonic() - started < 5


def test_topics_exist_with_partitions_and_retention(stack_settings: Settings) -> None:
    admin = admin_client(stack_settings)
    meta = admin.list_topics(timeout=10)
    for spec in topic_specs(stack_settings):
        assert spec.name in meta.topics
        assert len(meta.topics[spec.name].partitions) == spec.partitions
    from confluent_kafka.admin import ConfigResource

    clicks = ConfigResource(ConfigResource.Type.TOPIC, stack_settings.topics.clicks)
    config = admin.describe_configs([clicks])[clicks].result(timeout=10)
    hours = stack_settings.topics.clicks_retention_hours
    assert config["retention.ms"].value == str(hours * 3_600_000)


def test_produce_and_consume_through_the_broker(stack_settings: Settings) -> None:
    topic = stack_settings.topics.clicks
    group = f"test-{uuid.uuid4().hex}"
    payloads = {f"k{i}-{uuid.uuid4().hex}".encode(): f"v{i}".encode() for i in range(20)}
    producer = Producer({"bootstrap.servers": stack_settings.kafka.bootstrap})
    for k, v in payloads.items():
        producer.produce(topic, v, k)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": stack_settings.kafka.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: dict[bytes, bytes] = {}
    try:
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            key, value = msg.key(), msg.value()
            if key is not None and key in payloads and value is not None:
                seen[key] = value
            if len(seen) == len(payloads):
                break
    finally:
        consumer.close()
    assert seen == payloads


def test_redis_reads_back_what_it_wrote(stack_settings: Settings) -> None:
    r = stack_settings.redis
    with redis.Redis(host=r.host, port=r.port) as client:
        key = f"{r.key_prefix}stack-test"
        client.set(key, b"42", ex=60)
        assert client.get(key) == b"42"
        client.pfadd(f"{key}:hll", "a", "b", "a")
        assert client.pfcount(f"{key}:hll") == 2


def test_triton_serves_the_day_zero_heuristic(stack_settings: Settings) -> None:
    t = stack_settings.triton
    client = triton.InferenceServerClient(t.grpc_url)
    assert client.is_model_ready(t.model_name, "1")
    rng = np.random.default_rng(0)
    x = rng.poisson(5.0, size=(64, N_FEATURES)).astype(np.float32)
    x[0, INDEX["session_clicks_1m"]] = 50.0  # far past the limit: surely robotic
    request = triton.InferInput("features", list(x.shape), "FP32")
    request.set_data_from_numpy(x)
    scores = client.infer(t.model_name, [request], model_version="1").as_numpy("score")
    assert scores is not None
    np.testing.assert_allclose(scores.ravel(), velocity_score(x), atol=1e-6)
    assert scores[0, 0] == pytest.approx(1.0)
    client.close()


def test_down_stops_exactly_what_up_started(tmp_path: Path) -> None:
    settings = private_settings(tmp_path)
    stack = LocalStack(settings)
    started = stack.up()
    pids = [s.pid for s in started]
    assert all(pids) and all(s.healthy for s in started)
    assert sorted(stack.down()) == ["kafka", "redis", "triton"]
    for pid in pids:
        assert pid is not None
        assert not process_alive(pid), f"pid {pid} still running after down"
    assert not port_open("127.0.0.1", settings.kafka.port)
    assert not port_open("127.0.0.1", settings.redis.port)
    assert not port_open("127.0.0.1", settings.triton.grpc_port)
    assert stack.down() == []  # nothing left to stop
