"""The scoring path end to end on the real stack: clicks in, one decision per click out."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from slidr.events import Click, Decision
from slidr.features import FEATURE_HASH, N_FEATURES
from slidr.settings import Settings
from tests.factories import make_click, mixed_traffic
from tests.stack_fixtures import settings_env
from tests.worker_harness import SLIDR, WorkerProcess, consume, produce

pytestmark = pytest.mark.integration


def traffic(n: int, prefix: str) -> list[Click]:
    return mixed_traffic(n, prefix, datetime.now(UTC) - timedelta(hours=1))


def test_a_worker_on_a_missing_topic_refuses_to_start_and_names_the_fix(
    stack_settings: Settings,
) -> None:
    missing = f"nowhere-{uuid.uuid4().hex[:8]}.clicks"
    settings = stack_settings.model_copy(
        update={"topics": stack_settings.topics.model_copy(update={"clicks": missing})}
    )
    env = {**os.environ, **settings_env(settings)}
    done = subprocess.run([SLIDR, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"topic {missing} does not exist" in done.stderr, done.stderr
    assert "run `slidr stack up`" in done.stderr and "SLIDR_TOPICS__CLICKS" in done.stderr


def test_every_click_gets_exactly_one_decision(
    worker_settings: Settings, worker: WorkerProcess
) -> None:
    clicks = traffic(300, "one")
    bad = [b"{oops", orjson.dumps({"click_id": "x"}), b"x" * 10_000]
    produce(worker_settings, clicks, bad)
    decisions = consume(worker_settings, worker_settings.topics.decisions, 300, settle_s=3)
    assert len(decisions) == 300, worker.log()
    by_id = {d["click_id"]: d for d in decisions}
    assert set(by_id) == {c.click_id for c in clicks}
    for d in decisions:
        Decision.model_validate(d)  # the full contract, every field
        assert d["model_version"] == 1 and d["feature_hash"] == FEATURE_HASH
        assert len(d["features"]) == N_FEATURES and not d["degraded"]
        assert d["verdict"] in ("valid", "invalid") and d["processing_ms"] > 0
    assert {d["slice"] for d in decisions} >= {"desktop/in", "app/out", "mobile_web/out"}
    dead = consume(worker_settings, worker_settings.topics.dead_letters, 3, settle_s=1)
    assert sorted(d["reason"] for d in dead) == ["malformed_json", "missing_field", "oversized"]


def test_a_bot_burst_is_invalidated_and_says_why(
    worker_settings: Settings, worker: WorkerProcess
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=10)
    burst = [
        make_click(i, prefix="bot", at=start + timedelta(seconds=i), session="s-bot")
        for i in range(30)
    ]
    produce(worker_settings, burst)
    decisions = {
        d["click_id"]: d
        for d in consume(worker_settings, worker_settings.topics.decisions, 30, settle_s=1)
    }
    assert decisions["bot-0"]["verdict"] == "valid"
    last = decisions["bot-29"]
    assert last["verdict"] == "invalid"
    assert "velocity" in last["reason_codes"] and "model" in last["reason_codes"]


def test_a_killed_worker_loses_nothing_and_repeats_itself_exactly(
    worker_settings: Settings, worker: WorkerProcess
) -> None:
    clicks = traffic(3000, "kill")
    produce(worker_settings, clicks)
    first = consume(worker_settings, worker_settings.topics.decisions, 500, timeout_s=60)
    assert len(first) >= 500, worker.log()
    worker.stop(signal.SIGKILL)  # mid-stream, no clean shutdown, offsets partly committed
    worker.start()
    decisions = consume(worker_settings, worker_settings.topics.decisions, 3000, timeout_s=120)
    by_id: dict[str, list[dict[str, object]]] = {}
    for d in decisions:
        by_id.setdefault(str(d["click_id"]), []).append(d)
    assert set(by_id) == {c.click_id for c in clicks}, worker.log()
    stable = ("verdict", "score", "threshold", "features", "model_version", "slice")
    for copies in by_id.values():
        assert all({k: c[k] for k in stable} == {k: copies[0][k] for k in stable} for c in copies)


def test_metrics_endpoint_counts_decisions(
    worker_settings: Settings, worker: WorkerProcess
) -> None:
    import urllib.request

    produce(worker_settings, traffic(50, "metrics"))
    assert len(consume(worker_settings, worker_settings.topics.decisions, 50)) == 50
    time.sleep(0.5)
    url = f"http://127.0.0.1:{worker_settings.worker.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("slidr_clicks_total{")
    )
    assert total == 50
    assert "slidr_click_to_decision_seconds_bucket" in body

    def redis_gauge(name: str) -> float:
        for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
            if line.startswith(f"{name}{{node="):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    deadline = time.monotonic() + 10
    while redis_gauge("slidr_redis_keys") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis_gauge("slidr_redis_keys") > 0
    assert 0 < redis_gauge("slidr_redis_used_bytes") < redis_gauge("slidr_redis_max_bytes")
