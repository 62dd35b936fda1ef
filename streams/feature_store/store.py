"""The feature store of the scoring path: two script calls per Redis node per batch.

Velocity and distinct counts live in Redis, one small state per active entity, so any worker
gives a click the same features; time of click and logged-in status are computed here. Keys,
windows, error bounds and memory: docs/redis-keys.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from redis.exceptions import AskError, RedisError, ResponseError, TryAgainError

from slidr.errors import SlidrError
from slidr.events import Click
from slidr.settings import RedisSettings
from streams.feature_store.arrays import runs
from streams.feature_store.batch import (
    NodeCall,
    Plan,
    decode_row,
    features,
    local_features,
    plan,
    regroup,
)
from streams.feature_store.entity import count
from streams.feature_store.layout import LAYOUT
from streams.feature_store.nodes import Nodes, connect
from streams.feature_store.script import Args, script
from streams.feature_store.stored import split_state

log = logging.getLogger(__name__)
#: Per compaction: the state key, what was read of it up to its log, the length folded in,
#: the new base, the state's TTL in ms (commit.lua).
_Compactions = list[tuple[str, bytes, int, bytes, int]]

#: The longest an idle entity's state is kept: the largest window, plus slack for late
#: clicks (a kind that looks back less is kept less: ``Kind.ttl_ms``).
ENTITY_TTL_S = max(k.ttl_ms for k in LAYOUT.kinds) // 1000
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

    def __init__(
        self, settings: RedisSettings, *, timeout_s: float = 1.0, nodes: Nodes | None = None
    ) -> None:
        """``nodes``: the Redis to use instead of the one the settings name (benchmarks)."""
        if "{" in settings.key_prefix or "}" in settings.key_prefix:
            raise ValueError("the Redis key prefix must not contain { or } (hash tags)")
        self._prefix = settings.key_prefix
        self._row_ttl_ms = settings.row_horizon_s * 1000
        kind = "Redis Cluster" if settings.cluster_nodes else "Redis"
        self._where = f"{kind} at {settings.host}:{settings.port}"
        self._nodes: Nodes = nodes if nodes is not None else connect(settings, timeout_s)
        self._stale = False
        #: Script calls sent so far (two per node per batch, more after a redirect).
        self.round_trips = 0

    async def features(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        if not clicks:
            return local_features(clicks)
        try:
            return await self._count(clicks)
        except RedisError as exc:
            self._stale = True  # a node may be gone: learn the slot map again next time
            raise self._unavailable(exc) from exc

    async def _count(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        if self._stale:
            await self._nodes.refresh()
            self._stale = False
        await self._nodes.ready()
        batch = plan(clicks, self._prefix, self._nodes)
        calls = list(batch.calls.values())
        for attempt in range(_REDIRECTS + 1):
            # Read and append on every node, count the whole batch at once, store rows and
            # compactions on every node: two round trips of wall time, one count.
            reads = await _each([self._read(batch, call) for call in calls])
            failed = _failed(calls, reads, attempt)
            ready = [r for r in reads if isinstance(r, _Read)]
            commits = self._counted(batch, ready) if ready else []
            stored = await _each(
                [self._commit(r.call, *c) for r, c in zip(ready, commits, strict=True)]
            )
            failed += _failed([r.call for r in ready], stored, attempt)
            if not failed:
                return features(batch)
            # A node that no longer owns a key refused it (MOVED for its row hash, "non local
            # key" for a state, maybe after appending to others: a record appended twice
            # counts once). Its work goes where the new slot map says.
            log.info("feature store: a slot moved; refreshing the slot map")
            await asyncio.sleep(_REDIRECT_PAUSE_S * 2**attempt)
            await self._nodes.refresh()
            calls = list(regroup(batch, failed, self._nodes).values())
        raise AssertionError("unreachable")

    async def _read(self, batch: Plan, call: NodeCall) -> _Read | None:
        """Read the node's states and append the batch's clicks to them; None when every
        click of the call was seen before (their stored rows are the features)."""
        logs = batch.logs(call)
        reply = await self._read_append(batch, call, logs)
        if reply[0] == 1:  # some clicks were seen before: their rows, then the rest afresh
            starts = [a for a, _ in call.groups.values()]
            seen = []
            for j in range(1, len(reply), 3):
                row = starts[int(reply[j]) - 1] + int(reply[j + 1]) - 1
                batch.stored_row(call, row, decode_row(reply[j + 2]))
                seen.append(row)
            call = batch.without(call, seen)
            if not len(call.rows):
                return None
            logs = batch.logs(call)
            reply = await self._read_append(batch, call, logs)
            if reply[0] == 1:
                raise TryAgainError("rows appeared while the batch was resent")
        return _Read(call, logs, reply[1:])

    def _counted(self, batch: Plan, reads: list[_Read]) -> list[tuple[list[str], Args]]:
        """Count the clicks of every read (into ``batch.values``); each read's commit
        arguments: its feature rows, then its compactions."""
        entities = np.concatenate([r.call.entities for r in reads])
        records = np.concatenate([r.call.records for r in reads])
        states = [s for r in reads for s in r.states]
        local = np.empty(len(batch.keys), dtype=np.int64)  # plan entity -> place in ``states``
        local[entities] = np.arange(len(entities))
        counted = count(
            batch.layout,
            batch.kinds[entities],
            states,
            local[batch.record_entity[records]],
            batch.record_t[records],
            batch.record_h[records],
            batch.record_elements[records],
        )
        batch.counted(records, counted.values)
        compactions: list[_Compactions] = [[] for _ in reads]
        ttl_ms = batch.layout.tables.ttl_ms
        if counted.bases:
            ends = np.cumsum([len(r.states) for r in reads]).tolist()
            for i, base in counted.bases.items():
                r = next(r for r, end in enumerate(ends) if i < end)
                j = i - (ends[r - 1] if r else 0)  # the entity's place in its read
                state = states[i]
                read, _ = split_state(state)
                folded = len(state or b"\0\0") + len(reads[r].logs[j])
                entity = int(entities[i])
                ttl = abs(int(ttl_ms[batch.kinds[entity]]))
                compactions[r].append((batch.keys[entity], read, folded, base, ttl))
        return [self._commit_args(batch, r, c) for r, c in zip(reads, compactions, strict=True)]

    def _commit_args(
        self, batch: Plan, read: _Read, compactions: _Compactions
    ) -> tuple[list[str], Args]:
        """The commit's row hashes, and its argument: the feature rows, then the compactions."""
        call = read.call
        rows, fields = batch.encoded_rows(call), call.fields
        args = Args()
        args.add(self._row_ttl_ms)
        for a, b in call.groups.values():
            args.add(b - a)
            args.pairs(fields[a:b], rows[a:b])
        for key, read_base, folded, base, ttl in compactions:
            args.add(key)
            args.blobs([read_base])
            args.add(folded)
            args.blobs([base])
            args.add(ttl)
        return list(call.groups), args

    async def _commit(self, call: NodeCall, keys: list[str], args: Args) -> None:
        self.round_trips += 1
        await self._nodes.evalsha(call.node, script("commit.lua"), keys, [args.packed()])

    async def _read_append(self, batch: Plan, call: NodeCall, logs: list[bytes]) -> list[Any]:
        keys, fields = batch.keys, call.fields
        # Entities are numbered kind after kind: the call's come in runs of one kind (TTL).
        kinds = batch.kinds[call.entities]
        cuts = runs(kinds)
        sizes = np.diff(np.append(cuts, len(kinds)))
        ttls = batch.layout.tables.ttl_ms[kinds[cuts]]
        args = Args()
        args.add(len(logs), len(cuts))
        args.extend(np.column_stack((sizes, ttls)).ravel().tolist())
        args.extend([keys[e] for e in call.entities.tolist()])
        args.blobs(logs)
        for a, b in call.groups.values():
            args.add(b - a)
            args.extend(fields[a:b])
        self.round_trips += 1
        reply: list[Any] = await self._nodes.evalsha(
            call.node, script("read_append.lua"), list(call.groups), [args.packed()]
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


@dataclass
class _Read:
    """A node's states, read (and appended to) for a call, in the order of its entities, and
    the log records appended to each."""

    call: NodeCall
    logs: list[bytes]
    states: list[bytes | None]


_T = TypeVar("_T")


async def _each(calls: list[Awaitable[_T]]) -> list[_T | BaseException]:
    """Each call's result or error, the calls run concurrently; a single one is awaited here,
    without a task (one node: the usual case)."""
    if len(calls) < 2:
        try:
            return [await c for c in calls]
        except Exception as exc:
            return [exc]
    return await asyncio.gather(*calls, return_exceptions=True)


def _failed(calls: list[NodeCall], results: Sequence[object], attempt: int) -> list[NodeCall]:
    """The calls whose node refused them because a slot moved (to resend); any other error is
    raised."""
    failed = []
    for call, result in zip(calls, results, strict=True):
        if isinstance(result, BaseException):
            if _moved(result) and attempt < _REDIRECTS:
                failed.append(call)
            else:
                raise result
    return failed
