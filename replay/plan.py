"""Everything a replay decides before it reads a click: the checks, the run id, what to read.

Refusals (:class:`~replay.errors.ReplayRefused`) happen here, before anything is published: a
range out of retention, not written yet, empty or too large without force; a model version
that is not in the registry (or was retired or refused), or was trained on other features; a
counters namespace that could touch the live counters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException

from replay.checkpoint import Checkpoint, checkpoint_path, resumable, run_revision
from replay.errors import ReplayError, ReplayRefused
from replay.ranges import PartitionRange, TopicOffsets, reader_consumer, resolve_ranges
from replay.reader import Span
from replay.request import derive_run_id
from slidr.errors import SlidrError
from slidr.model_record import ModelRecord, load_record, versions
from slidr.registry import Registry, State
from slidr.replay_messages import FeatureMode, ReplayRequest
from slidr.settings import RedisSettings, Settings

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class ReplayPlan:
    request: ReplayRequest
    run_id: str
    #: The revision its decisions carry: they supersede the live ones and earlier replays'.
    revision: int
    record: ModelRecord
    clicks_topic: str
    #: The clicks replayed, as asked.
    ranges: tuple[PartitionRange, ...]
    #: What is read: the ranges (from the checkpoint on, when resuming) and, when recomputing,
    #: every partition's warm-up and context.
    spans: tuple[Span, ...]
    #: The checkpoint resumed from, if any.
    resumed: Checkpoint | None
    #: Where the scan for the original decisions starts (ms), when they are needed.
    originals_from_ms: int | None
    notes: tuple[str, ...] = field(default=())

    @property
    def mode(self) -> FeatureMode:
        return self.request.features

    @property
    def to_publish(self) -> int:
        """Clicks left to replay in this pass."""
        return sum(s.end - s.publish_from + 1 for s in self.spans if s.publishes)


def pinned_record(settings: Settings, version: int) -> ModelRecord:
    """The pinned version's record (its own calibration); refuse what may not be replayed."""
    t = settings.triton
    if version not in versions(t.model_repository, t.model_name):
        known = ", ".join(map(str, versions(t.model_repository, t.model_name))) or "none"
        raise ReplayRefused(
            f"model {t.model_name!r} has no version {version} (on disk: {known}); "
            "pin a version of the registry (`slidr models`)"
        )
    try:
        record = load_record(
            t.model_repository, t.model_name, version, settings.worker.global_threshold
        )
        entry = Registry(settings).entry(version)
    except SlidrError as exc:
        raise ReplayRefused(str(exc)) from exc
    if entry.state in (State.RETIRED, State.REFUSED):
        raise ReplayRefused(
            f"version {version} of {t.model_name!r} is {entry.state.value}"
            f"{f' ({entry.reason})' if entry.reason else ''}; pin a candidate, serving or "
            "stable version"
        )
    return record


def counters_namespace(settings: Settings, run_id: str) -> RedisSettings:
    """The run's own Redis key prefix; refused if it could read or write live keys."""
    prefix = f"{settings.replay.redis_prefix}{run_id}:"
    live = settings.redis.key_prefix
    if prefix.startswith(live) or live.startswith(settings.replay.redis_prefix):
        raise ReplayRefused(
            f"the replay key prefix {settings.replay.redis_prefix!r} overlaps the live prefix "
            f"{live!r}: set SLIDR_REPLAY__REDIS_PREFIX to a prefix of its own"
        )
    return settings.redis.model_copy(update={"key_prefix": prefix})


def _spans(
    settings: Settings,
    request: ReplayRequest,
    ranges: tuple[PartitionRange, ...],
    resume: dict[int, int],
    offsets: TopicOffsets,
    first_ms: int,
) -> tuple[tuple[Span, ...], tuple[str, ...]]:
    publish = {r.partition: (resume.get(r.partition, r.first), r.last) for r in ranges}
    if request.features is FeatureMode.LOGGED:
        return tuple(Span(p, start, end, start) for p, (start, end) in publish.items()), ()
    # Counters are rebuilt from every partition's clicks since the warm-up start, merged in
    # time order, as the live pipeline saw them; only the ranges are published.
    warmup_ms = first_ms - int(settings.replay.warmup_h * _HOUR_MS)
    partitions = offsets.partitions()
    starts = offsets.offsets_at(warmup_ms, partitions)
    spans: list[Span] = []
    notes: list[str] = []
    for p in partitions:
        low, high = offsets.watermarks(p)
        first = min(starts[p], next((r.first for r in ranges if r.partition == p), starts[p]))
        if first == low and low > 0 and offsets.timestamp_at(p, low) > warmup_ms:
            notes.append(
                f"warm-up of partition {p} starts at its oldest kept click (offset {low}), "
                f"less than {settings.replay.warmup_h:g} h before the range"
            )
        start, end = publish.get(p, (high, high - 1))
        spans.append(Span(p, first, end, start))
    return tuple(spans), tuple(notes)


def plan_replay(settings: Settings, request: ReplayRequest) -> ReplayPlan:
    """Check the request and resolve it against the clicks topic (Kafka look-ups only)."""
    record = pinned_record(settings, request.model_version)
    consumer = reader_consumer(settings, "plan")
    try:
        return _plan(settings, request, record, consumer)
    except KafkaException as exc:
        raise ReplayError(
            f"Kafka at {settings.kafka.bootstrap} did not answer ({exc}); is it up?"
        ) from exc
    finally:
        consumer.close()


def _plan(
    settings: Settings, request: ReplayRequest, record: ModelRecord, consumer: Consumer
) -> ReplayPlan:
    clicks = settings.topics.clicks
    offsets = TopicOffsets(consumer, clicks)
    ranges = tuple(resolve_ranges(request, offsets, settings.replay.max_clicks))
    run_id = request.run_id or derive_run_id(
        record.name, record.version, request.features, clicks, ranges
    )
    if request.features is FeatureMode.RECOMPUTE:
        counters_namespace(settings, run_id)
    checkpoint = checkpoint_path(settings.state_dir, run_id)
    resumed = None if request.dry_run else resumable(checkpoint, ranges)
    resume = dict(resumed.next_offsets) if resumed else {}
    if all(resume.get(r.partition, r.first) > r.last for r in ranges):
        resumed, resume = None, {}  # interrupted after its last flush: start over
    first_ms = min(
        offsets.timestamp_at(r.partition, resume.get(r.partition, r.first))
        for r in ranges
        if resume.get(r.partition, r.first) <= r.last
    )
    spans, notes = _spans(settings, request, ranges, resume, offsets, first_ms)
    needs_originals = request.features is FeatureMode.LOGGED or request.dry_run
    skew_ms = settings.events.max_future_skew_s * 1000
    return ReplayPlan(
        request=request,
        run_id=run_id,
        revision=run_revision(checkpoint, time.time_ns() // 1_000_000),
        record=record,
        clicks_topic=clicks,
        ranges=ranges,
        spans=spans,
        resumed=resumed,
        originals_from_ms=first_ms - skew_ms if needs_originals else None,
        notes=notes,
    )
