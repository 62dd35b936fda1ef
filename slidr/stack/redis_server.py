"""Redis from Debian's redis-server package, in-memory only (no RDB, no AOF)."""

from __future__ import annotations

from pathlib import Path

import redis

from slidr.settings import Settings
from slidr.stack.process import ManagedProcess, wait_until
from slidr.stack.service import Health, require_program


class RedisService:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.redis
        self.proc = ManagedProcess("redis", Path(settings.state_dir) / "redis")

    @property
    def port(self) -> int:
        return self.settings.port

    def check_prerequisites(self) -> None:
        require_program(
            "redis-server",
            "the local stack runs Redis for the velocity and entity counters",
            "apt-get install -y redis-server",
        )

    def client(self) -> redis.Redis:
        password = self.settings.password
        return redis.Redis(
            host=self.settings.host,
            port=self.settings.port,
            db=self.settings.db,
            password=password.get_secret_value() if password else None,
            socket_timeout=2,
        )

    def start(self) -> None:
        argv = [
            require_program("redis-server", "", "apt-get install -y redis-server"),
            "--bind", self.settings.host,
            "--port", str(self.settings.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.proc.workdir),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.settings.password is not None:
            argv += ["--requirepass", self.settings.password.get_secret_value()]
        self.proc.start(argv)
        wait_until(lambda: self.health().ok, "redis PING", 15, self.proc)

    def health(self) -> Health:
        try:
            with self.client() as client:
                client.ping()
        except redis.RedisError as exc:
            return Health(False, f"no PING reply: {exc}")
        return Health(True, "PING ok")
