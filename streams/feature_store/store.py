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
from streams.feature_store.arrays import Ints
from streams.feature_store.batch import (
    NodeCall,
    Plan,
    clicks_local_features,
    decode_row,
    fill_features,
    local_features,
    plan,
    regroup,
)
from streams.feature_store.entity import Part, count
from streams.feature_store.nodes import Nodes, connect
from streams.feature_store.script import Args, script
from streams.feature_store.stored import split_state

log = logging.getLogger(__name__)
#: Per compaction: the state key, what was read of it up to its log, the length folded in,
#: the new base (commit.lua).
_Compactions = list[tuple[str, bytes, int, bytes]]

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
        out = clicks_local_features(clicks, batch.ms)
        calls = batch.calls
        for attempt in range(_REDIRECTS + 1):
            # Read and append on every node, count the whole batch at once, store rows and
            # compactions on every node: two round trips of wall time, one count.
            reads = await asyncio.gather(
                *(self._read(batch, node, call) for node, call in calls.items()),
                return_exceptions=True,  # the other nodes finish: only what failed is resent
            )
            failed = _failed(list(calls.values()), reads, attempt)
            ready = [r for r in reads if isinstance(r, _Read)]
            commits = self._counted(batch, ready)
            stored = await asyncio.gather(
                *(self._commit(r.node, *c) for r, c in zip(ready, commits, strict=True)),
                return_exceptions=True,
            )
            failed += _failed([r.call for r in ready], stored, attempt)
            if not failed:
                fill_features(out, batch)
                return out
            # A node that no longer owns a key refused it (MOVED for its row hash, "non local
            # key" for a state, maybe after appending to others: a record appended twice
            # counts once). Its work goes where the new slot map says.
            log.info("feature store: a slot moved; refreshing the slot map")
            await asyncio.sleep(_REDIRECT_PAUSE_S * 2**attempt)
            await self._nodes.refresh()
            calls = regroup(batch, failed, self._nodes)
        raise AssertionError("unreachable")

    async def _read(self, batch: Plan, node: Hashable, call: NodeCall) -> _Read | None:
        """Read the node's states and append the batch's clicks to them; None when every
        click of the call was seen before (their stored rows are the features)."""
        work = _Work(batch, call)
        reply = await self._read_append(node, call, work)
        if reply[0] == 1:  # some clicks were seen before: their rows, then the rest afresh
            groups = call.groups()
            names = list(groups)
            row_of = {name: i for i, name in enumerate(call.names)}
            seen = []
            for j in range(1, len(reply), 3):
                group = names[int(reply[j]) - 1]
                row = row_of[(group, groups[group][int(reply[j + 1]) - 1])]
                batch.stored_row(call, row, decode_row(reply[j + 2]))
                seen.append(row)
            call = batch.without(call, seen)
            if not len(call.rows):
                return None
            work = _Work(batch, call)
            reply = await self._read_append(node, call, work)
            if reply[0] == 1:
                raise TryAgainError("rows appeared while the batch was resent")
        return _Read(node, call, work, reply[1:])

    def _counted(self, batch: Plan, reads: list[_Read]) -> list[tuple[list[str], Args]]:
        """Count the clicks of every read (into ``batch.values``); each read's commit
        arguments: its feature rows, then its compactions."""
        compactions: list[_Compactions] = [[] for _ in reads]
        parts, owners = [], []
        for k, kind in enumerate(batch.layout.kinds):
            mine = [(i, r.work.kinds[k]) for i, r in enumerate(reads) if k in r.work.kinds]
            if not mine:
                continue
            sizes = [len(w.entities) for _, w in mine]
            offsets = np.cumsum([0, *sizes])
            parts.append(
                Part(
                    kind,
                    [
                        s
                        for i, w in mine
                        for s in map(reads[i].states.__getitem__, w.index.tolist())
                    ],
                    np.concatenate([w.owner + o for (_, w), o in zip(mine, offsets, strict=False)]),
                    np.concatenate([w.records for _, w in mine]),
                )
            )
            owners.append(
                (
                    k,
                    np.concatenate([w.positions for _, w in mine]),
                    np.concatenate([w.index for _, w in mine]),
                    np.repeat([i for i, _ in mine], sizes),
                )
            )
        if not parts:
            return [self._commit_args(batch, r, []) for r in reads]
        counted = count(parts)
        for (k, positions, index, read_of), values, bases in zip(
            owners, counted.values, counted.bases, strict=True
        ):
            batch.values[k][positions] = values
            for i, base in bases.items():
                r, j = int(read_of[i]), int(index[i])  # j: the entity's place in the read
                state = reads[r].states[j]
                read, _ = split_state(state)
                folded = len(state or b"\0\0") + len(reads[r].work.logs[j])
                key = batch.keys[int(reads[r].call.entities[j])]
                compactions[r].append((key, read, folded, base))
        return [self._commit_args(batch, r, c) for r, c in zip(reads, compactions, strict=True)]

    def _commit_args(
        self, batch: Plan, read: _Read, compactions: _Compactions
    ) -> tuple[list[str], Args]:
        """The commit's row hashes, and its argument: the feature rows, then the compactions."""
        rows, names = batch.encoded_rows(read.call), read.call.names
        args = Args()
        args.add(self._row_ttl_ms, ENTITY_TTL_S * 1000)
        for which in read.call.by_group.values():
            args.add(len(which))
            args.pairs([names[i][1] for i in which], [rows[i] for i in which])
        for key, read_base, folded, base in compactions:
            args.add(key)
            args.blobs([read_base])
            args.add(folded)
            args.blobs([base])
        return list(read.call.by_group), args

    async def _commit(self, node: Hashable, keys: list[str], args: Args) -> None:
        self.round_trips += 1
        await self._nodes.evalsha(node, script("commit.lua"), keys, [args.packed()])

    async def _read_append(self, node: Hashable, call: NodeCall, work: _Work) -> list[Any]:
        groups = call.groups()
        args = Args()
        args.add(len(work.keys), ENTITY_TTL_S * 1000)
        args.extend(work.keys)
        args.blobs(work.logs)
        for fields in groups.values():
            args.add(len(fields))
            args.extend(fields)
        self.round_trips += 1
        reply: list[Any] = await self._nodes.evalsha(
            node, script("read_append.lua"), list(groups), [args.packed()]
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
class _Kind:
    """A call's new clicks of one kind (see ``Plan.records``): its entities of the kind (plan
    ids) and their places in the call, and each click's entity (an index into them), batch
    position and log record."""

    entities: Ints
    index: Ints
    owner: Ints
    positions: Ints
    records: npt.NDArray[np.void]


class _Work:
    """A call's new clicks per kind, and the log records to append to each of its entities,
    encoded, in the order the scripts see the entities."""

    def __init__(self, batch: Plan, call: NodeCall) -> None:
        self.kinds: dict[int, _Kind] = {}
        self.logs = [b""] * len(call.entities)
        for k in np.unique(batch.kinds[call.entities]).tolist():
            entities, owner, positions, records = batch.records(call, k)
            index = np.searchsorted(call.entities, entities)
            self.kinds[k] = _Kind(entities, index, owner, positions, records)
            raw = records.tobytes()
            size = records.dtype.itemsize
            ends = (np.cumsum(np.bincount(owner, minlength=len(entities))) * size).tolist()
            for j, a, b in zip(index.tolist(), [0, *ends[:-1]], ends, strict=True):
                self.logs[j] = raw[a:b]
        self.keys = [batch.keys[e] for e in call.entities.tolist()]


@dataclass
class _Read:
    """A node's states, read (and appended to) for a call, in the order of its entities."""

    node: Hashable
    call: NodeCall
    work: _Work
    states: list[bytes | None]


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
