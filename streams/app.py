"""The Faust worker: consume clicks in micro-batches, publish decisions and dead letters.

consume (adaptive batches, :mod:`streams.batches`) -> parse, features, score, decide
(:class:`~streams.pipeline.ClickPipeline`) -> produce (:mod:`streams.produce`).

A batch's offsets are acknowledged to Faust (and later committed) only after the loop body
returns, and the body returns only after the broker acknowledged every decision and dead
letter of the batch. A delivery failure ends the worker without acknowledging the batch, so
its clicks are consumed again: at-least-once, and a redelivered click gets the decision it got
the first time (the decision cache, :mod:`streams.feature_store.decisions`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from prometheus_client import start_http_server

from slidr.settings import Settings
from streams.batches import take_available
from streams.faust_app import raw_topic, slidr_app
from streams.feature_store import FeatureStoreUnavailable, RedisFeatureStore
from streams.givt import GivtFilter
from streams.metrics import WorkerMetrics
from streams.pipeline import BatchOutcome, ClickPipeline, RawClick
from streams.produce import BatchProducer

log = logging.getLogger(__name__)


def _raw(event: Any) -> RawClick:
    message = event.message
    return RawClick(
        value=message.value,
        key=message.key,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
    )


def create_app(
    settings: Settings,
    metrics: WorkerMetrics | None = None,
    on_batch: Callable[[BatchOutcome], Awaitable[None]] | None = None,
) -> faust.App:
    """Build the worker app from settings; nothing connects until the app starts."""
    w = settings.worker
    app = slidr_app(
        settings,
        w.consumer_group,
        "worker",
        broker_commit_every=w.batch_size,
        # A killed worker's partitions move to the survivors after this long, not Faust's 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    metrics = metrics or WorkerMetrics()

    clicks = raw_topic(app, settings.topics.clicks)
    state: dict[str, ClickPipeline] = {}
    # Read the GIVT lists now: a bad CIDR file stops the worker before it consumes anything.
    givt = GivtFilter.from_settings(settings.givt)

    if w.metrics_port:

        @app.task  # type: ignore[untyped-decorator]
        async def _serve_metrics() -> None:
            start_http_server(w.metrics_port, addr="127.0.0.1", registry=metrics.registry)

    async def _pipeline() -> ClickPipeline:
        if "pipeline" not in state:
            state["pipeline"] = await ClickPipeline.connect(settings, metrics, givt)
            # What start-up built lives as long as the worker: out of the collector's way, so
            # that a collection pass in the middle of a batch scans only what batches allocate.
            gc.freeze()
        return state["pipeline"]

    @app.timer(interval=w.redis_memory_every_s)  # type: ignore[untyped-decorator]
    async def _redis_memory() -> None:
        pipeline = state.get("pipeline")
        if pipeline is None or not isinstance(pipeline.store, RedisFeatureStore):
            return
        try:
            nodes = await pipeline.store.memory()
        except FeatureStoreUnavailable:
            return  # the scoring path reports it (degraded decisions)
        for node in nodes:
            metrics.redis_used_bytes.labels(node.node).set(node.used_bytes)
            metrics.redis_max_bytes.labels(node.node).set(node.max_bytes)
            metrics.redis_keys.labels(node.node).set(node.keys)

    @app.agent(clicks, name="score-clicks")
    async def score_clicks(stream: Any) -> None:
        try:
            await _score(stream)
        except Exception:
            # Faust would log a crashed agent and keep the worker alive doing nothing (faust
            # #416). Exit instead: uncommitted clicks are redelivered to the restarted worker.
            log.critical("scoring agent crashed; exiting so the worker restarts", exc_info=True)
            os._exit(70)

    async def _score(stream: Any) -> None:
        pipeline = await _pipeline()
        topics = settings.topics
        producer = BatchProducer(settings.kafka, client_id=w.consumer_group)
        loop = asyncio.get_running_loop()
        async for events in take_available(stream, w.batch_size, w.batch_wait_ms / 1000):
            started = loop.time()
            outcome = await pipeline.process([_raw(e) for e in events])
            producer.produce(topics.decisions, outcome.click_ids, outcome.decisions)
            if outcome.dead_letters:
                producer.produce(
                    topics.dead_letters,
                    [(d.original_key or "") for d in outcome.dead_letters],
                    [d.to_json() for d in outcome.dead_letters],
                )
            # Raises if any was not acknowledged: the batch is then never acknowledged to Faust.
            await producer.flush(w.delivery_timeout_s)
            metrics.scoring_seconds.observe(loop.time() - started)
            _lag(events)
            if on_batch is not None:
                await on_batch(outcome)

    def _lag(events: Sequence[Any]) -> None:
        last = {e.message.tp: e.message.offset for e in events}
        for tp, offset in last.items():
            highwater = app.consumer.highwater(tp)
            if highwater is not None:
                metrics.consumer_lag.labels(str(tp.partition)).set(highwater - offset - 1)

    return app
