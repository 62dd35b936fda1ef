"""Turn a request's offsets or times into checked per-partition offset ranges of a topic.

Look-ups go through a consumer that is only ever assigned partitions (never subscribed, never
committing), so nothing here moves any consumer group's offsets.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from replay.errors import ReplayRefused
from slidr.kafka_config import client_config
from slidr.replay_messages import ReplayRequest
from slidr.settings import Settings

_TIMEOUT_S = 10.0


@dataclass(frozen=True, order=True)
class PartitionRange:
    """Offsets ``first`` to ``last`` of one partition, both included."""

    partition: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.partition}:{self.first}-{self.last}"


def reader_consumer(settings: Settings, purpose: str) -> Consumer:
    """A consumer for assign() and seek only: a throw-away group id, no commits."""
    return Consumer(
        client_config(
            settings.kafka,
            {
                "group.id": f"slidr-replay-{purpose}-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                # Replays read fast and far: larger fetches than the defaults (1 MB a partition).
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
            },
        )
    )


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class TopicOffsets:
    """Watermarks, offsets by time and message timestamps of one topic."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic

    def partitions(self) -> list[int]:
        try:
            meta = self.consumer.list_topics(self.topic, timeout=_TIMEOUT_S).topics[self.topic]
        except KafkaException as exc:
            raise ReplayRefused(f"cannot read topic {self.topic}: {exc}") from exc
        if meta.error is not None or not meta.partitions:
            raise ReplayRefused(
                f"topic {self.topic} does not exist: check the SLIDR_TOPICS__* settings or run "
                "`slidr stack up`"
            )
        return sorted(meta.partitions)

    def watermarks(self, partition: int) -> tuple[int, int]:
        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=_TIMEOUT_S
        )
        return int(low), int(high)

    def offsets_at(self, when_ms: int, partitions: Iterable[int]) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after ``when_ms``; the end
        offset (high watermark) where there is none."""
        asked = [TopicPartition(self.topic, p, when_ms) for p in partitions]
        found = self.consumer.offsets_for_times(asked, timeout=_TIMEOUT_S)
        out = {}
        for tp in found:
            out[tp.partition] = (
                self.watermarks(tp.partition)[1] if tp.offset in (-1, OFFSET_END) else tp.offset
            )
        return out

    def timestamp_at(self, partition: int, offset: int) -> int:
        """The timestamp (ms) of the message at ``offset``, which must exist."""
        self.consumer.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + _TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                msg = self.consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                return int(msg.timestamp()[1])
        finally:
            self.consumer.unassign()
        raise ReplayRefused(f"could not read offset {offset} of {self.topic}/{partition}")


def check_offsets(
    ranges: Sequence[PartitionRange], watermarks: Mapping[int, tuple[int, int]], topic: str
) -> None:
    """Refuse ranges outside what the topic holds, with what it does hold."""
    for r in ranges:
        if r.partition not in watermarks:
            raise ReplayRefused(
                f"{topic} has no partition {r.partition} (it has {sorted(watermarks)})"
            )
        low, high = watermarks[r.partition]
        held = f"it holds offsets {low}-{high - 1}" if high > low else "it is empty"
        if r.first < low:
            raise ReplayRefused(
                f"offset {r.first} of {topic}/{r.partition} is out of retention ({held}); "
                "start the range later"
            )
        if r.last >= high:
            raise ReplayRefused(
                f"offset {r.last} of {topic}/{r.partition} is not written yet ({held}); "
                "end the range earlier"
            )


def check_size(ranges: Sequence[PartitionRange], max_clicks: int, force: bool, what: str) -> int:
    """The number of clicks; refuse none, and more than ``max_clicks`` without force."""
    total = sum(r.size for r in ranges)
    if total == 0:
        raise ReplayRefused(f"{what} holds no clicks: nothing to replay")
    if total > max_clicks and not force:
        raise ReplayRefused(
            f"{what} holds {total:,} clicks, over the limit of {max_clicks:,} "
            "(SLIDR_REPLAY__MAX_CLICKS): narrow the range or pass --force"
        )
    return total


def _describe(request: ReplayRequest) -> str:
    if request.from_time is not None and request.to_time is not None:
        return f"{request.from_time.isoformat()} .. {request.to_time.isoformat()}"
    return "the offset range"


def resolve_ranges(
    request: ReplayRequest, offsets: TopicOffsets, max_clicks: int
) -> list[PartitionRange]:
    """The request as checked offset ranges (time ranges: [from_time, to_time))."""
    partitions = offsets.partitions()
    marks = {p: offsets.watermarks(p) for p in partitions}
    if request.from_time is None or request.to_time is None:
        assert request.from_offsets is not None and request.to_offsets is not None
        ranges = [
            PartitionRange(p, first, request.to_offsets[p])
            for p, first in sorted(request.from_offsets.items())
        ]
        check_offsets(ranges, marks, offsets.topic)
    else:
        from_ms, to_ms = _ms(request.from_time), _ms(request.to_time)
        firsts = offsets.offsets_at(from_ms, partitions)
        ends = offsets.offsets_at(to_ms, partitions)
        ranges = [PartitionRange(p, firsts[p], ends[p] - 1) for p in partitions]
        ranges = [r for r in ranges if r.size > 0]
        for r in ranges:
            low = marks[r.partition][0]
            if r.first != low or low == 0:
                continue
            oldest_ms = offsets.timestamp_at(r.partition, low)
            if oldest_ms > from_ms:
                oldest = datetime.fromtimestamp(oldest_ms / 1000, UTC)
                raise ReplayRefused(
                    f"{request.from_time.isoformat()} is out of retention on "
                    f"{offsets.topic}/{r.partition} (oldest click kept: {oldest.isoformat()}); "
                    "start the range later"
                )
    check_size(ranges, max_clicks, request.force, _describe(request))
    return ranges
