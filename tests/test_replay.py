"""Replay on the real stack: clicks decided by a live worker, then replayed by offset range.

One worker run (module fixture) gives the clicks and original decisions most tests replay; a
private model holds version 1 (serving) and version 2 (a stricter heuristic, a candidate).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from models.heuristic import VELOCITY_LIMITS
from replay.errors import ReplayRefused
from replay.plan import plan_replay
from replay.request import parse_request
from replay.runner import ReplayRunner
from slidr.events import Click
from slidr.features import INDEX
from slidr.registry import Registry
from slidr.replay_messages import ReplayProgress, ReplaySummary
from slidr.settings import Settings
from slidr.stack.redis_server import RedisService
from slidr.topics import ensure_topics
from streams.feature_store import RedisFeatureStore, featurize
from tests.factories import make_click, mixed_traffic
from tests.stack_fixtures import free_ports, private_model, settings_env
from tests.worker_harness import (
    SLIDR,
    DecisionReader,
    WorkerProcess,
    consume,
    isolated,
    produce,
    watermarks,
)

pytestmark = pytest.mark.integration

#: What a replay must reproduce of the original decision (not when or how fast it was made).
#: The replay agent runs only requests signed with its key (replay/signing.py).
SIGNING_KEY = "replay-agent-test-signing-key-0123456789"
CONTENT = (
    "click_id",
    "event_time",
    "verdict",
    "score",
    "threshold",
    "slice",
    "model_name",
    "model_version",
    "reason_codes",
    "feature_hash",
    "features",
    "degraded",
    "source_partition",
    "source_offset",
)
V2_LIMITS = {name: limit / 2 for name, limit in VELOCITY_LIMITS.items()}


def traffic(prefix: str, n: int, start: datetime) -> list[Click]:
    clicks = mixed_traffic(n, prefix, start)
    burst = [
        make_click(
            i,
            prefix=f"{prefix}-bot",
            at=start + timedelta(seconds=i),
            session="s-bot",
            ip="192.0.2.99",
        )
        for i in range(30)
    ]
    return sorted(clicks + burst, key=lambda c: c.event_time)


def with_output(settings: Settings) -> Settings:
    """A fresh replayed-decisions topic (and replay request/progress topics)."""
    tag = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={"replayed_decisions": f"t{tag}.replayed"})
    replay = settings.replay.model_copy(
        update={
            "requests_topic": f"t{tag}.replay-requests",
            "progress_topic": f"t{tag}.progress",
            "agent_group": f"replay-agent-{tag}",
            "metrics_port": free_ports(1)[0],
        }
    )
    out = settings.model_copy(update={"topics": topics, "replay": replay})
    ensure_topics(out)
    return out


def full_range(settings: Settings) -> dict[str, dict[int, int]]:
    marks = watermarks(settings)
    return {
        "from_offsets": {p: low for p, (low, _) in marks.items()},
        "to_offsets": {p: high - 1 for p, (_, high) in marks.items()},
    }


def run_replay(settings: Settings, on_progress: Any = None, **request: Any) -> ReplaySummary:
    plan = plan_replay(settings, parse_request(request))
    return asyncio.run(ReplayRunner(settings, plan, on_progress).run())


def read_all(settings: Settings, topic: str) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """Every message of ``topic`` (value, headers), read by assignment up to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "probe",
            "enable.partition.eof": True,
        }
    )
    out = []
    try:
        ends = {}
        for p in range(settings.topics.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                part, offset, value = msg.partition(), msg.offset(), msg.value()
                if msg.error() is None and value is not None:
                    out.append((orjson.loads(value), dict(msg.headers() or [])))
                if part in ends and offset is not None and offset + 1 >= ends[part]:
                    del ends[part]
    finally:
        consumer.close()
    return out  # type: ignore[return-value]


def committed(settings: Settings) -> dict[int, int]:
    """The live worker group's committed offsets, read without joining the group."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": settings.worker.consumer_group}
    )
    try:
        tps = [TopicPartition(settings.topics.clicks, p) for p in range(settings.topics.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def v2_score(features: list[float]) -> float:
    """Version 2's heuristic, as Triton computes it (float32)."""
    x = np.asarray([features], dtype=np.float32)
    index = [INDEX[name] for name in V2_LIMITS]
    limits = np.asarray(list(V2_LIMITS.values()), dtype=np.float32)
    return float(np.clip((x[:, index] / limits).max(axis=1) / 2.0, 0.0, 1.0).astype(np.float32)[0])


def add_version_2(settings: Settings) -> None:
    import tritonclient.http as triton_http

    root = Path(settings.triton.model_repository) / settings.triton.model_name
    shutil.copytree(root / "1", root / "2")
    spec = json.loads((root / "2" / "heuristic.json").read_text())
    spec["limits"] = {str(INDEX[name]): limit for name, limit in V2_LIMITS.items()}
    (root / "2" / "heuristic.json").write_text(json.dumps(spec))
    Registry(settings).register(2)
    client = triton_http.InferenceServerClient(
        f"{settings.triton.host}:{settings.triton.http_port}"
    )
    try:
        client.load_model(settings.triton.model_name)
    finally:
        client.close()


@dataclass(frozen=True)
class Served:
    settings: Settings
    clicks: list[Click]
    decisions: dict[str, dict[str, Any]]
    #: When the clicks were produced: their message timestamps (the harness sets none).
    produced: tuple[datetime, datetime]


@pytest.fixture(scope="module")
def model_settings(stack_settings: Settings) -> Settings:
    settings = private_model(stack_settings)
    Registry(settings).entries()  # version 1 is adopted as serving before version 2 exists
    return settings


@pytest.fixture(scope="module")
def served(model_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Served:
    settings = isolated(model_settings, model_version=1)
    clicks = traffic("live", 300, datetime.now(UTC) - timedelta(hours=1))
    worker = WorkerProcess(settings, tmp_path_factory.mktemp("replay") / "worker.log")
    worker.start()
    try:
        first = datetime.now(UTC)
        produce(settings, clicks)
        last = datetime.now(UTC)
        decisions = consume(settings, settings.topics.decisions, len(clicks), settle_s=1)
    finally:
        worker.stop()
    by_id = {d["click_id"]: d for d in decisions}
    assert by_id.keys() == {c.click_id for c in clicks}, worker.log()
    assert any(d["verdict"] == "invalid" for d in decisions)
    add_version_2(model_settings)
    return Served(settings, clicks, by_id, (first - timedelta(seconds=1), last))


def test_replaying_the_serving_version_reproduces_the_original_decisions(served: Served) -> None:
    settings = with_output(served.settings)
    live_offsets = committed(settings)
    summary = run_replay(settings, model_version=1, **full_range(settings))
    assert committed(settings) == live_offsets and max(live_offsets.values()) > 0

    messages = read_all(settings, settings.topics.replayed_decisions)
    assert len(messages) == len(served.clicks) == summary.published == summary.decided
    for replayed, headers in messages:
        original = served.decisions[replayed["click_id"]]
        assert {k: replayed[k] for k in CONTENT} == {k: original[k] for k in CONTENT}
        assert replayed["replay_run_id"] == summary.run_id
        assert replayed["decided_at"] == replayed["event_time"] and replayed["processing_ms"] == 0
        assert headers["source_topic"] == settings.topics.clicks.encode()
    invalid = sum(d["verdict"] == "invalid" for d in served.decisions.values())
    assert sum(s.invalid for s in summary.slices) == invalid


class Interrupted(Exception):
    pass


def test_an_interrupted_replay_resumes_and_a_repeat_publishes_the_same(served: Served) -> None:
    settings = with_output(served.settings)
    small = settings.model_copy(
        update={
            "replay": settings.replay.model_copy(
                update={"chunk_size": 40, "checkpoint_every_s": 1e-6}
            )
        }
    )
    request = {"model_version": 1, **full_range(settings)}
    steps = []

    def interrupt(progress: ReplayProgress) -> None:
        steps.append(progress.done)
        if len(steps) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_replay(small, interrupt, **request)
    plan = plan_replay(small, parse_request(request))
    assert plan.resumed is not None and 0 < plan.resumed.published < len(served.clicks)
    assert plan.to_publish == len(served.clicks) - plan.resumed.published
    resumed = asyncio.run(ReplayRunner(small, plan).run())
    assert resumed.resumed and resumed.published == len(served.clicks)
    again = run_replay(small, **request)  # the run completed: this repeats it whole
    assert again.run_id == resumed.run_id and again.decided == len(served.clicks)

    copies: dict[str, list[dict[str, Any]]] = {}
    for value, _ in read_all(settings, settings.topics.replayed_decisions):
        copies.setdefault(value["click_id"], []).append(value)
    assert copies.keys() == served.decisions.keys()
    assert all(len(c) >= 2 and all(x == c[0] for x in c) for c in copies.values())


def test_replaying_another_version_publishes_that_versions_decisions(served: Served) -> None:
    settings = with_output(served.settings)
    first, last = served.produced
    dry = run_replay(
        settings,
        model_version=2,
        dry_run=True,
        from_time=first,
        to_time=last + timedelta(seconds=1),
    )
    assert read_all(settings, settings.topics.replayed_decisions) == []
    summary = run_replay(settings, model_version=2, **full_range(settings))
    messages = [v for v, _ in read_all(settings, settings.topics.replayed_decisions)]
    assert len(messages) == len(served.clicks)
    flips = 0
    for replayed in messages:
        original = served.decisions[replayed["click_id"]]
        expected = v2_score(original["features"])
        assert replayed["model_version"] == 2 and replayed["score"] == expected
        assert replayed["verdict"] == ("invalid" if expected >= 0.5 else "valid")
        assert replayed["features"] == original["features"]
        flips += replayed["verdict"] != original["verdict"]
    total = next(row for row in dry.diff or [] if row.slice == "all")
    assert flips > 0 and total.to_invalid == flips and total.to_valid == 0
    assert total.clicks == len(served.clicks) and total.ivr_after > total.ivr_before
    assert sum(s.invalid for s in summary.slices) == sum(s.invalid for s in dry.slices)


def test_unsafe_requests_are_refused_with_a_clear_message(served: Served) -> None:
    settings = with_output(served.settings)
    full = full_range(settings)
    p, last = next(iter(full["to_offsets"].items()))
    future = datetime.now(UTC) + timedelta(days=1)
    refusals: dict[str, dict[str, Any]] = {
        "not written yet": {"from_offsets": {p: 0}, "to_offsets": {p: last + 5}},
        "no version 7": {**full, "model_version": 7},
        "holds no clicks": {"from_time": future, "to_time": future + timedelta(hours=1)},
    }
    for message, request in refusals.items():
        with pytest.raises(ReplayRefused, match=message):
            plan_replay(settings, parse_request({"model_version": 1, **request}))
    tiny = settings.model_copy(
        update={"replay": settings.replay.model_copy(update={"max_clicks": 10})}
    )
    with pytest.raises(ReplayRefused, match="over the limit of 10"):
        plan_replay(tiny, parse_request({"model_version": 1, **full}))
    assert plan_replay(tiny, parse_request({"model_version": 1, "force": True, **full}))

    # Retention: a topic whose first records were deleted.
    aged = isolated(served.settings)
    produce(aged, served.clicks[:20])
    marks = full_range(aged)
    q = max(marks["to_offsets"], key=lambda k: marks["to_offsets"][k])
    admin = AdminClient({"bootstrap.servers": aged.kafka.bootstrap})
    doomed = TopicPartition(aged.topics.clicks, q, 3)
    admin.delete_records([doomed])[doomed].result(timeout=10)
    with pytest.raises(ReplayRefused, match=f"offset 0 of .*/{q} is out of retention"):
        plan_replay(aged, parse_request({"model_version": 1, **marks}))

    # The command line: one line naming the fix, exit code 2, nothing published.
    result = subprocess.run(
        [
            SLIDR,
            "replay",
            "--from-offset",
            f"{p}:1",
            "--to-offset",
            f"{p}:{last + 5}",
            "--model-version",
            "1",
        ],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: offset ")
    assert "Traceback" not in result.stderr
    assert read_all(settings, settings.topics.replayed_decisions) == []


async def reference_features(settings: Settings, clicks: list[Click]) -> dict[str, list[float]]:
    """What a healthy pipeline computes: the live store over all clicks in its order."""
    fresh = settings.redis.model_copy(update={"key_prefix": f"ref-{uuid.uuid4().hex[:8]}:"})
    async with RedisFeatureStore(fresh) as store:
        try:
            rows = await featurize(clicks, store)
        finally:
            await store.drop_namespace()
    return {c.click_id: row.tolist() for c, row in zip(clicks, rows, strict=True)}


@pytest.fixture
def outage(
    model_settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, Settings, RedisService]]:
    """Live settings on the stack's Redis; a worker's settings on a Redis of its own."""
    live = with_output(isolated(model_settings, model_version=1))
    own = live.redis.model_copy(update={"port": free_ports(1)[0]})
    worker_settings = live.model_copy(update={"redis": own, "state_dir": tmp_path / "state"})
    service = RedisService(worker_settings)
    service.start()
    try:
        yield live, worker_settings, service
    finally:
        service.proc.stop()


def test_recompute_corrects_the_decisions_degraded_by_a_redis_outage(
    outage: tuple[Settings, Settings, RedisService], tmp_path: Path
) -> None:
    live, worker_settings, redis_service = outage
    start = datetime.now(UTC) - timedelta(minutes=40)
    before = traffic("pre", 60, start)
    during = traffic("out", 60, start + timedelta(minutes=2))
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
    worker.start()
    reader = DecisionReader(worker_settings)
    try:
        produce(worker_settings, before)
        assert len(reader.wait_for(c.click_id for c in before)) == len(before), worker.log()
        redis_service.proc.stop()  # the outage
        produce(worker_settings, during)
        degraded = reader.wait_for(c.click_id for c in during)
    finally:
        reader.close()
        worker.stop()
    assert len(degraded) == len(during) and all(d["degraded"] for d in degraded.values())

    spans: dict[int, list[int]] = {}
    for d in degraded.values():
        spans.setdefault(d["source_partition"], []).append(d["source_offset"])
    summary = run_replay(
        live,
        model_version=1,
        features="recompute",
        from_offsets={p: min(o) for p, o in spans.items()},
        to_offsets={p: max(o) for p, o in spans.items()},
    )
    assert summary.decided == len(during) and summary.context_clicks == len(before)

    expected = asyncio.run(reference_features(live, before + during))
    replayed = {v["click_id"]: v for v, _ in read_all(live, live.topics.replayed_decisions)}
    assert replayed.keys() == degraded.keys()
    for click_id, decision in replayed.items():
        assert decision["features"] == expected[click_id] and not decision["degraded"]
    bots = [replayed[c.click_id] for c in during if "-bot-" in c.click_id]
    assert bots[-1]["verdict"] == "invalid" and "velocity" in bots[-1]["reason_codes"]
    # The warm-up counted the clicks before the outage: the burst's first click already sees
    # the earlier burst of the same session.
    assert bots[0]["features"][INDEX["session_clicks_1h"]] > 1

    client = redis.Redis(host=live.redis.host, port=live.redis.port)
    try:
        assert not list(client.scan_iter(match=f"{live.redis.key_prefix}*"))  # live untouched
        assert not list(client.scan_iter(match=f"{live.replay.redis_prefix}{summary.run_id}:*"))
    finally:
        client.close()


def test_the_agent_serves_requests_from_the_topic(served: Served, tmp_path: Path) -> None:
    settings = with_output(served.settings)
    # settings_env writes a SecretStr masked: the key goes in by itself
    env = {**os.environ, **settings_env(settings), "SLIDR_REPLAY__SIGNING_KEY": SIGNING_KEY}
    with (tmp_path / "agent.log").open("wb") as log:
        agent = subprocess.Popen([SLIDR, "replay-agent"], env=env, stdout=log, stderr=log)
    try:
        # an unsigned request (anyone who can write the topic) is refused, before any signed one
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
        unsigned = parse_request({"model_version": 1, **full_range(settings)}).to_json()
        producer.produce(settings.replay.requests_topic, unsigned, b"unsigned-1")
        assert producer.flush(30) == 0
        args = [SLIDR, "replay", "--submit", "--wait-s", "120", "--model-version"]
        offsets = [
            f"--from-offset={p}:{o}" for p, o in full_range(settings)["from_offsets"].items()
        ]
        offsets += [f"--to-offset={p}:{o}" for p, o in full_range(settings)["to_offsets"].items()]
        keyless = {k: v for k, v in env.items() if k != "SLIDR_REPLAY__SIGNING_KEY"}
        no_key = subprocess.run(
            [*args, "1", *offsets], env=keyless, capture_output=True, text=True, timeout=180
        )
        assert no_key.returncode == 2 and "set SLIDR_REPLAY__SIGNING_KEY" in no_key.stderr
        done = subprocess.run(
            [*args, "1", *offsets], env=env, capture_output=True, text=True, timeout=180
        )
        agent_log = (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
        assert done.returncode == 0, done.stderr + agent_log
        assert f"published {len(served.clicks)}" in done.stderr
        refused = subprocess.run(
            [*args, "9", *offsets], env=env, capture_output=True, text=True, timeout=180
        )
        assert refused.returncode == 2 and "refused the replay: model" in refused.stderr
        metrics_url = f"http://127.0.0.1:{settings.replay.metrics_port}/metrics"
        body = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
        assert 'slidr_replay_runs_total{state="done"} 1.0' in body
        assert 'slidr_replay_runs_total{state="refused"} 1.0' in body
        assert 'slidr_replay_runs_total{state="unauthenticated"} 1.0' in body
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    agent_log = (tmp_path / "agent.log").read_text(errors="replace")
    assert "replay request 'unsigned-1' refused: unsigned request" in agent_log
    assert SIGNING_KEY not in agent_log
    values = [v for v, _ in read_all(settings, settings.topics.replayed_decisions)]
    assert {v["click_id"] for v in values} == served.decisions.keys()
    assert {v["model_version"] for v in values} == {1}
