"""One micro-batch of raw click messages in, decisions and dead letters out.

No Kafka here: the Faust agent (streams/app.py) feeds batches and publishes the outcome, so
this logic is tested without a broker.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from slidr.errors import InvalidEvent
from slidr.events import Click, DeadLetter, DeadLetterReason, Decision, Verdict, parse_click
from slidr.settings import Settings
from streams.decide import BatchContext, decide, fail_open
from streams.feature_store import FeatureStore, FeatureStoreUnavailable
from streams.metrics import WorkerMetrics
from streams.scorer import ScorerUnavailable
from streams.serving_model import ServingModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawClick:
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None
    #: The Kafka message timestamp, for click-to-decision latency.
    timestamp_ms: int | None = None


@dataclass
class BatchOutcome:
    decisions: list[Decision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    degraded_why: str | None = None


class DegradedRanges:
    """Remembers which offsets were decided fail-open, and logs them when health returns,
    so on-call can replay exactly that range (decisions also carry degraded=true)."""

    def __init__(self) -> None:
        self.open: dict[int, tuple[int, int]] = {}
        self.why: str | None = None

    def add(self, why: str, offsets: Sequence[tuple[int | None, int | None]]) -> None:
        if self.why is None:
            log.warning("failing open: %s; decisions are valid and marked degraded", why)
        self.why = why
        for partition, offset in offsets:
            if partition is None or offset is None:
                continue
            first, last = self.open.get(partition, (offset, offset))
            self.open[partition] = (min(first, offset), max(last, offset))

    def close(self) -> dict[int, tuple[int, int]]:
        closed, self.open, self.why = self.open, {}, None
        for partition, (first, last) in sorted(closed.items()):
            log.warning(
                "recovered; degraded range to replay: partition %d offsets %d-%d",
                partition, first, last,
            )  # fmt: skip
        return closed


class ClickPipeline:
    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        model: ServingModel,
        metrics: WorkerMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.metrics = metrics
        self.degraded = DegradedRanges()

    def _parse(
        self, batch: Sequence[RawClick], now: datetime
    ) -> tuple[list[RawClick], list[Click], list[DeadLetter]]:
        accepted: list[RawClick] = []
        clicks: list[Click] = []
        dead: list[DeadLetter] = []
        limits = self.settings.events
        for raw in batch:
            try:
                clicks.append(parse_click(raw.value, limits, now))
                accepted.append(raw)
            except InvalidEvent as exc:
                dead.append(self._dead_letter(raw, DeadLetterReason(exc.reason), exc.detail, now))
        return accepted, clicks, dead

    def _dead_letter(
        self, raw: RawClick, reason: DeadLetterReason, detail: str, now: datetime
    ) -> DeadLetter:
        self.metrics.dead_letters.labels(reason.value).inc()
        return DeadLetter(
            reason=reason,
            detail=detail[:1000],
            source_topic=self.settings.topics.clicks,
            source_partition=raw.partition,
            source_offset=raw.offset,
            original_key=raw.key.decode("utf-8", errors="replace") if raw.key else None,
            original_b64=base64.b64encode(raw.value).decode(),
            received_at=now,
        )

    async def process(self, batch: Sequence[RawClick]) -> BatchOutcome:
        started = time.perf_counter()
        now = datetime.now(UTC)
        accepted, clicks, dead = self._parse(batch, now)
        outcome = BatchOutcome(dead_letters=dead)
        if not clicks:
            return outcome
        offsets = [(raw.partition, raw.offset) for raw in accepted]
        model = await self.model.current()
        features = None
        try:
            t0 = time.perf_counter()
            features = await self.store.features(clicks)
            t1 = time.perf_counter()
            scores = await self.model.scorer.score(features, model.version)
            t2 = time.perf_counter()
        except (FeatureStoreUnavailable, ScorerUnavailable) as exc:
            why = (
                "redis_unavailable"
                if isinstance(exc, FeatureStoreUnavailable)
                else ("triton_unavailable")
            )
            self.degraded.add(why, offsets)
            self.metrics.degraded.labels(why).inc(len(clicks))
            outcome.degraded_why = why
            ctx = BatchContext(model, now, (time.perf_counter() - started) * 1000)
            outcome.decisions = fail_open(clicks, features, why, ctx, offsets)
        else:
            self.metrics.feature_seconds.observe(t1 - t0)
            self.metrics.inference_seconds.observe(t2 - t1)
            if self.degraded.why is not None:
                self.degraded.close()
            ctx = BatchContext(model, now, (time.perf_counter() - started) * 1000)
            outcome.decisions = decide(clicks, features, scores, ctx, offsets)
        self._count(outcome.decisions, accepted)
        return outcome

    def _count(self, decisions: Sequence[Decision], accepted: Sequence[RawClick]) -> None:
        per_slice: Counter[tuple[str, str]] = Counter((d.slice, d.verdict) for d in decisions)
        for (slice_name, verdict), n in per_slice.items():
            self.metrics.clicks.labels(slice_name, str(verdict)).inc(n)
        for slice_name in {s for s, _ in per_slice}:
            total = (
                per_slice[(slice_name, Verdict.VALID)] + per_slice[(slice_name, Verdict.INVALID)]
            )
            self.metrics.invalidation_rate.labels(slice_name).set(
                per_slice[(slice_name, Verdict.INVALID)] / total
            )
        now_ms = time.time() * 1000
        stamps = np.asarray([r.timestamp_ms for r in accepted if r.timestamp_ms], dtype=float)
        for latency in (now_ms - stamps) / 1000:
            self.metrics.click_to_decision_seconds.observe(max(latency, 0.0))
