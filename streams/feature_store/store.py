"""The feature store of the scoring path: two script calls per Redis node per batch.

Velocity and distinct counts live in Redis, one small state per active entity, so any worker
gives a click the same features; time of click and logged-in status are computed here. Keys,
windows, error bounds and memory: docs/redis-keys.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from redis.exceptions import AskError, RedisError, ResponseError, TryAgainError

from slidr.errors import SlidrError
from slidr.events import Click
from slidr.features import WINDOWS
from slidr.settings import RedisSettings
from streams.feature_store.batch import (
    NodeCall,
    RowWork,
    decode_row,
    encode_row,
    fill_features,
    local_features,
    plan,
    regroup,
)
from streams.feature_store.entity import count, decode_base, decode_log, encode_log, split_state
from streams.feature_store.nodes import Nodes, connect
from streams.feature_store.script import pack_args, script

log = logging.getLogger(__name__)

#: An idle entity's state outlives the largest window, plus slack for late clicks.
ENTITY_TTL_S = max(w.seconds for w in WINDOWS) + 3600
#: Slot-map changes (MOVED/ASK) survived within one batch before it fails open, and the first
#: pause before learning the map again: nodes learn a move by gossip, so a map asked for at
#: once can still be the old one.
_REDIRECTS = 4
_REDIRECT_PAUSE_S = 0.05
#: What a cluster node says when a script reaches a key of a slot it does not own.
_NOT_LOCAL = "non local key"


def _moved(exc: BaseException) -> bool:
    """A refusal because a slot moved (MovedError is an AskError)."""
    return isinstance(exc, (AskError, TryAgainError)) or (
        isinstance(exc, ResponseError) and _NOT_LOCAL in str(exc)
    )


class FeatureStoreUnavailable(SlidrError):
    """Redis did not answer (down, timed out, refused the command): score the batch fail-open.

    The next call reconnects by itself; nothing needs to be reset.
    """


class FeatureStore(Protocol):
    """What the scoring path needs from a feature store."""

    async def features(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        """float32 [len(clicks), N_FEATURES] in the order of ``slidr.features.FEATURES``."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class NodeMemory:
    node: str
    used_bytes: int
    max_bytes: int
    keys: int


class RedisFeatureStore:
    """The store on one Redis node or a Redis Cluster, as ``settings.cluster_nodes`` says.

    ``timeout_s`` bounds connecting and each reply, so an unresponsive Redis costs about that
    long per batch before :class:`FeatureStoreUnavailable` (the worker then fails open); the
    connections recover by themselves on a later call. Usable as ``async with``.
    """

    def __init__(self, settings: RedisSettings, *, timeout_s: float = 1.0) -> None:
        if "{" in settings.key_prefix or "}" in settings.key_prefix:
            raise ValueError("the Redis key prefix must not contain { or } (hash tags)")
        self._prefix = settings.key_prefix
        self._row_ttl_ms = settings.row_horizon_s * 1000
        kind = "Redis Cluster" if settings.cluster_nodes else "Redis"
        self._where = f"{kind} at {settings.host}:{settings.port}"
        self._nodes: Nodes = connect(settings, timeout_s)
        self._stale = False
        #: Script calls sent so far (two per node per batch, more after a redirect).
        self.round_trips = 0

    async def features(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        out = local_features(clicks)
        if not clicks:
            return out
        try:
            await self._count(clicks, out)
        except RedisError as exc:
            self._stale = True  # a node may be gone: learn the slot map again next time
            raise self._unavailable(exc) from exc
        return out

    async def _count(self, clicks: Sequence[Click], out: npt.NDArray[np.float32]) -> None:
        """Fill the Redis-counted columns of ``out``; nothing is written to it on failure."""
        if self._stale:
            await self._nodes.refresh()
            self._stale = False
        await self._nodes.ready()
        batch = plan(clicks, self._prefix, self._nodes)
        calls = batch.calls
        done: list[tuple[RowWork, list[int]]] = []
        for attempt in range(_REDIRECTS + 1):
            parts = await asyncio.gather(
                *(self._on_node(node, call) for node, call in calls.items()),
                return_exceptions=True,  # the other nodes finish: only what failed is resent
            )
            failed: list[NodeCall] = []
            for call, part in zip(calls.values(), parts, strict=True):
                if not isinstance(part, BaseException):
                    done += part
                elif _moved(part) and attempt < _REDIRECTS:
                    failed.append(call)
                else:
                    raise part
            if not failed:
                fill_features(out, done, batch.layout)
                return
            # A node that no longer owns a key refused it (MOVED for its row hash, "non local
            # key" for a state, maybe after appending to others: a record appended twice
            # counts once). Its work goes where the new slot map says.
            log.info("feature store: a slot moved; refreshing the slot map")
            await asyncio.sleep(_REDIRECT_PAUSE_S * 2**attempt)
            await self._nodes.refresh()
            calls = regroup(failed, self._prefix, self._nodes, batch.layout)
        raise AssertionError("unreachable")

    async def _on_node(self, node: Hashable, call: NodeCall) -> list[tuple[RowWork, list[int]]]:
        """Read and append on the node, compute, then store rows (and compactions) there."""
        done: list[tuple[RowWork, list[int]]] = []
        reply = await self._read_append(node, call)
        if reply[0] == 1:  # some clicks were seen before: their rows, then the rest afresh
            groups = call.groups()
            names = list(groups)
            stored: dict[tuple[str, str], bytes] = {}
            for j in range(1, len(reply), 3):
                group = names[int(reply[j]) - 1]
                stored[(group, groups[group][int(reply[j + 1]) - 1])] = reply[j + 2]
            done += [(call.rows[k], decode_row(v)) for k, v in stored.items()]
            call = call.without(stored)
            if not call.rows:
                return done
            reply = await self._read_append(node, call)
            if reply[0] == 1:
                raise TryAgainError("rows appeared while the batch was resent")
        values: dict[str, dict[int, list[int]]] = {}
        compactions: list[str | int | bytes] = []
        for work, state in zip(call.entities.values(), reply[1:], strict=True):
            base, logged = split_state(state)
            counted = count(
                work.kind, decode_base(work.kind, base), decode_log(work.kind, logged), work.records
            )
            values[work.key] = counted.values
            if counted.base is not None:
                folded = len(state or b"\0\0") + len(work.records) * work.kind.record.size
                compactions += [work.key, base, folded, counted.base]
        rows = [
            (row, [v for e in row.entities for v in values[e.key][row.click_hash]])
            for row in call.rows.values()
        ]
        by_group: dict[str, list[bytes | str]] = {}
        for row, row_values in rows:
            by_group.setdefault(row.group, []).extend((row.field, encode_row(row_values)))
        args: list[str | int | bytes] = [self._row_ttl_ms, ENTITY_TTL_S * 1000]
        for fields in by_group.values():
            args += [len(fields) // 2, *fields]
        self.round_trips += 1
        payload = pack_args([*args, *compactions])
        await self._nodes.evalsha(node, script("commit.lua"), list(by_group), [payload])
        return done + rows

    async def _read_append(self, node: Hashable, call: NodeCall) -> list[Any]:
        groups = call.groups()
        args: list[str | int | bytes] = [len(call.entities), ENTITY_TTL_S * 1000, *call.entities]
        args += [encode_log(e.kind, e.records) for e in call.entities.values()]
        for fields in groups.values():
            args += [len(fields), *fields]
        self.round_trips += 1
        reply: list[Any] = await self._nodes.evalsha(
            node, script("read_append.lua"), list(groups), [pack_args(args)]
        )
        return reply

    async def memory(self) -> list[NodeMemory]:
        """Used and maximum memory and key count of each node (for metrics)."""
        try:
            await self._nodes.ready()
            infos: dict[str, dict[str, Any]] = await self._nodes.each("INFO", "memory")
            sizes: dict[str, int] = await self._nodes.each("DBSIZE")
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return [
            NodeMemory(
                node=node,
                used_bytes=int(info["used_memory"]),
                max_bytes=int(info["maxmemory"]),
                keys=int(sizes[node]),
            )
            for node, info in infos.items()
        ]

    async def drop_namespace(self) -> int:
        """Delete every key under this store's prefix, on every node; return how many.

        For private namespaces (offline features, replays), never the live prefix.
        """
        try:
            await self._nodes.ready()
            return await self._nodes.drop(self._prefix)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self._nodes.ready()
            await self._nodes.each("PING")
        except RedisError as exc:
            self._stale = True
            raise self._unavailable(exc) from exc

    async def aclose(self) -> None:
        await self._nodes.aclose()

    async def __aenter__(self) -> RedisFeatureStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _unavailable(self, exc: RedisError) -> FeatureStoreUnavailable:
        log.warning("feature store: %s failed: %s", self._where, exc)
        return FeatureStoreUnavailable(
            f"{self._where} failed ({type(exc).__name__}: {exc}); "
            "clicks are scored fail-open until it answers again"
        )
