"""The original decisions of replayed clicks, found on the decisions topic by source offset.

The live worker logs each click's feature vector with its decision, together with the click's
partition and offset. Decisions are published after their click was written, so the scan
starts at the earliest click's timestamp (less the allowed clock skew) and reads forward.

The index reads lazily: a look-up of click offsets reads decisions until, in every decisions
partition, a decision of a later click of the same clicks partition has been seen. The worker
publishes a partition's decisions in offset order (redeliveries repeat earlier ones), so by
then every decision of the looked-up clicks has been read; only clicks not yet looked up are
kept, so memory stays bounded by that look-ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from confluent_kafka import KafkaError, TopicPartition

from replay.errors import ReplayError
from replay.ranges import PartitionRange, TopicOffsets, reader_consumer
from slidr.features import FEATURE_HASH, N_FEATURES
from slidr.settings import Settings

_FETCH = 10_000
_FETCH_WAIT_S = 0.05

Key = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Original:
    """What a replay needs of an original decision."""

    click_id: str
    invalid: bool
    degraded: bool
    #: The logged vector, None when the decision has none of the current feature list.
    features: list[float] | None


def _merge(old: Original | None, new: Original) -> Original:
    """Billing keeps a click's last decision; any copy's logged vector is the same one."""
    if old is None or new.features is not None:
        return new
    return Original(new.click_id, new.invalid, new.degraded, old.features)


class OriginalDecisions:
    """Original decisions of the clicks in ``ranges``, read forward from ``start_ms``; uses a
    consumer of its own, closed by :meth:`close`."""

    def __init__(self, settings: Settings, ranges: Sequence[PartitionRange], start_ms: int) -> None:
        self.consumer = consumer = reader_consumer(settings, "originals")
        self.topic = decisions_topic = settings.topics.decisions
        self._ranges = {r.partition: r for r in ranges}
        view = TopicOffsets(consumer, decisions_topic)
        try:
            partitions = view.partitions()
            starts = view.offsets_at(start_ms, partitions)
            ends = {p: view.watermarks(p)[1] - 1 for p in partitions}
        except BaseException:
            consumer.close()
            raise
        #: Per decisions partition: last offset to read (the end as of the start of the run).
        self._ends = ends
        self._open = {p for p in partitions if starts[p] <= self._ends[p]}
        #: Per decisions partition and clicks partition: the highest click offset seen.
        self._seen: dict[int, dict[int, int]] = {p: {} for p in partitions}
        #: Per clicks partition: the highest offset already looked up (later copies are dropped).
        self._done: dict[int, int] = {p: r.first - 1 for p, r in self._ranges.items()}
        self._found: dict[Key, Original] = {}
        self.scanned = 0
        if self._open:
            consumer.assign([TopicPartition(decisions_topic, p, starts[p]) for p in self._open])

    async def lookup(self, keys: Sequence[Key]) -> list[Original | None]:
        """The original decision of each (clicks partition, offset), None where there is none."""
        wanted: dict[int, int] = {}
        for partition, offset in keys:
            wanted[partition] = max(offset, wanted.get(partition, -1))
        while self._open and not self._covered(wanted):
            await self._read()
        for partition, offset in wanted.items():
            self._done[partition] = max(self._done[partition], offset)
        return [self._found.pop(key, None) for key in keys]

    def close(self) -> None:
        self.consumer.close()

    def _covered(self, wanted: Mapping[int, int]) -> bool:
        return all(
            self._seen[d].get(partition, -1) > offset
            for d in self._open
            for partition, offset in wanted.items()
        )

    async def _read(self) -> None:
        batch = await asyncio.to_thread(self.consumer.consume, _FETCH, _FETCH_WAIT_S)
        for msg in batch:
            d, error, value = msg.partition(), msg.error(), msg.value()
            if d is None or d not in self._open:
                continue
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise ReplayError(f"reading {self.topic}/{d} failed: {error}")
                self._open.discard(d)
                continue
            offset = msg.offset()
            if offset is not None and offset >= self._ends[d]:
                self._open.discard(d)
            if value is not None:
                self._index(d, value)

    def _index(self, d: int, value: bytes) -> None:
        self.scanned += 1
        try:
            decision = orjson.loads(value)
            partition, offset = decision["source_partition"], decision["source_offset"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # not a decision this code wrote; nothing to reuse
        if partition is None or offset is None:
            return
        seen = self._seen[d]
        if offset > seen.get(partition, -1):
            seen[partition] = offset
        r = self._ranges.get(partition)
        if r is None or not (self._done[partition] < offset <= r.last):
            return
        features = decision.get("features")
        usable = (
            isinstance(features, list)
            and len(features) == N_FEATURES
            and decision.get("feature_hash") == FEATURE_HASH
        )
        key = (partition, offset)
        self._found[key] = _merge(
            self._found.get(key),
            Original(
                click_id=str(decision.get("click_id")),
                invalid=decision.get("verdict") == "invalid",
                degraded=bool(decision.get("degraded")),
                features=features if usable else None,
            ),
        )
