"""Run a planned replay: read the range, get features, score on the pinned version, publish.

Each step: a chunk of click messages in time order -> features (logged or recomputed) ->
Triton scores -> decisions (:mod:`streams.decide`, the live worker's builder) -> the
replayed-decisions topic, keyed by click_id, with ``source_topic`` and ``replay_run_id``
headers. Every few seconds the producer is flushed and the checkpoint written, so an
interrupted run resumes where it stood.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaException, Message

from replay.checkpoint import Checkpoint, checkpoint_path, save_checkpoint
from replay.diff import DiffCollector
from replay.errors import ReplayError
from replay.features import logged_step, recomputed_step
from replay.originals import OriginalDecisions
from replay.plan import ReplayPlan, counters_namespace
from replay.ranges import reader_consumer
from replay.reader import MergedReader
from replay.summary import SummaryBuilder
from slidr.replay_messages import FeatureMode, ReplayProgress, ReplaySummary
from slidr.settings import Settings
from streams.decide import Stamp, decide
from streams.feature_store import FeatureStoreUnavailable, RedisFeatureStore
from streams.givt import GivtFilter
from streams.produce import BatchProducer, DeliveryFailed, Headers
from streams.scorer import Scorer, ScorerUnavailable, TritonScorer

log = logging.getLogger(__name__)

ProgressCallback = Callable[[ReplayProgress], None]


async def score_rows(
    scorer: Scorer, rows: npt.NDArray[np.float32], version: int, batch_size: int
) -> npt.NDArray[np.float32]:
    """Scores of every row, in concurrent Triton requests of at most ``batch_size`` rows."""
    if len(rows) == 0:
        return np.empty(0, dtype=np.float32)
    parts = await asyncio.gather(
        *(scorer.score(rows[i : i + batch_size], version) for i in range(0, len(rows), batch_size))
    )
    return np.concatenate(parts)


class _Publisher:
    """Replayed decisions to Kafka, keyed by click_id; flush() raises on any failed delivery."""

    def __init__(self, settings: Settings, run_id: str, source_topic: str) -> None:
        self.topic = settings.topics.replayed_decisions
        self.headers: Headers = [("source_topic", source_topic), ("replay_run_id", run_id)]
        # The same partitioner as the worker's: a click's replayed decision lands on the same
        # partition number as its live one, run after run.
        self.producer = BatchProducer(settings.kafka, linger_ms=20, client_id="slidr-replay")

    def publish(self, keys: Sequence[str], payloads: Sequence[bytes]) -> None:
        self.producer.produce(self.topic, keys, payloads, self.headers)

    def close(self) -> None:
        """Drop what is still queued (a resumed run publishes it again) and disconnect."""
        self.producer.close()

    async def flush(self) -> None:
        try:
            await self.producer.flush(60)
        except DeliveryFailed as exc:
            why = f"publishing to {self.topic} failed ({exc}); run again to resume"
            raise ReplayError(why) from exc


class ReplayRunner:
    def __init__(
        self,
        settings: Settings,
        plan: ReplayPlan,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.on_progress = on_progress
        self.summary = SummaryBuilder(plan)
        self.diff = DiffCollector() if plan.request.dry_run else None
        self.next_offsets = {s.partition: s.publish_from for s in plan.spans if s.publishes}
        self.published = plan.resumed.published if plan.resumed else 0
        #: The worker's GIVT lists: a replayed GIVT click is decided by its list again.
        self.givt = GivtFilter.from_settings(settings.givt)

    async def run(self) -> ReplaySummary:
        plan, settings = self.plan, self.settings
        r = settings.replay
        async with AsyncExitStack() as cleanup:
            # Made here: the gRPC channel belongs to the running event loop.
            self.scorer = TritonScorer(settings.triton, timeout_s=r.triton_timeout_s)
            cleanup.push_async_callback(self.scorer.aclose)
            try:
                await self.scorer.check(plan.record.version, r.batch_size)
                originals = None
                if plan.originals_from_ms is not None:
                    originals = await asyncio.to_thread(
                        OriginalDecisions, settings, plan.ranges, plan.originals_from_ms
                    )
                    cleanup.callback(originals.close)
                store = None
                if plan.mode is FeatureMode.RECOMPUTE:
                    namespace = counters_namespace(settings, plan.run_id)
                    store = RedisFeatureStore(namespace, timeout_s=r.triton_timeout_s)
                    cleanup.push_async_callback(store.aclose)
                publisher = None
                if not plan.request.dry_run:
                    publisher = _Publisher(settings, plan.run_id, plan.clicks_topic)
                    cleanup.callback(publisher.close)
                consumer = reader_consumer(settings, "clicks")
                cleanup.callback(consumer.close)
                reader = MergedReader(consumer, plan.clicks_topic, plan.spans, r.chunk_size)
                await self._read(reader, originals, store, publisher)
            except FeatureStoreUnavailable as exc:
                raise ReplayError(f"{exc}; run the replay again to resume") from exc
            except ScorerUnavailable as exc:
                raise ReplayError(f"{exc}; is Triton up? Run the replay again to resume") from exc
            except KafkaException as exc:
                raise ReplayError(f"Kafka failed ({exc}); run the replay again to resume") from exc
        if plan.mode is FeatureMode.RECOMPUTE:
            # Done: the counters are not needed again (an interrupted run keeps them, though
            # resuming would rebuild them identically).
            async with RedisFeatureStore(counters_namespace(settings, plan.run_id)) as done:
                await done.drop_namespace()
        diff = None
        if self.diff is not None:
            diff = await asyncio.to_thread(self.diff.result, settings)
        return self.summary.finish(self.published, diff)

    async def _read(
        self,
        reader: MergedReader,
        originals: OriginalDecisions | None,
        store: RedisFeatureStore | None,
        publisher: _Publisher | None,
    ) -> None:
        last_checkpoint = time.monotonic()
        async for messages in reader.chunks():
            await self._step(messages, originals, store, publisher)
            every = self.settings.replay.checkpoint_every_s
            if publisher and time.monotonic() - last_checkpoint >= every:
                await self._checkpoint(publisher, complete=False)
                last_checkpoint = time.monotonic()
        if publisher:
            await self._checkpoint(publisher, complete=True)

    async def _step(
        self,
        messages: Sequence[Message],
        originals: OriginalDecisions | None,
        store: RedisFeatureStore | None,
        publisher: _Publisher | None,
    ) -> None:
        plan = self.plan
        if store is not None:
            step = await recomputed_step(
                messages,
                self.next_offsets,
                store,
                originals,
                plan.record,
                self.settings.events,
                self.givt,
            )
        else:
            assert originals is not None
            step = await logged_step(messages, originals, plan.record, self.givt)
        rows = step.clicks.features
        assert rows is not None  # both feature modes give every decided click its row
        scores = await score_rows(
            self.scorer, rows, plan.record.version, self.settings.replay.batch_size
        )
        decided = decide(
            step.clicks,
            scores,
            Stamp(plan.record, None, replay_run_id=plan.run_id, revision=plan.revision),
        )
        payloads, invalid = decided.payloads, decided.invalid
        if publisher is not None:
            publisher.publish(step.clicks.click_ids, payloads)
            self.published += len(payloads)
        self.summary.add(step, invalid)
        if self.diff is not None:
            self.diff.add(step, invalid)
        for msg in messages:
            partition, offset = msg.partition(), msg.offset()
            if partition in self.next_offsets and offset is not None:
                self.next_offsets[partition] = max(self.next_offsets[partition], offset + 1)
        if self.on_progress is not None:
            self.on_progress(self.summary.progress())

    async def _checkpoint(self, publisher: _Publisher, complete: bool) -> None:
        await publisher.flush()
        save_checkpoint(
            checkpoint_path(self.settings.state_dir, self.plan.run_id),
            Checkpoint(
                run_id=self.plan.run_id,
                ranges=[str(r) for r in self.plan.ranges],
                next_offsets=self.next_offsets,
                published=self.published,
                complete=complete,
                revision=self.plan.revision,
            ),
        )


async def run_replay(
    settings: Settings, plan: ReplayPlan, on_progress: ProgressCallback | None = None
) -> ReplaySummary:
    return await ReplayRunner(settings, plan, on_progress).run()
