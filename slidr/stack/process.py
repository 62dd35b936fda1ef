"""Start, find and stop background service processes, each tracked by a pid file.

The pid file stores the pid and the kernel's start time of that process, so a recycled pid is
never mistaken for our service and ``down`` stops exactly what ``up`` started. A service of
several processes (the nodes of a Redis Cluster) is a :class:`ProcessGroup`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, SecretStr

from slidr.errors import StackError

log = logging.getLogger(__name__)

# Services outlive the Popen objects that started them; keeping the objects here lets stop()
# reap them when the same process stops them (tests) and keeps Popen from warning on collection.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) follows the parenthesised command name, which may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    workdir: Path

    @property
    def pid_file(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid_s, ticks_s = self.pid_file.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_s)
        if _start_ticks(pid) != int(ticks_s) or _is_zombie(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        secrets: Collection[str] = (),
    ) -> int:
        """Start ``argv`` in the background; ``secrets`` (values on argv) are masked in the log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=self.workdir,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches its children
            )
        _CHILDREN[proc.pid] = proc
        ticks = _start_ticks(proc.pid)
        self.pid_file.write_text(f"{proc.pid} {ticks}\n")
        log.debug("started %s pid %d: %s", self.name, proc.pid, " ".join(redact(argv, secrets)))
        return proc.pid

    def exited_early(self) -> bool:
        return self.pid() is None

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM the process group, then SIGKILL after ``timeout_s``. False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _start_ticks(pid) is None or _is_zombie(pid):
                break
            time.sleep(0.1)
        else:
            log.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the process group at once (a crash, for fault tests); False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _start_ticks(pid) is not None and not _is_zombie(pid):
            if time.monotonic() > deadline:
                raise StackError(f"{self.name} (pid {pid}) survived SIGKILL for 10 s")
            time.sleep(0.05)
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True)
class ProcessGroup:
    """Processes that are one service (a cluster's nodes): they start and stop together."""

    name: str
    members: tuple[ManagedProcess, ...]
    #: Stopped with the group, never started by it: processes of an earlier layout of the same
    #: service (another node count or port) that would otherwise hold its ports.
    strays: tuple[ManagedProcess, ...] = ()

    @property
    def log_file(self) -> Path:
        return self.members[0].log_file

    def pids(self) -> dict[str, int | None]:
        return {m.name: m.pid() for m in self.members}

    def pid(self) -> int | None:
        """The first running member's pid (what ``stack status`` shows), or None."""
        return next((pid for pid in self.pids().values() if pid is not None), None)

    def exited_early(self) -> bool:
        return any(m.exited_early() for m in self.members)

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop every member and stray, all at once; False if none ran.

        At once, not one after another: the last nodes of a Kafka cluster would otherwise wait
        for a quorum the first ones took away before they shut down.
        """
        processes = (*self.members, *self.strays)
        with ThreadPoolExecutor(max_workers=len(processes)) as pool:
            return any(list(pool.map(lambda p: p.stop(timeout_s), processes)))

    def tail(self, lines: int = 20) -> str:
        return "\n".join(f"[{m.name}]\n{m.tail(lines)}" for m in self.members)


class Supervised(Protocol):
    """What the stack manager needs of a service's process(es): one process or a group."""

    @property
    def name(self) -> str: ...

    @property
    def log_file(self) -> Path: ...

    def pid(self) -> int | None: ...

    def exited_early(self) -> bool: ...

    def stop(self, timeout_s: float = 20.0) -> bool: ...

    def tail(self, lines: int = 20) -> str: ...


MASK = "**********"  # pydantic's SecretStr mask, so a redacted line reads like a settings dump


def redact(argv: Sequence[str], secrets: Collection[str]) -> list[str]:
    """``argv`` with every occurrence of a secret value masked, for logs and error messages."""
    out = list(argv)
    # Longest first, so a secret that contains a shorter one is masked whole.
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        out = [arg.replace(secret, MASK) for arg in out]
    return out


def secret_values(settings: BaseModel) -> list[str]:
    """Every SecretStr value set anywhere in a settings tree (what ``redact`` must mask)."""

    def walk(model: BaseModel) -> Iterator[str]:
        for _, value in model:
            if isinstance(value, SecretStr):
                yield value.get_secret_value()
            elif isinstance(value, BaseModel):
                yield from walk(value)

    return [v for v in walk(settings) if v]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, from its creation on (secrets)."""
    path.unlink(missing_ok=True)  # an existing file would keep its (maybe wider) mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)


def wait_until(check: Callable[[], bool], what: str, timeout_s: float, proc: Supervised) -> None:
    """Poll ``check()`` until it is true; fail early, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc.exited_early():
            raise StackError(
                f"{proc.name} exited during start-up; last lines of {proc.log_file}:\n{proc.tail()}"
            )
        time.sleep(0.2)
    raise StackError(
        f"{what} not ready after {timeout_s:.0f} s; see {proc.log_file}:\n{proc.tail()}"
    )
