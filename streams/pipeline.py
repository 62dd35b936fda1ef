"""One micro-batch of raw click messages in, decisions and dead letters out.

No Kafka here: the Faust agent (streams/app.py) feeds batches and publishes the outcome, so
this logic is tested without a broker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from slidr.errors import InvalidEvent, SlidrError
from slidr.events import (
    GIVT_PREFIX,
    Click,
    DeadLetter,
    DeadLetterReason,
    DegradedReason,
    IvtCategory,
    Verdict,
    parse_click_message,
)
from slidr.model_record import ModelRecord
from slidr.settings import Settings
from streams.decide import DecidedBatch, DecisionColumns, Stamp, decide, fail_open
from streams.feature_store import FeatureStore, FeatureStoreUnavailable, RedisFeatureStore
from streams.feature_store.decisions import DecisionCache, DecisionCacheUnavailable
from streams.givt import GivtFilter
from streams.metrics import WorkerMetrics, observe_many
from streams.scorer import ModelUnavailable, ScorerUnavailable, TritonScorer
from streams.serving_model import ServingModel

log = logging.getLogger(__name__)

#: This many clicks in a row that cannot be decided even alone, none decided between them: the
#: failure is not about a message (a bug or a broken dependency). The worker then exits and the
#: clicks wait as lag, instead of all of them filling the dead-letter topic.
FAILED_IN_A_ROW_LIMIT = 50


class DecidingFails(SlidrError):
    """Every recent click failed to be decided: not a bad message; restart the worker."""


@dataclass(frozen=True)
class RawClick:
    #: None for a tombstone (a message with a null value).
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None
    #: The Kafka message timestamp, for click-to-decision latency.
    timestamp_ms: int | None = None


@dataclass
class BatchOutcome:
    #: Each decision's JSON (the Decision contract), and its key.
    decisions: list[bytes] = field(default_factory=list)
    click_ids: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    degraded_why: DegradedReason | None = None

    def add(self, decided: DecidedBatch) -> None:
        self.decisions += decided.payloads
        self.click_ids += decided.click_ids


def _reason(exc: InvalidEvent) -> DeadLetterReason:
    # The parsers raise only DeadLetterReason codes; an unknown one must not stop the stream.
    try:
        return DeadLetterReason(exc.reason)
    except ValueError:
        return DeadLetterReason.PARSE_FAILED


@dataclass(frozen=True)
class _Batch:
    """What the clicks of one micro-batch share, however they end up being decided."""

    record: ModelRecord
    now: datetime
    started: float

    def stamp(self) -> Stamp:
        return Stamp(self.record, self.now, (time.perf_counter() - self.started) * 1000)


class DegradedRanges:
    """Remembers which offsets were decided fail-open, and logs them when health returns,
    so on-call can replay exactly that range (decisions also carry degraded=true)."""

    def __init__(self) -> None:
        self.open: dict[int, tuple[int, int]] = {}
        self.why: DegradedReason | None = None

    def add(self, why: DegradedReason, offsets: Sequence[tuple[int | None, int | None]]) -> None:
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
        serving: ServingModel,
        metrics: WorkerMetrics,
        givt: GivtFilter | None = None,
        decisions: DecisionCache | None = None,
    ) -> None:
        self.settings = settings
        #: Gives a redelivered click its first decision (None: every delivery decides afresh).
        self.decisions = decisions
        #: GIVT lists, asked before the model (None: every click goes to the model).
        self.givt = givt
        self.store = store
        #: The model the worker scores with: follows the serving pointer, gives the current record.
        self.serving = serving
        self.metrics = metrics
        self.degraded = DegradedRanges()
        self.failed_in_a_row = 0

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        metrics: WorkerMetrics | None = None,
        givt: GivtFilter | None = None,
        *,
        triton_timeout_s: float | None = None,
    ) -> ClickPipeline:
        """The worker's pipeline on the services the settings name, its model loaded: what
        the worker runs, and what its start-up check builds (then closes) to refuse a model,
        a server or a Redis that does not fit before consuming anything."""
        w = settings.worker
        store = RedisFeatureStore(settings.redis, timeout_s=w.redis_timeout_s)
        scorer = TritonScorer(settings.triton, timeout_s=triton_timeout_s or w.triton_timeout_s)
        metrics = metrics or WorkerMetrics()
        serving = ServingModel(settings, scorer, metrics)
        decisions = (
            DecisionCache(settings.redis, timeout_s=w.redis_timeout_s) if w.decision_cache else None
        )
        pipeline = cls(settings, store, serving, metrics, givt, decisions)
        try:
            await serving.load()
        except BaseException:
            await pipeline.aclose()
            raise
        return pipeline

    async def aclose(self) -> None:
        await self.serving.scorer.aclose()
        await self.store.aclose()
        if self.decisions is not None:
            await self.decisions.aclose()

    def _parse(
        self, batch: Sequence[RawClick], now: datetime
    ) -> tuple[list[RawClick], list[Click], list[DeadLetter]]:
        accepted: list[RawClick] = []
        clicks: list[Click] = []
        dead: list[DeadLetter] = []
        limits = self.settings.events
        for raw in batch:
            try:
                clicks.append(parse_click_message(raw.value, raw.key, limits, now))
                accepted.append(raw)
            except InvalidEvent as exc:
                dead.append(self._dead_letter(raw, _reason(exc), exc.detail, now))
        return accepted, clicks, dead

    def _dead_letter(
        self, raw: RawClick, reason: DeadLetterReason, detail: str, now: datetime
    ) -> DeadLetter:
        self.metrics.dead_letters.labels(reason.value).inc()
        return DeadLetter.of(
            reason,
            detail,
            source_topic=self.settings.topics.clicks,
            source_partition=raw.partition,
            source_offset=raw.offset,
            key=raw.key,
            value=raw.value,
            received_at=now,
        )

    async def process(self, batch: Sequence[RawClick]) -> BatchOutcome:
        started = time.perf_counter()
        now = datetime.now(UTC)
        accepted, clicks, dead = self._parse(batch, now)
        outcome = BatchOutcome(dead_letters=dead)
        if not clicks:
            return outcome
        # Outside the per-click guard: the model is the same for every click of the batch.
        record = await self.serving.current()
        batch_ctx = _Batch(record, now, started)
        decided: list[DecidedBatch] = []
        try:
            decided.append(await self._decide(accepted, clicks, batch_ctx, outcome))
            self.failed_in_a_row = 0
        except Exception as exc:
            log.warning(
                "%d clicks could not be decided together (%s: %s); deciding each alone",
                len(clicks), type(exc).__name__, exc,
            )  # fmt: skip
            decided += await self._decide_alone(accepted, clicks, batch_ctx, outcome)
        for part in decided:
            await self._first_decisions(part)
            outcome.add(part)
        self._count(decided, accepted)
        return outcome

    async def _first_decisions(self, decided: DecidedBatch) -> None:
        """Replace the decision of each click decided before with that first decision."""
        if self.decisions is None:
            return
        try:
            repeated = await self.decisions.claim(
                decided.click_ids, decided.event_times, decided.payloads
            )
        except DecisionCacheUnavailable as exc:
            # Published as decided: a duplicate of a click decided before is then ordered by
            # the final-decision rule (slidr.events.final_order), never lost.
            log.warning("%s; publishing the batch's decisions as decided", exc)
            self.metrics.decision_cache_errors.inc()
            return
        if repeated:
            self.metrics.repeated_decisions.inc(repeated)

    async def _decide(
        self,
        accepted: Sequence[RawClick],
        clicks: Sequence[Click],
        batch: _Batch,
        outcome: BatchOutcome,
    ) -> DecidedBatch:
        """Decisions of ``clicks``, fail-open when Redis or Triton is unavailable; any other
        error is raised."""
        offsets = [(raw.partition, raw.offset) for raw in accepted]
        record = batch.record
        # GIVT first: those clicks are decided by their list, never scored. They still count in
        # the feature store (its counters see every click, as offline features and a replay do).
        t_givt = time.perf_counter()
        givt = self.givt.reasons(clicks) if self.givt is not None else [None] * len(clicks)
        self.metrics.givt_seconds.observe(time.perf_counter() - t_givt)
        to_score = [i for i, why in enumerate(givt) if why is None]
        features = None
        try:
            t0 = time.perf_counter()
            features = await self.store.features(clicks)
            t1 = time.perf_counter()
            scores = np.zeros(len(clicks), dtype=np.float32)
            if to_score:
                scores[to_score] = await self.serving.scorer.score(
                    features[to_score], record.version
                )
            t2 = time.perf_counter()
        except (FeatureStoreUnavailable, ScorerUnavailable) as exc:
            if isinstance(exc, ModelUnavailable):  # unloaded under us: follow the pointer
                self.serving.lost(record.version, str(exc))
            why = (
                DegradedReason.REDIS_UNAVAILABLE
                if isinstance(exc, FeatureStoreUnavailable)
                else DegradedReason.TRITON_UNAVAILABLE
            )
            self.degraded.add(why, [offsets[i] for i in to_score])
            self.metrics.degraded.labels(why).inc(len(to_score))
            outcome.degraded_why = why
            columns = DecisionColumns.of(clicks, record.slice_fields, offsets, features, givt)
            return fail_open(columns, why, batch.stamp())
        self.metrics.feature_seconds.observe(t1 - t0)
        self.metrics.inference_seconds.observe(t2 - t1)
        if self.degraded.why is not None:
            self.degraded.close()
        columns = DecisionColumns.of(clicks, record.slice_fields, offsets, features, givt)
        return decide(columns, scores, batch.stamp())

    async def _decide_alone(
        self,
        accepted: Sequence[RawClick],
        clicks: Sequence[Click],
        batch: _Batch,
        outcome: BatchOutcome,
    ) -> list[DecidedBatch]:
        """Each click that fails alone becomes a dead letter; the others are decided.

        Deciding a click again is safe: the feature store counts each click_id once.
        """
        decided = []
        for raw, click in zip(accepted, clicks, strict=True):
            try:
                decided.append(await self._decide([raw], [click], batch, outcome))
            except Exception as exc:
                log.error("click %s could not be decided", click.click_id, exc_info=True)
                self._failed(exc)
                why = f"{type(exc).__name__}: {exc}"
                outcome.dead_letters.append(
                    self._dead_letter(raw, DeadLetterReason.DECISION_FAILED, why, batch.now)
                )
            else:
                self.failed_in_a_row = 0
        return decided

    def _failed(self, exc: Exception) -> None:
        self.failed_in_a_row += 1
        if self.failed_in_a_row >= FAILED_IN_A_ROW_LIMIT:
            raise DecidingFails(
                f"{self.failed_in_a_row} clicks in a row could not be decided; the last one "
                f"raised {type(exc).__name__}: {exc}"
            ) from exc

    def _count(self, decided: Sequence[DecidedBatch], accepted: Sequence[RawClick]) -> None:
        """The batch's metrics, one update per label (never one per click)."""
        # GIVT apart: slidr_clicks and the IVR gauge are the model's (and fail-open) decisions,
        # comparable with the serving model's expected figures.
        givt: Counter[str] = Counter()
        per_slice: Counter[tuple[str, bool]] = Counter()
        for part in decided:
            for slice_name, bad, category, reasons in zip(
                part.slices, part.invalid.tolist(), part.categories, part.reasons, strict=True
            ):
                if category == IvtCategory.GIVT:
                    givt[reasons[0]] += 1
                else:
                    per_slice[(slice_name, bad)] += 1
        for reason, n in givt.items():
            self.metrics.givt_clicks.labels(reason.removeprefix(GIVT_PREFIX)).inc(n)
        for (slice_name, bad), n in per_slice.items():
            verdict = Verdict.INVALID if bad else Verdict.VALID
            self.metrics.clicks.labels(slice_name, str(verdict)).inc(n)
        for slice_name in {s for s, _ in per_slice}:
            invalid = per_slice[(slice_name, True)]
            total = per_slice[(slice_name, False)] + invalid
            self.metrics.invalidation_rate.labels(slice_name).set(invalid / total)
        now_ms = time.time() * 1000
        stamps = np.asarray([r.timestamp_ms for r in accepted if r.timestamp_ms], dtype=float)
        observe_many(self.metrics.click_to_decision_seconds, np.maximum(now_ms - stamps, 0) / 1000)
