"""The Redis behind the feature store: one node, or the primaries of a Redis Cluster.

Both answer the same three questions: which node owns a key, run the script on a node, and
list the nodes (for metrics and namespace clean-up). The cluster's slot map is refreshed on
``MOVED``/``ASK`` and after a connection failure; the store decides what to resend.

The scripts, two calls per node per batch, go over a link of this module's (:class:`Link`);
everything else over redis-py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from itertools import count
from typing import Any, Protocol, TypeVar

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterCrossSlotError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slidr.redis_config import client_options, explain, ssl_context
from slidr.settings import RedisSettings
from streams.feature_store.script import Script

_E = TypeVar("_E", bound=Exception)

#: Tells operators whose connections these are (CLIENT LIST).
CLIENT_NAME = "slidr-feature-store"


class Nodes(Protocol):
    async def ready(self) -> None:
        """Connect (a cluster: learn its slot map) if not yet done."""
        ...

    def node_of(self, key: str) -> Hashable: ...

    def row_tag(self, node: Hashable) -> str:
        """A hash tag whose keys live on ``node``."""
        ...

    async def evalsha(
        self, node: Hashable, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run the script on ``node`` (loading it there first when the node lacks it)."""
        ...

    async def each(self, *command: Any) -> dict[str, Any]:
        """The command's reply from every node, by node address."""
        ...

    async def refresh(self) -> None:
        """Learn the slot map again (a cluster after MOVED/ASK or a failure)."""
        ...

    async def drop(self, prefix: str) -> int:
        """Delete every key that starts with ``prefix`` on every node; return how many."""
        ...

    async def aclose(self) -> None: ...


# Keys of several slots on one node: a multi-key UNLINK, or a script declaring them, would be
# refused as CROSSSLOT; undeclared, under this flag, a script may reach them.
_DROP = """#!lua flags=allow-cross-slot-keys
for _, key in ipairs(ARGV) do redis.call('UNLINK', key) end
return #ARGV"""


async def _drop(execute: Callable[..., Awaitable[Any]], prefix: str) -> int:
    cursor, dropped = 0, 0
    while True:
        cursor, keys = await execute("SCAN", cursor, "MATCH", f"{prefix}*", "COUNT", 10_000)
        if keys:
            dropped += int(await execute("EVAL", _DROP, 0, *keys))
        if int(cursor) == 0:
            return dropped


def _pack(args: Sequence[bytes | str | int]) -> bytes:
    """A command as Redis reads it (RESP).

    >>> _pack(["EVALSHA", b"ab", 0])
    b'*3\\r\\n$7\\r\\nEVALSHA\\r\\n$2\\r\\nab\\r\\n$1\\r\\n0\\r\\n'
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


#: Error replies the store acts on, by their first word (redis-py's classes).
_ERRORS: dict[str, type[ResponseError]] = {
    "MOVED": MovedError,
    "ASK": AskError,
    "TRYAGAIN": TryAgainError,
    "NOSCRIPT": NoScriptError,
    "CROSSSLOT": ClusterCrossSlotError,
    "CLUSTERDOWN": ClusterDownError,
}


def _error(reply: hiredis.ReplyError) -> ResponseError:
    message = str(reply)
    code, _, rest = message.partition(" ")
    kind = _ERRORS.get(code)
    return kind(rest) if kind else ResponseError(message)


def _hinted(exc: _E, where: str, settings: RedisSettings) -> _E | RedisError:
    """A refused login (wrong user or password, or none given) or a failed TLS handshake as an
    error naming the settings to fix (slidr.redis_config.explain); any other error unchanged."""
    hint = explain(exc, where, settings)
    if hint is None:
        return exc
    # The cluster client wraps a refusal in a RedisClusterException (not a RedisError).
    if "refused the login" in hint:
        return AuthenticationError(hint)
    return RedisConnectionError(hint)


class _Protocol(asyncio.Protocol):
    """Replies parsed by hiredis as they arrive, each answering the oldest request waiting."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def send(self, request: bytes) -> asyncio.Future[Any]:
        """The future of the request's reply (the connection is made before any request)."""
        future = asyncio.get_running_loop().create_future()
        self.transport.write(request)  # type: ignore[union-attr]
        self.waiting.append(future)
        return future

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        try:
            reply = reader.gets()
            while reply is not False:
                waiting = self.waiting.popleft()
                if not waiting.done():
                    waiting.set_result(reply)
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:
            self.fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost ({exc or 'closed'})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def fail(self, why: RedisError) -> None:
        """Close the connection; every request waiting fails with ``why``."""
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            waiting = self.waiting.popleft()
            if not waiting.done():
                waiting.set_exception(why)


class Link:
    """One connection to one Redis node for the store's script calls, without redis-py's
    per-command machinery (its connection pool, retries and a task per timeout cost about
    0.1 ms of CPU per call, as much as counting a small batch): a request is written at once
    and awaits its reply, parsed by hiredis. Connects on first use and again after a failure
    (with the settings' user, password and database, named ``CLIENT_NAME``); ``timeout_s`` bounds
    connecting and each reply, and a request whose connection drops is sent once more (the
    scripts are idempotent).
    """

    def __init__(self, host: str, port: int, settings: RedisSettings, timeout_s: float) -> None:
        self.name = f"{host}:{port}"
        self._host, self._port = host, port
        self._settings = settings
        self._ssl = ssl_context(settings)
        password = settings.password.get_secret_value() if settings.password else None
        self._hello: list[list[bytes | str | int]] = []
        if password is not None:
            user = [settings.username] if settings.username else []
            self._hello.append(["AUTH", *user, password])
        self._hello += [["SELECT", settings.db]] if settings.db else []
        self._hello.append(["CLIENT", "SETNAME", CLIENT_NAME])
        self._timeout_s = timeout_s
        self._protocol: _Protocol | None = None

    async def call(self, *args: bytes | str | int) -> Any:
        """The reply to one command; a Redis error reply raised as redis-py's exception."""
        for attempt in range(2):
            protocol = await self._connected()
            try:
                return await self._reply(protocol, args)
            except RedisConnectionError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _reply(self, protocol: _Protocol, args: Sequence[bytes | str | int]) -> Any:
        loop = asyncio.get_running_loop()
        future = protocol.send(_pack(args))
        timer = loop.call_later(self._timeout_s, self._expire, protocol, future)
        try:
            reply = await future
        finally:
            timer.cancel()
        if isinstance(reply, hiredis.ReplyError):
            raise _error(reply)
        return reply

    def _expire(self, protocol: _Protocol, future: asyncio.Future[Any]) -> None:
        # Later replies would answer the wrong requests: the connection goes.
        if not future.done():
            future.set_exception(
                RedisTimeoutError(f"{self.name} did not answer within {self._timeout_s} s")
            )
        protocol.fail(RedisConnectionError(f"{self.name}: a reply timed out"))

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.transport and not protocol.transport.is_closing():
            return protocol
        loop = asyncio.get_running_loop()
        try:
            _, fresh = await asyncio.wait_for(
                loop.create_connection(
                    _Protocol,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                self._timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            error = RedisConnectionError(f"Error connecting to {self.name}: {exc}")
            raise _hinted(error, self.name, self._settings) from exc
        try:
            for command in self._hello:
                await self._reply(fresh, command)
        except RedisError as exc:
            fresh.fail(RedisConnectionError(f"{self.name}: refused the connection"))
            raise _hinted(exc, self.name, self._settings) from exc
        self._protocol = fresh
        return fresh

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the script (loading it first when the node lacks it)."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.call(*command)
        except (NoScriptError, ClusterCrossSlotError):
            # A cluster node that lacks the script cannot know its allow-cross-slot-keys flag,
            # so it answers CROSSSLOT rather than NOSCRIPT.
            await self.call("SCRIPT", "LOAD", script.source)
            return await self.call(*command)

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(RedisConnectionError(f"{self.name}: closed"))
            await asyncio.wait({protocol.closed}, timeout=self._timeout_s)


def _client_options(settings: RedisSettings, timeout_s: float) -> dict[str, Any]:
    return {**client_options(settings, timeout_s), "client_name": CLIENT_NAME}


class OneNode:
    """Placement on one node: every key lives there, ready at once (a node has no slot map)."""

    async def ready(self) -> None:
        return None

    def node_of(self, key: str) -> Hashable:
        return None

    def row_tag(self, node: Hashable) -> str:
        return "rows"


class SingleNode(OneNode):
    def __init__(self, settings: RedisSettings, timeout_s: float) -> None:
        self._name = f"{settings.host}:{settings.port}"
        self._settings = settings
        self._link = Link(settings.host, settings.port, settings, timeout_s)
        self._redis = aioredis.Redis(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            # One immediate retry on a dropped connection (e.g. Redis restarted), none on a
            # timeout, to keep the bound (redis-py's default backs off and tries again).
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **_client_options(settings, timeout_s),
        )

    async def evalsha(
        self, node: Hashable, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        return await self._link.evalsha(script, keys, args)

    async def each(self, *command: Any) -> dict[str, Any]:
        try:
            reply = await self._redis.execute_command(*command)  # type: ignore[no-untyped-call]
        except RedisError as exc:
            raise _hinted(exc, self._name, self._settings) from exc
        return {self._name: reply}

    async def refresh(self) -> None:
        return None

    async def drop(self, prefix: str) -> int:
        return await _drop(self._redis.execute_command, prefix)

    async def aclose(self) -> None:
        await self._link.aclose()
        await self._redis.aclose()


class ClusterNodes:
    """Primaries of a Redis Cluster, addressed one by one (the script spans slots of a node)."""

    def __init__(self, settings: RedisSettings, timeout_s: float) -> None:
        if settings.db != 0:
            raise ValueError("a Redis Cluster has only database 0; set SLIDR_REDIS__DB=0")
        self._cluster = RedisCluster(
            host=settings.host, port=settings.port, **_client_options(settings, timeout_s)
        )
        self._settings, self._timeout_s = settings, timeout_s
        self._ready = False
        self._tags: dict[Hashable, str] = {}
        self._links: dict[str, Link] = {}

    async def _initialized(self) -> RedisCluster:
        if not self._ready:
            try:
                await self._cluster.initialize()
            except (RedisError, RedisClusterException) as exc:
                raise _hinted(exc, "Redis Cluster", self._settings) from exc
            self._ready = True
        return self._cluster

    def node_of(self, key: str) -> Hashable:
        return self._cluster.nodes_manager.get_node_from_slot(key_slot(key.encode())).name

    def row_tag(self, node: Hashable) -> str:
        tag = self._tags.get(node)
        if tag is None:
            # The first of rows0, rows1, ... whose slot the node owns: found in a few tries.
            tag = next(f"rows{i}" for i in count() if self.node_of(f"{{rows{i}}}") == node)
            self._tags[node] = tag
        return tag

    async def ready(self) -> None:
        await self._initialized()

    async def evalsha(
        self, node: Hashable, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        link = self._links.get(str(node))
        if link is None:
            target = self._cluster.get_node(node_name=str(node))
            if target is None:
                raise RedisConnectionError(f"Redis Cluster node {node} is gone from the slot map")
            link = Link(target.host, int(target.port), self._settings, self._timeout_s)
            self._links[str(node)] = link
        return await link.evalsha(script, keys, args)

    async def each(self, *command: Any) -> dict[str, Any]:
        cluster = await self._initialized()
        return {n.name: await n.execute_command(*command) for n in cluster.get_primaries()}

    async def refresh(self) -> None:
        await self._cluster.nodes_manager.initialize()
        self._ready = True
        self._tags.clear()
        links, self._links = self._links, {}
        for link in links.values():  # a node may be gone, or another one at its address
            await link.aclose()

    async def drop(self, prefix: str) -> int:
        cluster = await self._initialized()
        return sum([await _drop(node.execute_command, prefix) for node in cluster.get_primaries()])

    async def aclose(self) -> None:
        links, self._links = self._links, {}
        for link in links.values():
            await link.aclose()
        await self._cluster.aclose()


def connect(settings: RedisSettings, timeout_s: float) -> Nodes:
    """The nodes the settings name: a cluster when ``cluster_nodes`` is set, else one node."""
    if settings.cluster_nodes:
        return ClusterNodes(settings, timeout_s)
    return SingleNode(settings, timeout_s)
