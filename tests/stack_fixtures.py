"""A private local stack for a test session: free ports, a temporary state directory and a
copy of the model repository, so tests never touch a developer's running stack."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr

from models.day_zero import ensure_day_zero_version
from slidr.settings import (
    PROJECT_ROOT,
    KafkaSettings,
    RedisSettings,
    Settings,
    TritonSettings,
)
from slidr.stack.service import Service

_S = TypeVar("_S", bound=Service)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port_range(n: int, *, cluster_bus: bool = True) -> int:
    """A base port such that base .. base + n - 1 are free and, for a Redis Cluster, their bus
    ports (each + 10000) too. Drawn below Linux's ephemeral range (32768+), so that outgoing
    connections do not take them between this check and the server's bind."""
    offsets = [*range(n), *(range(10_000, 10_000 + n) if cluster_bus else ())]
    for _ in range(200):
        base = random.randrange(20_000, 22_700 - n)
        sockets: list[socket.socket] = []
        try:
            for offset in offsets:
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError(f"no {n} consecutive free ports found")


def redis_only(root: Path, nodes: int = 0, **redis: Any) -> Settings:
    """Settings for a private Redis under ``root`` (Redis only): one node, or a Redis Cluster
    of ``nodes`` masters; ``redis`` adds to its settings (a user, TLS)."""
    port = free_port_range(nodes) if nodes else free_ports(1)[0]
    return Settings(
        state_dir=root / "state",
        redis=RedisSettings(port=port, cluster_nodes=nodes, key_prefix="slidr-test:", **redis),
    )


def cluster_settings(root: Path, nodes: int = 3) -> Settings:
    """Settings for a private Redis Cluster of ``nodes`` masters under ``root`` (Redis only)."""
    return redis_only(root, nodes)


def kafka_cluster(heap: str) -> KafkaSettings:
    """Three brokers on free ports, topics with 3 replicas and min.insync.replicas 2."""
    port = free_port_range(6, cluster_bus=False)
    return KafkaSettings(
        port=port,
        controller_port=port + 1,
        brokers=3,
        replication_factor=3,
        min_insync_replicas=2,
        heap=heap,
    )


@contextmanager
def running(service: _S) -> Iterator[_S]:
    """``service`` started once its prerequisites are checked, and stopped on the way out
    (also when it failed to start half way)."""
    service.check_prerequisites()
    try:
        service.start()
        yield service
    finally:
        service.proc.stop()


def private_settings(root: Path) -> Settings:
    """Settings for a stack living entirely under ``root`` (the jar cache is shared)."""
    kafka, controller, redis_port, http, grpc, metrics = free_ports(6)
    repo = root / "triton_repo"
    # Only what git tracks: versions, pointers and registry files are a developer's state.
    (repo / "slidr").mkdir(parents=True)
    for tracked in ("config.pbtxt", "model.py"):
        shutil.copy(PROJECT_ROOT / "triton_repo" / "slidr" / tracked, repo / "slidr" / tracked)
    settings = Settings(
        state_dir=root / "state",
        kafka=KafkaSettings(port=kafka, controller_port=controller),
        redis=RedisSettings(port=redis_port, key_prefix="slidr-test:"),
        triton=TritonSettings(
            http_port=http, grpc_port=grpc, metrics_port=metrics, model_repository=repo
        ),
    )
    ensure_day_zero_version(settings.triton)
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The SLIDR_* environment that makes a subprocess (e.g. `slidr worker`) use ``settings``."""
    env: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}__{key.upper()}" if prefix else key.upper(), item)
        elif isinstance(value, list):
            env[f"SLIDR_{prefix}"] = json.dumps(value)  # pydantic-settings reads lists as JSON
        elif value is not None:
            env[f"SLIDR_{prefix}"] = str(value)

    walk("", settings.model_dump(mode="json"))
    _reveal_secrets("", settings, env)
    return env


def _reveal_secrets(prefix: str, model: BaseModel, env: dict[str, str]) -> None:
    """JSON dumps mask a SecretStr as '**********': a subprocess needs the value itself."""
    for name, value in model:
        key = f"{prefix}__{name.upper()}" if prefix else name.upper()
        if isinstance(value, SecretStr):
            env[f"SLIDR_{key}"] = value.get_secret_value()
        elif isinstance(value, BaseModel):
            _reveal_secrets(key, value, env)


def private_model(settings: Settings) -> Settings:
    """Settings naming a fresh model (its own day-zero version) in the same Triton, loaded.

    Tests that move a serving pointer, calibrate or promote use one, so they never change what
    other tests in the session are scored with.
    """
    import tritonclient.http as triton_http

    name = f"slidr_{uuid.uuid4().hex[:8]}"
    repo = Path(settings.triton.model_repository)
    source = repo / settings.triton.model_name
    target = repo / name
    target.mkdir()
    shutil.copy(source / "model.py", target / "model.py")
    config = (source / "config.pbtxt").read_text()
    (target / "config.pbtxt").write_text(
        config.replace(f'name: "{settings.triton.model_name}"', f'name: "{name}"')
    )
    private = settings.model_copy(
        update={"triton": settings.triton.model_copy(update={"model_name": name})}
    )
    ensure_day_zero_version(private.triton)
    client = triton_http.InferenceServerClient(
        f"{settings.triton.host}:{settings.triton.http_port}"
    )
    try:
        client.load_model(name)
    finally:
        client.close()
    return private


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not a zombie (a stopped service must be neither)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stub_pid(version_dir: Path) -> int:
    """The Triton Python-backend stub process serving ``version_dir``."""
    script = str(version_dir / "model.py").encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if script in (proc / "cmdline").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # a process that ended meanwhile
            continue
    raise RuntimeError(f"no Triton stub process for {version_dir}")
