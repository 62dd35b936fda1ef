"""Outages and scale-out, with real processes: stop Redis and Triton under a running worker,
and split a topic between two workers."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from slidr.events import Click
from slidr.features import INDEX
from slidr.settings import RedisSettings, Settings, TritonSettings
from slidr.stack.redis_server import RedisService
from slidr.stack.service import Service
from slidr.stack.triton_server import TritonService
from tests.factories import make_click
from tests.stack_fixtures import free_ports, process_alive, running
from tests.worker_harness import DecisionReader, WorkerProcess, isolated, produce

pytestmark = pytest.mark.integration


def wave(prefix: str, n: int, start: int = 0) -> list[Click]:
    at = datetime.now(UTC) - timedelta(minutes=30)
    return [
        make_click(i, prefix=prefix, at=at + timedelta(seconds=i), session=f"s-{i % 7}",
                   ip=f"192.0.2.{i % 5}")
        for i in range(start, start + n)
    ]  # fmt: skip


def assert_fails_open_through_outage(
    settings: Settings, tmp_path: Path, service: Service, why: str
) -> None:
    """A worker on ``settings`` decides while ``service`` (running) is stopped and started."""
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    reader = DecisionReader(settings)

    def decisions_for(clicks: list[Click]) -> dict[str, Any]:
        return reader.wait_for(c.click_id for c in clicks)

    try:
        before = wave("before", 20)
        produce(settings, before)
        assert all(not d["degraded"] for d in decisions_for(before).values())

        service.proc.stop()
        during = wave("during", 20, start=20)
        produce(settings, during)
        got = decisions_for(during)
        assert got.keys() == {c.click_id for c in during}, worker.log()
        for d in got.values():  # fail open: never invalid, never missing
            assert d["degraded"] is True and d["verdict"] == "valid"
            assert d["reason_codes"] == [f"degraded:{why}"]

        service.start()
        deadline, healthy, n = time.monotonic() + 90, False, 40
        while not healthy and time.monotonic() < deadline:
            after = wave("after", 5, start=n)
            n += 5
            produce(settings, after)
            healthy = not all(d["degraded"] for d in decisions_for(after).values())
        assert healthy, f"worker did not recover after {why}:\n{worker.log()}"
        assert "degraded range to replay" in worker.log()
    finally:
        reader.close()
        worker.stop()


def test_redis_outage_fails_open_and_recovers(stack_settings: Settings, tmp_path: Path) -> None:
    redis_settings = RedisSettings(port=free_ports(1)[0], key_prefix="outage:")
    settings = isolated(stack_settings).model_copy(
        update={"redis": redis_settings, "state_dir": tmp_path / "state"}
    )
    with running(RedisService(settings)) as redis:
        assert_fails_open_through_outage(settings, tmp_path, redis, "redis_unavailable")


def test_triton_outage_fails_open_and_recovers(stack_settings: Settings, tmp_path: Path) -> None:
    http, grpc, metrics = free_ports(3)
    triton_settings = TritonSettings(
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        model_repository=stack_settings.triton.model_repository,
    )
    settings = isolated(stack_settings).model_copy(
        update={"triton": triton_settings, "state_dir": tmp_path / "state"}
    )
    with running(TritonService(settings)) as triton:
        assert_fails_open_through_outage(settings, tmp_path, triton, "triton_unavailable")


@pytest.fixture
def two_processes(stack_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """One ``slidr worker --processes 2``: Prometheus on metrics_port and metrics_port + 1."""
    worker = WorkerProcess(isolated(stack_settings), tmp_path / "pair.log", "--processes", "2")
    worker.start()
    yield worker
    if worker.proc is not None:
        worker.stop()


def _decided(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("slidr_clicks_total{")
    )


def send_in_waves(settings: Settings, clicks: list[Click]) -> dict[str, Any]:
    """Five consecutive clicks share no session or IP (see ``wave``), so within a wave no
    click's features depend on another's; each wave waits for the previous one's decisions."""
    reader = DecisionReader(settings)
    try:
        for i in range(0, len(clicks), 5):
            produce(settings, clicks[i : i + 5])
            reader.wait_for(c.click_id for c in clicks[i : i + 5])
        return reader.wait_for(c.click_id for c in clicks)
    finally:
        reader.close()


def test_two_processes_split_partitions_and_agree_with_one(
    stack_settings: Settings, two_processes: WorkerProcess, tmp_path: Path
) -> None:
    settings = two_processes.settings
    time.sleep(5)  # both join the group before traffic, so both get partitions
    clicks = wave("pair", 150)
    pair = send_in_waves(settings, clicks)
    assert pair.keys() == {c.click_id for c in clicks}
    port = settings.worker.metrics_port
    assert _decided(port) > 0 and _decided(port + 1) > 0, "one process got no partition"
    children = _children(two_processes)
    assert len(children) == 2
    assert two_processes.stop() == 0, two_processes.log()  # one SIGTERM stops both, cleanly
    assert not any(process_alive(pid) for pid in children)

    # The same clicks through a single worker on a fresh key prefix: identical features.
    solo_settings = isolated(stack_settings)
    solo = WorkerProcess(solo_settings, tmp_path / "solo.log")
    solo.start()
    try:
        single = send_in_waves(solo_settings, clicks)
    finally:
        solo.stop()
    assert {k: d["features"] for k, d in pair.items()} == {
        k: d["features"] for k, d in single.items()
    }
    session_1h = INDEX["session_clicks_1h"]
    assert max(d["features"][session_1h] for d in single.values()) > 1  # counters accumulated


def _children(worker: WorkerProcess) -> list[int]:
    assert worker.proc is not None
    path = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children")
    return [int(pid) for pid in path.read_text().split()]
