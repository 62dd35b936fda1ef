"""The decision cache: a click decided again within the redelivery horizon gets the decision
it got the first time, byte for byte.

A click is decided again when its offset was not committed before a worker died or its
partition moved (Kafka delivers at least once). The row cache already gives it the same
features; this gives it the same decision even when the model, the calibration or Redis's and
Triton's health changed in between. The first decision stored wins (``HSETNX``), so two workers
overlapping in a rebalance publish the same one. Keys: docs/redis-keys.md.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from collections.abc import Hashable, Sequence
from datetime import datetime

from redis.exceptions import RedisError

from slidr.errors import SlidrError
from slidr.settings import RedisSettings
from streams.feature_store.nodes import Nodes, connect
from streams.feature_store.script import script

log = logging.getLogger(__name__)

#: Hashes per event minute: spreads a busy minute over the nodes of a cluster.
BUCKETS = 64


class DecisionCacheUnavailable(SlidrError):
    """Redis did not take the batch's decisions: they are published as decided (a later
    duplicate is ordered by ``slidr.events.final_order``)."""


def decision_key(prefix: str, click_id: str, event_time: datetime) -> str:
    """The hash that holds a click's decision: its bucket (CRC-32 of the click_id, the same in
    every process) and its event minute, so a redelivery finds it without a lookup table."""
    bucket = zlib.crc32(click_id.encode()) % BUCKETS
    return f"{prefix}d:{{d{bucket}}}:{int(event_time.timestamp()) // 60}"


class DecisionCache:
    """Decisions of the last ``row_horizon_s`` (the redelivery horizon, shared with the row
    cache) on one Redis node or a Redis Cluster; one script call per node per batch."""

    def __init__(
        self, settings: RedisSettings, *, timeout_s: float = 1.0, nodes: Nodes | None = None
    ) -> None:
        self._prefix = settings.key_prefix
        self._ttl_ms = settings.row_horizon_s * 1000
        self._nodes = nodes if nodes is not None else connect(settings, timeout_s)
        self._stale = False

    async def claim(
        self, click_ids: Sequence[str], event_times: Sequence[datetime], payloads: list[bytes]
    ) -> int:
        """Store each click's decision unless it has one; where it has, put that one in
        ``payloads`` instead. Returns how many were replaced."""
        if not payloads:
            return 0
        try:
            if self._stale:
                await self._nodes.refresh()
                self._stale = False
            await self._nodes.ready()
            calls = self._calls(click_ids, event_times)
            replaced = 0
            for node, by_key in calls.items():
                replaced += await self._claim(node, by_key, click_ids, payloads)
        except RedisError as exc:
            self._stale = True  # a node may be gone or a slot moved: learn the map again
            raise DecisionCacheUnavailable(
                f"the decision cache did not answer ({type(exc).__name__}: {exc})"
            ) from exc
        return replaced

    def _calls(
        self, click_ids: Sequence[str], event_times: Sequence[datetime]
    ) -> dict[Hashable, dict[str, list[int]]]:
        """Per node, per hash: the places of the clicks it holds."""
        calls: dict[Hashable, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        node_of: dict[str, Hashable] = {}
        for k, (click_id, at) in enumerate(zip(click_ids, event_times, strict=True)):
            key = decision_key(self._prefix, click_id, at)
            node = node_of.get(key)
            if node is None:
                node = node_of[key] = self._nodes.node_of(key)
            calls[node][key].append(k)
        return calls

    async def _claim(
        self,
        node: Hashable,
        by_key: dict[str, list[int]],
        click_ids: Sequence[str],
        payloads: list[bytes],
    ) -> int:
        args: list[bytes | str | int] = [self._ttl_ms]
        places: list[int] = []
        for key, ks in by_key.items():
            args += (key, len(ks))
            for k in ks:
                args += (click_ids[k], payloads[k])
            places += ks
        reply = await self._nodes.evalsha(node, script("claim.lua"), [], args)
        for j in range(0, len(reply), 2):
            payloads[places[int(reply[j]) - 1]] = bytes(reply[j + 1])
        return len(reply) // 2

    async def aclose(self) -> None:
        await self._nodes.aclose()
