"""docker-compose.yml: a real docker-compose accepts it, and it agrees with slidr/settings.py."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from ruamel.yaml import YAML

from slidr.settings import (
    PROJECT_ROOT,
    KafkaSettings,
    RedisSettings,
    ReplaySettings,
    TopicSettings,
    TritonSettings,
)

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
#: The services built from this repository: they read SLIDR_* settings.
SLIDR_SERVICES = ("topics", "worker")


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:  # a failure, not a skip: CI must run this check
        pytest.fail("docker-compose is not installed: `make setup` installs it with apt")
    return subprocess.run(
        [exe, "-f", str(COMPOSE), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services as docker-compose resolves them (anchors merged)."""
    done = docker_compose("config")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = YAML(typ="safe").load(done.stdout)
    return dict(resolved["services"])


def default_environment() -> dict[str, str]:
    """The SLIDR_* variables of every topic name and service port, at the settings' defaults."""
    kafka, redis, triton = KafkaSettings(), RedisSettings(), TritonSettings()
    replay = ReplaySettings()
    topics = {k: v for k, v in TopicSettings().model_dump().items() if isinstance(v, str)}
    return {
        **{f"SLIDR_TOPICS__{field.upper()}": name for field, name in topics.items()},
        "SLIDR_REPLAY__REQUESTS_TOPIC": replay.requests_topic,
        "SLIDR_REPLAY__PROGRESS_TOPIC": replay.progress_topic,
        "SLIDR_KAFKA__PORT": str(kafka.port),
        "SLIDR_REDIS__PORT": str(redis.port),
        "SLIDR_TRITON__HTTP_PORT": str(triton.http_port),
        "SLIDR_TRITON__GRPC_PORT": str(triton.grpc_port),
        "SLIDR_TRITON__METRICS_PORT": str(triton.metrics_port),
        "SLIDR_TRITON__MODEL_NAME": triton.model_name,
    }


def flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in a container command."""
    for i, arg in enumerate(command):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return command[i + 1]
    raise AssertionError(f"{name} not in {command}")


def test_docker_compose_accepts_the_file() -> None:
    done = docker_compose("config", "-q")
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_slidr_containers_get_the_default_topic_names_and_ports(services: dict[str, Any]) -> None:
    want = default_environment()
    for name in SLIDR_SERVICES:
        env = services[name]["environment"]
        assert {key: env.get(key) for key in want} == want, name


def test_kafka_listens_where_the_settings_say(services: dict[str, Any]) -> None:
    k = KafkaSettings()
    env = services["kafka"]["environment"]
    listeners = f"PLAINTEXT://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}"
    assert env["KAFKA_LISTENERS"] == listeners
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{k.bootstrap}"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@{k.host}:{k.controller_port}"
    assert env["KAFKA_NUM_PARTITIONS"] == str(TopicSettings().partitions)
    assert k.bootstrap in " ".join(services["kafka"]["healthcheck"]["test"])


def test_redis_listens_where_the_settings_say(services: dict[str, Any]) -> None:
    r = RedisSettings()
    command = services["redis"]["command"]
    assert (flag(command, "--bind"), flag(command, "--port")) == (r.host, str(r.port))
    assert flag(services["redis"]["healthcheck"]["test"], "-p") == str(r.port)


def test_triton_listens_and_loads_what_the_settings_say(services: dict[str, Any]) -> None:
    t = TritonSettings()
    command = services["triton"]["command"]
    ports = [flag(command, f"--{kind}-port") for kind in ("http", "grpc", "metrics")]
    assert ports == [str(t.http_port), str(t.grpc_port), str(t.metrics_port)]
    assert flag(command, "--load-model") == t.model_name
    probe = f"{t.host}:{t.http_port}/v2/models/{t.model_name}/ready"
    assert probe in " ".join(services["triton"]["healthcheck"]["test"])
