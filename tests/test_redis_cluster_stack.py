"""The local stack's Redis Cluster mode: N nodes formed into one cluster, managed as one service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from slidr.settings import RedisSettings, Settings
from slidr.stack.manager import LocalStack
from slidr.stack.redis_server import RedisService
from slidr.stack.service import port_open
from tests.stack_fixtures import cluster_settings, process_alive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, RedisService]]:
    settings = cluster_settings(tmp_path_factory.mktemp("cluster"))
    service = RedisService(settings)
    service.check_prerequisites()
    service.start()
    yield settings, service
    service.proc.stop()


def test_every_node_runs_and_the_cluster_is_ok(cluster: tuple[Settings, RedisService]) -> None:
    _, service = cluster
    pids = service.proc.pids()
    assert len(pids) == 3 and all(pids.values()), pids
    health = service.health()
    assert health.ok, health
    assert health.detail.startswith("cluster of 3 nodes") and health.detail.endswith("state ok")


def test_every_node_has_maxmemory_and_policy(cluster: tuple[Settings, RedisService]) -> None:
    settings, service = cluster
    for client in service.clients():
        with client:
            config = client.config_get("maxmemory*")
        assert config["maxmemory"] == str(1024**3)  # the default "1gb"
        assert config["maxmemory-policy"] == settings.redis.maxmemory_policy == "noeviction"


def test_a_cluster_client_reads_what_it_wrote(cluster: tuple[Settings, RedisService]) -> None:
    settings, service = cluster
    r = settings.redis
    client = RedisCluster(host=r.host, port=r.port)
    try:
        keys = [f"{r.key_prefix}cluster-test:{uuid.uuid4().hex}:{i}" for i in range(30)]
        for i, key in enumerate(keys):
            client.set(key, str(i), ex=60)
        assert [client.get(key) for key in keys] == [str(i).encode() for i in range(30)]
    finally:
        client.close()
    # 30 random keys land on every node of 3 (each misses one with probability (2/3)^30).
    counts = []
    for node in service.clients():
        with node:
            counts.append(int(node.dbsize()))
    assert all(counts) and sum(counts) >= 30, counts


def test_up_leaves_a_healthy_cluster_alone(cluster: tuple[Settings, RedisService]) -> None:
    settings, service = cluster
    stack = LocalStack(settings)
    stack.services = [stack.redis]  # Redis only: Kafka and Triton are not part of this test
    before = service.proc.pids()
    statuses = stack.up()
    assert statuses[0].healthy and statuses[0].started_in_s is None
    assert RedisService(settings).proc.pids() == before
    assert [s.detail for s in stack.status()] == [service.health().detail]


def test_down_stops_every_node(tmp_path: Path) -> None:
    settings = cluster_settings(tmp_path)
    stack = LocalStack(settings)
    stack.services = [stack.redis]
    (status,) = stack.up()
    assert status.healthy and status.started_in_s is not None
    pids = RedisService(settings).proc.pids()
    assert len(pids) == 3 and all(pids.values())
    assert stack.down() == ["redis"]
    for pid in pids.values():
        assert pid is not None and not process_alive(pid)
    ports = RedisService(settings).ports
    assert not any(port_open("127.0.0.1", port) for port in ports)
    (status,) = stack.status()
    assert not status.healthy and status.pid is None and status.detail == "not running"
    assert stack.down() == []


def test_switching_layouts_stops_the_old_one(tmp_path: Path) -> None:
    """A single node left running is stopped when the same state dir is brought up as a cluster."""
    settings = cluster_settings(tmp_path)
    single = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"cluster_nodes": 0})}
    )
    old = RedisService(single)
    old.start()
    old_pid = old.proc.pid()
    stack = LocalStack(settings)
    stack.services = [stack.redis]
    try:
        (status,) = stack.up()
        assert status.healthy, status
        assert old_pid is not None and not process_alive(old_pid)
    finally:
        stack.down()


def test_session_fixture_is_a_private_cluster(cluster_redis_settings: RedisSettings) -> None:
    r = cluster_redis_settings
    assert r.cluster_nodes == 3 and r.key_prefix == "slidr-test:"
    with redis.Redis(host=r.host, port=r.port) as client:
        info = client.cluster("INFO")
    assert info["cluster_state"] == "ok" and info["cluster_size"] == "3", info
