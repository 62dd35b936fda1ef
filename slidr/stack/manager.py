"""``slidr stack up | down | status``: the three services as one unit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slidr.settings import Settings
from slidr.stack.kafka_broker import KafkaService
from slidr.stack.redis_server import RedisService
from slidr.stack.service import Service
from slidr.stack.triton_server import TritonService
from slidr.topics import ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    healthy: bool
    detail: str
    log_file: Path
    #: Seconds ``up`` spent starting it; None when it was already running.
    started_in_s: float | None = None


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = KafkaService(settings)
        self.redis = RedisService(settings)
        self.triton = TritonService(settings)
        # Start order: cheapest first, Triton (slowest) last; stopped in reverse.
        self.services: list[Service] = [self.redis, self.kafka, self.triton]

    def check_prerequisites(self) -> None:
        for service in self.services:
            service.check_prerequisites()

    def up(self, on_progress: Callable[[str], None] = log.info) -> list[ServiceStatus]:
        """Start what is not running, wait until each answers, create topics. Idempotent."""
        self.check_prerequisites()
        timings: dict[str, float] = {}
        for service in self.services:
            if service.proc.pid() is not None and service.health().ok:
                on_progress(f"{service.name}: already up on port {service.port}")
                continue
            service.proc.stop()  # a running but unhealthy leftover would hold the port
            on_progress(f"{service.name}: starting on port {service.port}")
            start = time.monotonic()
            service.start()
            timings[service.name] = time.monotonic() - start
            if service is self.kafka:
                ensure_topics(self.settings)
                on_progress(f"kafka: round trip in {self.kafka.round_trip() * 1000:.0f} ms")
        return [
            _status(service, started_in_s=timings.get(service.name)) for service in self.services
        ]

    def down(self) -> list[str]:
        """Stop exactly the processes ``up`` started; return the names stopped."""
        return [s.name for s in reversed(self.services) if s.proc.stop()]

    def status(self) -> list[ServiceStatus]:
        return [_status(service) for service in self.services]


def _status(service: Service, started_in_s: float | None = None) -> ServiceStatus:
    pid = service.proc.pid()
    health = service.health() if pid is not None else None
    return ServiceStatus(
        name=service.name,
        port=service.port,
        pid=pid,
        healthy=bool(health and health.ok),
        detail=health.detail if health else "not running",
        log_file=service.proc.log_file,
        started_in_s=started_in_s,
    )
