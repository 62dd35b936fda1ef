"""One final decision per click (issue 17 item 3): the rule, the decision cache on a real
Redis and Redis Cluster, and a real worker given its clicks again across a calibration switch,
then a replay, folded by the reference billing consumer."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from slidr.billing import Ledger, read_ledger
from slidr.events import Decision
from slidr.model_record import CALIBRATION_FILE
from slidr.settings import RedisSettings, Settings
from streams.feature_store.decisions import DecisionCache, decision_key
from tests.decisions import AT, decision_fields
from tests.factories import make_click
from tests.stack_fixtures import private_model, settings_env
from tests.test_replay import full_range, run_replay, traffic
from tests.worker_harness import SLIDR, WorkerProcess, isolated, produce


def decision(click_id: str = "c-1", **fields: object) -> bytes:
    return Decision.model_validate(decision_fields(click_id, **fields)).to_json()


def test_the_final_decision_does_not_depend_on_reading_order() -> None:
    live = decision()
    degraded = decision(
        verdict="valid", degraded=True, ivt_category=None, decided_at=AT + timedelta(seconds=5)
    )
    later = decision(verdict="invalid", decided_at=AT + timedelta(seconds=9))
    replay_1 = decision(verdict="invalid", revision=1_700_000_000_000, replay_run_id="r1")
    replay_2 = decision(verdict="valid", revision=1_700_000_000_001, replay_run_id="r2")
    cases = [
        ([live, live], live),  # a redelivery given its first decision back
        ([live, degraded], live),  # judged over fail-open, whichever came first
        ([live, later], live),  # the first one (the cache was down for the second)
        ([live, replay_1, later], replay_1),  # a replay over every live decision
        ([live, replay_1, replay_2], replay_2),  # a later replay over an earlier one
    ]
    for payloads, final in cases:
        for order in itertools.permutations(payloads):
            (got,) = Ledger().extend(order).final()
            assert got.to_json() == final, (order, got)


def test_the_ledger_counts_repeats_replays_and_conflicts() -> None:
    ledger = Ledger().extend(
        [
            decision("a"),
            decision("a"),
            decision("b"),
            decision("b", verdict="invalid", decided_at=AT + timedelta(seconds=3)),
            decision("c", verdict="invalid", revision=5, replay_run_id="r"),
            decision("c"),
        ]
    )
    summary = ledger.summary()
    assert (summary.decisions, summary.clicks, summary.repeated) == (6, 3, 3)
    assert (summary.replayed, summary.conflicting, summary.invalid) == (1, 1, 1)


async def _claims(redis: RedisSettings) -> None:
    cache = DecisionCache(redis)
    try:
        ids = [f"k-{i}" for i in range(300)]
        times = [AT + timedelta(seconds=i) for i in range(300)]  # five event minutes
        first = [decision(i, score=0.25) for i in ids]
        mine = list(first)
        assert await cache.claim(ids, times, mine) == 0 and mine == first
        again = [decision(i, score=0.75) for i in ids[:150]] + [decision("new")]
        got = list(again)
        assert await cache.claim([*ids[:150], "new"], [*times[:150], AT], got) == 150
        assert got == [*first[:150], again[-1]]
    finally:
        await cache.aclose()


@pytest.mark.integration
def test_the_decision_cache_keeps_the_first_decision(stack_settings: Settings) -> None:
    redis = stack_settings.redis.model_copy(update={"key_prefix": f"t{uuid.uuid4().hex[:8]}:"})
    asyncio.run(_claims(redis))
    # Kept for the redelivery horizon (the row cache's), then gone.
    import redis as redis_py

    client = redis_py.Redis(
        host=redis.host,
        port=redis.port,
        username=redis.username,
        password=redis.password.get_secret_value() if redis.password else None,
    )
    ttl_ms = client.pttl(decision_key(redis.key_prefix, "k-0", AT))
    assert 0 < ttl_ms <= redis.row_horizon_s * 1000


@pytest.mark.integration
def test_the_decision_cache_works_on_a_redis_cluster(cluster_redis_settings: RedisSettings) -> None:
    keys = {decision_key("x:", f"k-{i}", AT).split("}")[0] for i in range(300)}
    assert len(keys) > 8  # the clicks spread over buckets, so over the cluster's nodes
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    asyncio.run(_claims(cluster_redis_settings.model_copy(update={"key_prefix": prefix})))


def _all_invalid(settings: Settings) -> None:
    """The serving version's calibration, replaced by one that invalidates every click."""
    t = settings.triton
    path = Path(t.model_repository) / t.model_name / "1" / CALIBRATION_FILE
    record = {"id": "all-invalid", "thresholds": {"desktop": 0.0, "mobile_web": 0.0, "app": 0.0}}
    staging = path.with_suffix(".partial")
    staging.write_text(json.dumps(record))
    staging.replace(path)


def _read(settings: Settings, topic: str, want: int, timeout_s: float = 90) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(
        [TopicPartition(topic, p, 0) for p in range(settings.topics.partitions)]  # from the start
    )
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < want and time.monotonic() < deadline:
            out += [
                m.value() or b""
                for m in consumer.consume(500, timeout=0.5)
                if m.error() is None and m.value()
            ]
    finally:
        consumer.close()
    return out


@pytest.mark.integration
def test_a_click_consumed_again_gets_its_first_decision_and_a_replay_is_final(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(private_model(stack_settings), reload_every_s=0.5)
    clicks = traffic("fd", 60, datetime.now(UTC) - timedelta(hours=1))
    worker = WorkerProcess(settings, tmp_path / "first.log")
    worker.start()
    try:
        produce(settings, clicks)
        first = _read(settings, settings.topics.decisions, len(clicks))
    finally:
        worker.stop(signal.SIGKILL)
    assert len(first) == len(clicks), worker.log()
    assert any(orjson.loads(p)["verdict"] == "valid" for p in first)

    # Every click is consumed again (another consumer group reads from the start: what a
    # redelivery after kill -9 or a rebalance does to the uncommitted part), by two workers
    # that rebalance as the second joins, after a calibration switch that would now
    # invalidate every one of them.
    _all_invalid(settings)
    again = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"consumer_group": "again"})}
    )
    workers = [WorkerProcess(again, tmp_path / f"again-{i}.log") for i in range(2)]
    workers[0].start()
    fresh = [make_click(i, prefix="fd-new", at=datetime.now(UTC)) for i in range(10)]
    try:
        time.sleep(1)
        workers[1].start()  # joins: the group rebalances while the first is deciding
        time.sleep(2)  # both follow the new record within reload_every_s
        produce(settings, fresh)
        everything = _read(settings, settings.topics.decisions, 2 * len(clicks) + len(fresh))
    finally:
        for w in workers:
            w.stop()
    worker = workers[0]
    by_click: dict[str, list[bytes]] = {}
    for payload in everything:
        by_click.setdefault(orjson.loads(payload)["click_id"], []).append(payload)
    assert all(orjson.loads(by_click[c.click_id][0])["verdict"] == "invalid" for c in fresh), (
        "the calibration switch did not reach the worker: " + worker.log()
    )
    for c in clicks:
        assert len(by_click[c.click_id]) >= 2, worker.log()
        assert len(set(by_click[c.click_id])) == 1  # byte for byte, however often

    summary = run_replay(settings, model_version=1, **full_range(settings))
    ledger = read_ledger(settings)
    finals = {d.click_id: d for d in ledger.final()}
    assert finals.keys() == {c.click_id for c in clicks + fresh}
    assert {d.replay_run_id for d in finals.values()} == {summary.run_id}
    assert all(d.revision > 0 and d.verdict == "invalid" for d in finals.values())
    totals, n = ledger.summary(), len(clicks) + len(fresh)
    assert (totals.clicks, totals.repeated, totals.replayed, totals.conflicting) == (n, n, n, 0)

    out = tmp_path / "final.jsonl"
    env = {**settings_env(settings), "PATH": str(Path(SLIDR).parent)}
    run = subprocess.run(
        [SLIDR, "billing", "--json", "--out", str(out)], env=env, capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr.decode()
    assert orjson.loads(run.stdout)["clicks"] == n
    lines = out.read_bytes().splitlines()
    assert sorted(orjson.loads(line)["click_id"] for line in lines) == sorted(finals)
