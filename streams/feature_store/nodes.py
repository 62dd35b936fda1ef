"""The Redis behind the feature store: one node, or the primaries of a Redis Cluster.

Both answer the same three questions: which node owns a key, run the script on a node, and
list the nodes (for metrics and namespace clean-up). The cluster's slot map is refreshed on
``MOVED``/``ASK`` and after a connection failure; the store decides what to resend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from itertools import count
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, NoScriptError
from redis.exceptions import ConnectionError as RedisConnectionError

from slidr.settings import RedisSettings
from streams.feature_store.script import Script

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


def _client_options(settings: RedisSettings, timeout_s: float) -> dict[str, Any]:
    password = settings.password.get_secret_value() if settings.password else None
    return {
        "password": password,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "client_name": CLIENT_NAME,
    }


class SingleNode:
    def __init__(self, settings: RedisSettings, timeout_s: float) -> None:
        self._name = f"{settings.host}:{settings.port}"
        self._redis = aioredis.Redis(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            # One immediate retry on a dropped connection (e.g. Redis restarted): re-running
            # the script is idempotent. Timeouts are not retried, to keep the bound.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **_client_options(settings, timeout_s),
        )

    async def ready(self) -> None:
        return None

    def node_of(self, key: str) -> Hashable:
        return None

    def row_tag(self, node: Hashable) -> str:
        return "rows"

    async def evalsha(
        self, node: Hashable, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(script.source)
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)

    async def each(self, *command: Any) -> dict[str, Any]:
        return {self._name: await self._redis.execute_command(*command)}  # type: ignore[no-untyped-call]

    async def refresh(self) -> None:
        return None

    async def drop(self, prefix: str) -> int:
        return await _drop(self._redis.execute_command, prefix)

    async def aclose(self) -> None:
        await self._redis.aclose()


class ClusterNodes:
    """Primaries of a Redis Cluster, addressed one by one (the script spans slots of a node)."""

    def __init__(self, settings: RedisSettings, timeout_s: float) -> None:
        if settings.db != 0:
            raise ValueError("a Redis Cluster has only database 0; set SLIDR_REDIS__DB=0")
        self._cluster = RedisCluster(
            host=settings.host, port=settings.port, **_client_options(settings, timeout_s)
        )
        self._ready = False
        self._tags: dict[Hashable, str] = {}

    async def _initialized(self) -> RedisCluster:
        if not self._ready:
            await self._cluster.initialize()
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
        target = self._node(node)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await target.execute_command(*command)
        except (NoScriptError, ClusterCrossSlotError):
            # A node that lacks the script cannot know its allow-cross-slot-keys flag, so it
            # answers CROSSSLOT rather than NOSCRIPT.
            await target.execute_command("SCRIPT LOAD", script.source)
            return await target.execute_command(*command)

    def _node(self, name: Hashable) -> ClusterNode:
        node = self._cluster.get_node(node_name=str(name))
        if node is None:
            raise RedisConnectionError(f"Redis Cluster node {name} is gone from the slot map")
        return node

    async def each(self, *command: Any) -> dict[str, Any]:
        cluster = await self._initialized()
        return {n.name: await n.execute_command(*command) for n in cluster.get_primaries()}

    async def refresh(self) -> None:
        await self._cluster.nodes_manager.initialize()
        self._ready = True
        self._tags.clear()

    async def drop(self, prefix: str) -> int:
        cluster = await self._initialized()
        return sum([await _drop(node.execute_command, prefix) for node in cluster.get_primaries()])

    async def aclose(self) -> None:
        await self._cluster.aclose()


def connect(settings: RedisSettings, timeout_s: float) -> Nodes:
    """The nodes the settings name: a cluster when ``cluster_nodes`` is set, else one node."""
    if settings.cluster_nodes:
        return ClusterNodes(settings, timeout_s)
    return SingleNode(settings, timeout_s)
