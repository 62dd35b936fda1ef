"""docker-compose.yml: a real docker-compose accepts it, and it agrees with slidr/settings.py."""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from google.protobuf import text_format  # type: ignore[import-untyped]
from pydantic import SecretStr
from ruamel.yaml import YAML
from tritonclient.grpc import model_config_pb2

from slidr.model_record import ONNX_FILE
from slidr.redis_config import acl_commands, sync_client
from slidr.settings import (
    PROJECT_ROOT,
    KafkaSettings,
    RedisSettings,
    ReplaySettings,
    TopicSettings,
    TritonSettings,
)
from slidr.stack.triton_server import TritonService, pytriton_root, restricted_api_flags
from streams.feature_store import RedisFeatureStore
from tests.stack_fixtures import free_ports, private_settings
from tests.test_feature_store import T0, make_click

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
#: The compose file refuses to start Triton without a repository key; this one is the tests'.
REPOSITORY_KEY = "compose-test-repository-key-0123456789"
#: The services built from this repository: they read SLIDR_* settings.
SLIDR_SERVICES = ("topics", "worker")


#: ... nor Redis without the slidr user's password: this one is the tests' (a quote, a space, a
#: dollar and a backslash: the container's script must pass it through untouched).
REDIS_PASSWORD = 'compose "test" $HOME \\ redis-pw'


def docker_compose(
    *args: str, key: str | None = REPOSITORY_KEY, redis_password: str | None = REDIS_PASSWORD
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:  # a failure, not a skip: CI must run this check
        pytest.fail("docker-compose is not installed: `make setup` installs it with apt")
    secrets = ("SLIDR_TRITON__REPOSITORY_KEY", "SLIDR_REDIS__PASSWORD", "SLIDR_REDIS__USERNAME")
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    if key is not None:
        env["SLIDR_TRITON__REPOSITORY_KEY"] = key
    if redis_password is not None:
        env["SLIDR_REDIS__PASSWORD"] = redis_password
    return subprocess.run(
        [exe, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=PROJECT_ROOT,  # not a developer's .env elsewhere
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


def compose_kafka(services: dict[str, Any]) -> KafkaSettings:
    """The Kafka settings the slidr containers are given (a 3-broker cluster)."""
    env = services["worker"]["environment"]
    values = {
        field: int(env[f"SLIDR_KAFKA__{field.upper()}"])
        for field in ("port", "brokers", "replication_factor", "min_insync_replicas")
    }
    return KafkaSettings(**values)


def test_kafka_is_three_brokers_where_the_settings_say(services: dict[str, Any]) -> None:
    """Broker i of the compose file listens where the settings put broker i of a cluster."""
    k = compose_kafka(services)
    assert (k.brokers, k.replication_factor, k.min_insync_replicas) == (3, 3, 2)
    voters = ",".join(f"{i + 1}@{k.host}:{port}" for i, port in enumerate(k.controller_ports))
    names = ["kafka", *(f"kafka-{i}" for i in range(2, k.brokers + 1))]
    assert {name for name in services if name.startswith("kafka")} == set(names)
    cluster_ids = set()
    for i, name in enumerate(names):
        env = services[name]["environment"]
        port, controller = k.broker_ports[i], k.controller_ports[i]
        assert env["KAFKA_NODE_ID"] == str(i + 1)
        assert env["KAFKA_LISTENERS"] == (
            f"PLAINTEXT://{k.host}:{port},CONTROLLER://{k.host}:{controller}"
        )
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{k.host}:{port}"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert env["KAFKA_NUM_PARTITIONS"] == str(TopicSettings().partitions)
        for key in ("DEFAULT_REPLICATION_FACTOR", "OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):  # fmt: skip
            assert env[f"KAFKA_{key}"] == str(k.replication_factor), (name, key)
        for key in ("MIN_INSYNC_REPLICAS", "TRANSACTION_STATE_LOG_MIN_ISR"):
            assert env[f"KAFKA_{key}"] == str(k.min_insync_replicas), (name, key)
        assert f"{k.host}:{port}" in " ".join(services[name]["healthcheck"]["test"])
        cluster_ids.add(env["CLUSTER_ID"])
    assert len(cluster_ids) == 1  # one cluster, not three
    assert set(names) <= set(services["topics"]["depends_on"])


def redis_script(services: dict[str, Any]) -> str:
    """The shell script the redis container runs, as its shell reads it."""
    command = services["redis"]["command"]
    assert command[:2] == ["sh", "-ec"], command
    return str(command[2]).replace("$$", "$")  # docker-compose's escape of a literal $


def redis_server_argv(services: dict[str, Any]) -> list[str]:
    (line,) = [x for x in redis_script(services).splitlines() if x.startswith("exec redis-server")]
    return shlex.split(line)[1:]


def test_redis_listens_where_the_settings_say(services: dict[str, Any]) -> None:
    r = RedisSettings()
    command = redis_server_argv(services)
    assert (flag(command, "--bind"), flag(command, "--port")) == (r.host, str(r.port))
    assert f"-p {r.port} ping" in services["redis"]["healthcheck"]["test"][1]


def test_redis_admits_only_the_slidr_user_with_the_narrow_acl(services: dict[str, Any]) -> None:
    """The same user, key prefixes and commands as the local stack's, the default user off;
    the password from the environment, given to the worker only."""
    script = redis_script(services)
    keys = f"~{RedisSettings().key_prefix}* ~{ReplaySettings().redis_prefix}*"
    assert f'"{keys} {acl_commands()}"' in script
    assert "user default off" in script and "--aclfile" in script
    assert REDIS_PASSWORD not in script and "requirepass" not in script
    env = services["redis"]["environment"]
    assert (env["SLIDR_REDIS__USERNAME"], env["SLIDR_REDIS__PASSWORD"]) == (
        "slidr",
        REDIS_PASSWORD.replace("$", "$$"),
    )
    holders = {
        name
        for name, service in services.items()
        if "SLIDR_REDIS__PASSWORD" in service.get("environment", {})
    }
    assert holders == {"redis", "worker"}
    worker = services["worker"]["environment"]
    assert worker["SLIDR_REDIS__USERNAME"] == env["SLIDR_REDIS__USERNAME"]
    assert worker["SLIDR_REDIS__PASSWORD"] == env["SLIDR_REDIS__PASSWORD"]


def test_compose_refuses_to_start_without_a_redis_password() -> None:
    done = docker_compose("config", "-q", redis_password=None)
    assert done.returncode != 0
    assert "set SLIDR_REDIS__PASSWORD" in done.stderr


@pytest.mark.integration
async def test_the_compose_redis_script_runs_a_locked_redis(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """The container's script, run here with Debian's redis-server on a free port: the slidr
    user counts features and cannot administer, the default user is refused, the password is
    neither on the command line nor in the ACL file (0600)."""
    (port,) = free_ports(1)
    script = redis_script(services).replace("16379", str(port))
    env = {
        "PATH": os.environ["PATH"],
        "TMPDIR": str(tmp_path),
        "SLIDR_REDIS__USERNAME": "slidr",
        "SLIDR_REDIS__PASSWORD": REDIS_PASSWORD,
    }
    proc = subprocess.Popen(["sh", "-ec", script], env=env, stdout=subprocess.DEVNULL)
    settings = RedisSettings(
        port=port,
        username="slidr",
        password=SecretStr(REDIS_PASSWORD),
        key_prefix=f"{RedisSettings().key_prefix}compose-test:",
    )
    try:
        client = sync_client(settings)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        with client:
            assert client.ping()
            for refused in (("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "1"), ("KEYS", "*")):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*refused)  # type: ignore[no-untyped-call]
        with pytest.raises(redis.AuthenticationError), redis.Redis(port=port) as default:
            default.ping()
        async with RedisFeatureStore(settings, timeout_s=2.0) as store:
            assert (await store.features([make_click("a", T0)])).shape[0] == 1
            assert await store.drop_namespace() > 0
        acl = tmp_path / "slidr-users.acl"
        assert stat.S_IMODE(acl.stat().st_mode) == 0o600
        assert REDIS_PASSWORD not in acl.read_text()
        assert REDIS_PASSWORD.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_triton_listens_and_loads_what_the_settings_say(services: dict[str, Any]) -> None:
    t = TritonSettings()
    command = services["triton"]["command"]
    ports = [flag(command, f"--{kind}-port") for kind in ("http", "grpc", "metrics")]
    assert ports == [str(t.http_port), str(t.grpc_port), str(t.metrics_port)]
    assert flag(command, "--load-model") == t.model_name
    probe = f"{t.host}:{t.http_port}/v2/models/{t.model_name}/ready"
    assert probe in " ".join(services["triton"]["healthcheck"]["test"])


def test_triton_listens_on_loopback_only(services: dict[str, Any]) -> None:
    command = services["triton"]["command"]
    for kind in ("http", "grpc", "metrics"):
        assert ipaddress.ip_address(flag(command, f"--{kind}-address")).is_loopback, kind


def test_triton_repository_api_needs_the_registry_key(services: dict[str, Any]) -> None:
    """The same restriction as the local stack's, with the key from the environment."""
    command = services["triton"]["command"]
    locked = TritonSettings(repository_key=SecretStr(REPOSITORY_KEY))
    assert [a for a in command if "restricted" in a] == restricted_api_flags(locked)
    # only the monitor (rollbacks through the registry) holds the key; the worker only infers
    holders = {
        name
        for name, service in services.items()
        if "SLIDR_TRITON__REPOSITORY_KEY" in service.get("environment", {})
    }
    assert holders == {"monitor"}
    assert services["monitor"]["environment"]["SLIDR_TRITON__REPOSITORY_KEY"] == REPOSITORY_KEY


def test_compose_refuses_to_start_without_a_repository_key() -> None:
    done = docker_compose("config", "-q", key=None)
    assert done.returncode != 0
    assert "set SLIDR_TRITON__REPOSITORY_KEY" in done.stderr


def triton_config(services: dict[str, Any]) -> tuple[str, Path]:
    """The --model-config-name of the triton service and the host file it names."""
    command = services["triton"]["command"]
    name = flag(command, "--model-config-name")
    inside = flag(command, "--model-repository")
    mounts = dict(reversed(v.split(":")[:2]) for v in services["triton"]["volumes"])
    model = Path(mounts[inside]) / TritonSettings().model_name
    return name, model / "configs" / f"{name}.pbtxt"


def test_triton_serves_the_versions_with_the_onnx_runtime_backend(
    services: dict[str, Any],
) -> None:
    _, path = triton_config(services)
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert (config.backend, config.default_model_filename) == ("onnxruntime", ONNX_FILE)
    assert config.name == TritonSettings().model_name
    # the same version directories as the local stack's (models/day_zero.py, `slidr train`)
    assert path.parent.parent == PROJECT_ROOT / "triton_repo" / TritonSettings().model_name


@pytest.mark.integration
def test_triton_2_51_reads_the_config_the_compose_flag_names(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """The wheel's tritonserver (the image's version) given the compose file's flag tries the
    ONNX Runtime backend, which only the image has: so it read configs/<name>.pbtxt, and it
    accepted the file's address and restricted-API flags."""
    name, path = triton_config(services)
    settings = private_settings(tmp_path)  # a repository holding the day-zero version
    model = settings.triton.model_repository / settings.triton.model_name
    (model / "configs").mkdir()
    shutil.copy(path, model / "configs" / path.name)
    service = TritonService(settings)
    http, grpc, metrics = free_ports(3)
    argv = [
        str(pytriton_root() / "bin" / "tritonserver"),
        f"--model-repository={settings.triton.model_repository}",
        f"--backend-directory={service._backend_dir()}",
        f"--model-config-name={name}",
        "--model-control-mode=explicit",
        f"--load-model={settings.triton.model_name}",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        # 2.51 parses the compose file's lockdown flags (a bad option would exit before the
        # model is read)
        *(a for a in services["triton"]["command"] if "restricted" in a or "-address=" in a),
    ]
    done = subprocess.run(
        argv, env=service._env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "backend library for backend 'onnxruntime'" in done.stdout + done.stderr
