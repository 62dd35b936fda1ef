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

    def up(
        self, on_progress: Callable[[str], None] = log.info, triton_timeout_s: float = 120.0
    ) -> list[ServiceStatus]:
        """Start what is not running and wait until each answers; then create the topics the
        settings name and load the registry's versions in Triton, even on a running stack (the
        settings may name other topics, the registry other versions). Idempotent."""
        self.check_prerequisites()
        timings: dict[str, float] = {}
        for service in self.services:
            if (took := self._start(service, on_progress)) is not None:
                timings[service.name] = took
        if self.kafka in self.services:
            ensure_topics(self.settings)  # logs the names it creates
        if self.triton in self.services:
            self._serve_registry_versions(on_progress, triton_timeout_s)
        return [
            _status(service, started_in_s=timings.get(service.name)) for service in self.services
        ]

    def _start(self, service: Service, on_progress: Callable[[str], None]) -> float | None:
        """Start ``service`` unless it runs and answers; the seconds it took, or None."""
        if service.proc.pid() is not None and service.health().ok:
            on_progress(f"{service.name}: already up on port {service.port}")
            return None
        service.proc.stop()  # a running but unhealthy leftover would hold the port
        on_progress(f"{service.name}: starting on port {service.port}")
        start = time.monotonic()
        service.start()
        took = time.monotonic() - start
        if service is self.kafka:
            on_progress(f"kafka: round trip in {self.kafka.round_trip() * 1000:.0f} ms")
        return took

    def _serve_registry_versions(
        self, on_progress: Callable[[str], None], timeout_s: float
    ) -> None:
        """A (re)started Triton loads every version on disk: keep the registry's ones only."""
        from slidr.registry import Registry, TritonVersions  # tritonclient: only when needed

        kept = Registry(self.settings, TritonVersions(self.settings.triton)).sync_triton()
        self.triton.wait_serving(kept, timeout_s)
        on_progress(f"triton: model {self.settings.triton.model_name} versions {sorted(kept)}")

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
