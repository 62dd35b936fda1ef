"""The replay agent: replay requests from a topic, progress and results back on a topic.

On-call triggers a replay without shell access to a worker: publish a
:class:`~slidr.replay_messages.ReplayRequest` as JSON to ``replay.requests_topic`` (or run
``slidr replay --submit``); the agent answers on ``replay.progress_topic`` under the request's
key: ``accepted``, ``running`` (about once a second, with rate and ETA), then ``done`` with the
summary, ``refused`` or ``failed`` with the reason. Prometheus metrics on
``replay.metrics_port``.

One request at a time. A request is acknowledged after its run ended, so a request whose agent
died is delivered again and resumes from the run's checkpoint. Only requests signed with
``replay.signing_key`` run (:mod:`replay.signing`); others are refused with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import faust
from prometheus_client import start_http_server

from replay.errors import ReplayRefused
from replay.plan import plan_replay
from replay.request import parse_request
from replay.runner import ReplayRunner
from replay.signing import Headers, RequestGate, Unauthenticated
from slidr.errors import SlidrError
from slidr.replay_messages import ReplayProgress, ReplayState
from slidr.settings import Settings
from streams.faust_app import raw_topic, slidr_app
from streams.metrics import Metrics

log = logging.getLogger(__name__)

#: A running replay reports at most once per this many seconds.
PROGRESS_EVERY_S = 1.0


class ReplayMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__()
        self.runs = self.counter("slidr_replay_runs", "Replay requests by outcome.", "state")
        self.clicks = self.counter("slidr_replay_clicks", "Clicks decided by replays.", "features")
        self.running = self.gauge("slidr_replay_running", "1 while a replay runs.")
        self.progress = self.gauge(
            "slidr_replay_progress_ratio", "Share of the current replay done."
        )
        self.rate = self.gauge("slidr_replay_clicks_per_second", "Rate of the current replay.")


def create_replay_app(settings: Settings, metrics: ReplayMetrics | None = None) -> faust.App:
    """Build the agent's Faust app from settings; nothing connects until it starts."""
    r = settings.replay
    app = slidr_app(
        settings,
        r.agent_group,
        "replay-agent",
        # A replay holds its request for its whole run (minutes for millions of clicks).
        broker_max_poll_interval=3600.0,
    )
    metrics = metrics or ReplayMetrics()

    requests = raw_topic(app, r.requests_topic)
    progress = raw_topic(app, r.progress_topic)
    gate = RequestGate(r, settings.state_dir / "replay" / "requests")
    if r.signing_key is None and r.allow_unsigned:
        log.warning(
            "SLIDR_REPLAY__ALLOW_UNSIGNED: anyone who can write %s runs replays", r.requests_topic
        )

    if r.metrics_port:

        @app.task  # type: ignore[untyped-decorator]
        async def _serve_metrics() -> None:
            start_http_server(r.metrics_port, addr="127.0.0.1", registry=metrics.registry)

    async def report(request_id: str, update: ReplayProgress) -> None:
        message = update.model_copy(update={"request_id": request_id})
        await progress.send(key=request_id.encode(), value=message.to_json(), force=True)

    async def refuse(request_id: str, exc: ReplayRefused, state: str) -> None:
        log.warning("replay request %r refused: %s", request_id, exc)
        metrics.runs.labels(state).inc()
        await report(request_id, ReplayProgress(state=ReplayState.REFUSED, error=str(exc)))

    async def serve(request_id: str, payload: bytes, headers: Headers) -> None:
        try:
            signed = gate.admit(request_id, payload, headers, time.time())
        except Unauthenticated as exc:
            # counted apart: an alert on it means someone writes requests without the key
            await refuse(request_id, exc, "unauthenticated")
            return
        try:
            await run(request_id, payload)
        finally:
            gate.finished(signed, time.time())

    async def run(request_id: str, payload: bytes) -> None:
        try:
            request = parse_request(payload)
            await report(request_id, ReplayProgress(state=ReplayState.ACCEPTED))
            plan = await asyncio.to_thread(plan_replay, settings, request)
        except ReplayRefused as exc:
            await refuse(request_id, exc, ReplayState.REFUSED.value)
            return
        log.info("replay %s (request %s): %d clicks", plan.run_id, request_id, plan.to_publish)
        sent: list[asyncio.Task[None]] = []
        last = 0.0

        def on_progress(update: ReplayProgress) -> None:
            nonlocal last
            metrics.progress.set(update.done / update.total if update.total else 1.0)
            metrics.rate.set(update.clicks_per_s)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                sent.append(asyncio.ensure_future(report(request_id, update)))

        metrics.running.set(1)
        try:
            summary = await ReplayRunner(settings, plan, on_progress).run()
        except SlidrError as exc:
            log.error("replay %s failed: %s", plan.run_id, exc)
            metrics.runs.labels(ReplayState.FAILED.value).inc()
            await asyncio.gather(*sent)
            await report(
                request_id,
                ReplayProgress(run_id=plan.run_id, state=ReplayState.FAILED, error=str(exc)),
            )
            return
        finally:
            metrics.running.set(0)
        await asyncio.gather(*sent)
        metrics.runs.labels(ReplayState.DONE.value).inc()
        metrics.clicks.labels(plan.mode.value).inc(summary.decided)
        done = ReplayProgress(
            run_id=plan.run_id,
            state=ReplayState.DONE,
            done=summary.decided,
            total=plan.to_publish,
            clicks_per_s=summary.clicks_per_s,
            eta_s=0.0,
            summary=summary,
        )
        await report(request_id, done)
        log.info("replay %s done: %d decisions published", plan.run_id, summary.published)

    @app.agent(requests, name="replay-requests", concurrency=1)
    async def replays(stream: Any) -> None:
        try:
            async for event in stream.events():
                message = event.message
                key = message.key.decode(errors="replace") if message.key else ""
                request_id = key or f"{message.partition}:{message.offset}"
                await serve(request_id, message.value or b"", message.headers)
        except Exception:
            # Faust would keep a worker with a dead agent alive (faust #416): exit, so the
            # request is delivered again to the restarted agent and resumes.
            log.critical("replay agent crashed; exiting so it restarts", exc_info=True)
            os._exit(70)

    return app
