from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.day_zero import ensure_day_zero_version
from slidr.settings import PROJECT_ROOT, RedisSettings, Settings, TritonSettings
from slidr.stack import LocalStack
from slidr.stack.redis_server import RedisService
from tests.stack_fixtures import cluster_settings, private_settings
from tests.worker_harness import WorkerProcess, isolated


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a real Kafka, Redis and Triton started for this test session."""
    settings = private_settings(tmp_path_factory.mktemp("stack"))
    stack = LocalStack(settings)
    statuses = stack.up()
    assert all(s.healthy for s in statuses), statuses
    yield settings
    stack.down()


@pytest.fixture(scope="session")
def cluster_redis_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSettings]:
    """A private 3-node Redis Cluster (Redis only, no Kafka or Triton) for this test session."""
    service = RedisService(cluster_settings(tmp_path_factory.mktemp("redis-cluster")))
    service.check_prerequisites()
    try:
        service.start()
        yield service.settings
    finally:
        service.proc.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_settings: Settings) -> str:
    return stack_settings.kafka.bootstrap


@pytest.fixture
def model_repository(stack_settings: Settings) -> Path:
    return Path(stack_settings.triton.model_repository)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A model repository of its own holding the day-zero version 1 (no Triton needed)."""
    (tmp_path / "slidr").mkdir()
    (tmp_path / "slidr" / "model.py").write_text(
        (PROJECT_ROOT / "triton_repo/slidr/model.py").read_text()
    )
    ensure_day_zero_version(TritonSettings(model_repository=tmp_path))
    return tmp_path


@pytest.fixture
def worker_settings(stack_settings: Settings) -> Settings:
    """The session stack with topics, consumer group and key prefix of this test's own."""
    return isolated(stack_settings)


@pytest.fixture
def worker(worker_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real `slidr worker` process on ``worker_settings``, stopped after the test."""
    process = WorkerProcess(worker_settings, tmp_path / "worker.log")
    process.start()
    yield process
    if process.proc is not None:
        process.stop()
