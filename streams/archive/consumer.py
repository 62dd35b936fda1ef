"""Kafka clicks, purchases and decisions -> the Parquet archive, exactly once per event.

Offsets live in the archive (see :mod:`streams.archive.store`), not in a consumer group: every
partition of each topic is assigned explicitly and resumed from its commit marker, so a restart
after a crash neither loses nor repeats an event. The consumer group only receives the same
offsets so that lag dashboards see the archiver; nothing reads them back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from slidr.archive import ARCHIVED, CLICKS, DECISIONS, PURCHASES, ArchiveError
from slidr.errors import InvalidEvent
from slidr.events import (
    Decision,
    decode_object,
    parse_click_message,
    parse_purchase,
    validate,
)
from slidr.kafka_config import client_config
from slidr.settings import Settings
from slidr.stack.service import kafka_reachable
from streams.archive.store import (
    Segment,
    commit,
    committed_offset,
    discard_uncommitted,
    exclusive,
    write_segment,
)
from streams.archive.tables import Event, hour_tables

log = logging.getLogger(__name__)

#: Archived history may be of any age; the worker's age limit is about live traffic.
_ANY_AGE_DAYS = 36_500
_POLL_S = 0.2
_BATCH = 1000


@dataclass
class DatasetStats:
    """What one run archived of one dataset."""

    topic: str
    rows: int = 0
    skipped: int = 0
    files: int = 0
    #: Partition -> the next offset to archive, as committed.
    next_offsets: dict[int, int] = field(default_factory=dict)


@dataclass
class _Pending:
    """Messages of one topic-partition read since its last commit."""

    dataset: str
    first: int
    next: int
    events: list[Event] = field(default_factory=list)


#: A parser of one message (value, key): an event, or InvalidEvent and never another error, so
#: that one bad message is skipped instead of stopping the archiver at its offset for good.
Parser = Callable[[bytes | None, bytes | None], Event]


def _parse_decision(value: bytes | None, _key: bytes | None) -> Decision:
    # Decisions are ours: no size or age limit, the contract only.
    return validate(Decision, decode_object(value))


class Archiver:
    """Reads the datasets' topics from the archive's offsets and appends them to the archive."""

    def __init__(
        self, settings: Settings, root: Path | None = None, datasets: Sequence[str] = ARCHIVED
    ) -> None:
        self.settings = settings
        self.root = root or settings.archive.root
        self._dataset_of = {getattr(settings.topics, name): name for name in datasets}
        if len(self._dataset_of) != len(datasets):
            raise ArchiveError("two datasets read the same topic: give each its own topic")
        limits = settings.events.model_copy(update={"max_age_days": _ANY_AGE_DAYS})
        self._parsers: dict[str, Parser] = {
            CLICKS: lambda value, key: parse_click_message(value, key, limits),
            PURCHASES: lambda value, _key: parse_purchase(value, limits),
            DECISIONS: _parse_decision,
        }
        self.stats = {name: DatasetStats(getattr(settings.topics, name)) for name in datasets}
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._buffered = 0
        self._flushed_at = time.monotonic()

    def run(
        self, stop: threading.Event, until_idle_s: float | None = None
    ) -> dict[str, DatasetStats]:
        """Archive until ``stop`` is set or, with ``until_idle_s``, until every partition was
        read to its end and nothing new arrived for that long; flush and commit before returning.
        """
        kafka = self.settings.kafka
        with exclusive(self.root):
            if not kafka_reachable(kafka):
                raise ArchiveError(f"no Kafka broker at {kafka.bootstrap}: run `slidr stack up`")
            consumer = Consumer(
                client_config(
                    kafka,
                    {
                        "group.id": self.settings.archive.consumer_group,
                        "enable.auto.commit": False,
                        "enable.partition.eof": True,
                        "auto.offset.reset": "earliest",
                    },
                )
            )
            try:
                consumer.assign(self._resume(consumer))
                self._follow(consumer, stop, until_idle_s)
                self._flush(consumer)
            finally:
                consumer.close()
        return self.stats

    def _resume(self, consumer: Consumer) -> list[TopicPartition]:
        """Drop what a crashed run left uncommitted; start each partition at its marker."""
        try:
            metadata = consumer.list_topics(timeout=10)
        except KafkaException as exc:
            raise ArchiveError(f"cannot list the Kafka topics: {exc}") from None
        assignment = []
        for topic, dataset in self._dataset_of.items():
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise ArchiveError(f"topic {topic} does not exist: create it with `slidr topics`")
            committed = {p: committed_offset(self.root, topic, p) for p in meta.partitions}
            discard_uncommitted(
                self.root, dataset, topic, {p: c or 0 for p, c in committed.items()}
            )
            for partition, done in sorted(committed.items()):
                start = self._start_offset(consumer, topic, partition, done)
                self._pending[(topic, partition)] = _Pending(dataset, start, start)
                self.stats[dataset].next_offsets[partition] = start
                assignment.append(TopicPartition(topic, partition, start))
        return assignment

    def _start_offset(
        self, consumer: Consumer, topic: str, partition: int, done: int | None
    ) -> int:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if done is None:
            return low
        if done > high:
            raise ArchiveError(
                f"{topic}[{partition}] ends at offset {high} but {self.root} holds it up to "
                f"{done}: the topic was recreated; archive it to a new --root"
            )
        if done < low:
            log.warning(
                "%s[%d]: offsets %d..%d expired from Kafka before they were archived",
                topic, partition, done, low - 1,
            )  # fmt: skip
            return low
        return done

    def _follow(
        self, consumer: Consumer, stop: threading.Event, until_idle_s: float | None
    ) -> None:
        at_end: set[tuple[str | None, int | None]] = set()
        last_message = time.monotonic()
        while not stop.is_set():
            for msg in consumer.consume(_BATCH, timeout=_POLL_S):
                where = (msg.topic(), msg.partition())
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(where)
                    elif error.fatal():
                        raise ArchiveError(f"Kafka consumer failed: {error.str()}")
                    else:
                        log.warning("Kafka: %s", error.str())
                    continue
                at_end.discard(where)
                last_message = time.monotonic()
                self._take(msg)
                if self._buffered >= self.settings.archive.flush_rows:
                    self._flush(consumer)
            now = time.monotonic()
            if now - self._flushed_at >= self.settings.archive.flush_every_s:
                self._flush(consumer)
            if (
                until_idle_s is not None
                and len(at_end) == len(self._pending)
                and now - last_message >= until_idle_s
            ):
                return

    def _take(self, msg: Message) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        pending = self._pending[(topic, partition)]
        if offset < pending.next:  # only a recreated topic rewinds an assigned partition
            raise ArchiveError(
                f"{topic}[{partition}] went back from offset {pending.next} to {offset}: the "
                "topic was recreated; archive it to a new --root"
            )
        pending.next = offset + 1
        try:
            event = self._parsers[pending.dataset](msg.value(), msg.key())
        except InvalidEvent as exc:
            self.stats[pending.dataset].skipped += 1
            log.warning("not archived: %s[%d]@%d: %s", topic, partition, offset, exc)
            return
        pending.events.append(event)
        self._buffered += 1

    def _flush(self, consumer: Consumer) -> None:
        """Write every partition's new segment, then commit its marker; one log line."""
        self._flushed_at = time.monotonic()
        done: list[TopicPartition] = []
        notes: list[str] = []
        for (topic, partition), pending in self._pending.items():
            if pending.next == pending.first:
                continue
            stats = self.stats[pending.dataset]
            segment = Segment(topic, partition, pending.first, pending.next - 1)
            tables = hour_tables(pending.dataset, pending.events)
            stats.files += len(write_segment(self.root, pending.dataset, segment, tables))
            commit(self.root, topic, partition, pending.next)
            stats.rows += len(pending.events)
            stats.next_offsets[partition] = pending.next
            notes.append(f"{topic}[{partition}] +{len(pending.events)} -> {pending.next}")
            done.append(TopicPartition(topic, partition, pending.next))
            pending.first, pending.events = pending.next, []
        self._buffered = 0
        if done:
            consumer.commit(offsets=done, asynchronous=True)  # for lag dashboards only
            log.info("archived %s", ", ".join(notes))
