"""Read offset spans of several partitions as one stream in message-timestamp order.

Clicks' message timestamps are their event times, so merging the partitions by timestamp feeds
the feature store in the order a healthy pipeline would have seen them (what makes recomputed
counters equal the live ones), and the decisions index a bounded look-ahead.

The consumer is assigned its partitions at explicit offsets: no group membership, no commits.
Blocking librdkafka calls run in a thread so an asyncio caller (the Faust agent) stays live.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from replay.errors import ReplayError

_FETCH = 10_000
_FETCH_WAIT_S = 0.05


@dataclass(frozen=True)
class Span:
    """Offsets ``start`` to ``end`` (included) of one partition. Those from ``publish_from``
    on are replayed; those before only feed the counters (warm-up, context)."""

    partition: int
    start: int
    end: int
    publish_from: int

    @property
    def publishes(self) -> bool:
        return self.publish_from <= self.end


class MergedReader:
    """Messages of every span, each span in offset order, merged by timestamp.

    A message is released once every unfinished partition has a message buffered, so the
    output is the timestamp merge of the partitions (exactly sorted when each partition is).
    A partition far ahead in time is paused at ``buffer_limit`` buffered messages.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        spans: Sequence[Span],
        chunk_size: int = 5000,
        buffer_limit: int = 50_000,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.chunk_size = chunk_size
        self.buffer_limit = buffer_limit
        self._end = {s.partition: s.end for s in spans if s.start <= s.end}
        self._publishing = {s.partition for s in spans if s.publishes and s.start <= s.end}
        self._buffers: dict[int, deque[Message]] = {p: deque() for p in self._end}
        self._eof: set[int] = set()
        self._paused: set[int] = set()
        self._heap: list[tuple[int, int, int, Message]] = []
        self._headed: set[int] = set()
        self._start = [
            TopicPartition(topic, s.partition, s.start) for s in spans if s.partition in self._end
        ]

    async def chunks(self) -> AsyncIterator[list[Message]]:
        """Lists of up to ``chunk_size`` messages until every publishing span is read."""
        if not self._publishing:
            return
        self.consumer.assign(self._start)
        out: list[Message] = []
        try:
            while self._publishing:
                if self._starving():
                    await self._fetch()
                    continue
                _, partition, offset, msg = heapq.heappop(self._heap)
                self._headed.discard(partition)
                out.append(msg)
                self._next_head(partition, offset)
                if len(out) >= self.chunk_size:
                    yield out
                    out = []
            if out:
                yield out
        finally:
            self.consumer.unassign()

    def _starving(self) -> bool:
        """An unfinished partition has nothing buffered: the merge cannot go on without it."""
        return len(self._headed) < len(self._end)

    def _finish(self, partition: int) -> None:
        self._end.pop(partition, None)
        self._publishing.discard(partition)
        self._buffers.pop(partition, None)

    def _next_head(self, partition: int, offset: int) -> None:
        if offset >= self._end[partition]:
            self._finish(partition)
            return
        buffer = self._buffers[partition]
        if buffer:
            self._push(buffer.popleft())
        elif partition in self._eof:
            self._finish(partition)
            return
        if partition in self._paused and len(buffer) < self.buffer_limit // 2:
            self.consumer.resume([TopicPartition(self.topic, partition)])
            self._paused.discard(partition)

    def _push(self, msg: Message) -> None:
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        heapq.heappush(self._heap, (msg.timestamp()[1], partition, offset, msg))
        self._headed.add(partition)

    async def _fetch(self) -> None:
        batch = await asyncio.to_thread(self.consumer.consume, _FETCH, _FETCH_WAIT_S)
        for msg in batch:
            partition = msg.partition()
            error = msg.error()
            if partition not in self._end:
                continue
            offset = msg.offset()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise ReplayError(f"reading {self.topic}/{partition} failed: {error}")
            if error is not None or (offset is not None and offset > self._end[partition]):
                # Nothing at or before the span's end is still to come (the end offset may
                # hold no message, e.g. a transaction marker).
                self._eof.add(partition)
                if not self._buffers[partition] and partition not in self._headed:
                    self._finish(partition)
                continue
            self._eof.discard(partition)
            if partition not in self._headed:
                self._push(msg)
            else:
                self._buffers[partition].append(msg)
        for partition, buffer in self._buffers.items():
            if len(buffer) >= self.buffer_limit and partition not in self._paused:
                self.consumer.pause([TopicPartition(self.topic, partition)])
                self._paused.add(partition)
