"""What the stack manager needs from each local service."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from typing import Protocol

from slidr.errors import PrerequisiteMissing
from slidr.settings import KafkaSettings
from slidr.stack.process import Supervised


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class Service(Protocol):
    name: str

    @property
    def proc(self) -> Supervised: ...

    @property
    def port(self) -> int: ...

    def check_prerequisites(self) -> None:
        """Raise PrerequisiteMissing naming what to install."""

    def start(self) -> None:
        """Start the process and return once it answers (or raise StackError)."""

    def health(self) -> Health: ...


def require_program(program: str, why: str, install: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise PrerequisiteMissing(f"`{program}` not found: {why}. Install it with: {install}")
    return path


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """A cheap TCP probe, so clients that log every refused connection are not even tried."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_reachable(kafka: KafkaSettings) -> bool:
    """Whether any broker of the settings accepts connections (another may be down)."""
    return any(port_open(kafka.host, port) for port in kafka.broker_ports)
