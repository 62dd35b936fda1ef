"""Model reloads that do not stick on failure, and deadlines on every Triton call.

A worker that could not switch to the pointer's version keeps its last good version and
retries with backoff; one whose version Triton unloaded follows the pointer again instead of
failing open forever. Unit tests with a fake Triton, then one worker on the real stack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from slidr.events import Click
from slidr.features import N_FEATURES
from slidr.model_record import ModelMismatch, model_dir, write_serving_pointer
from slidr.registry import RegistryError, TritonVersions
from slidr.settings import Settings, TritonSettings, WorkerSettings
from streams.metrics import WorkerMetrics
from streams.pipeline import ClickPipeline, RawClick
from streams.scorer import ModelUnavailable, ScorerUnavailable, TritonScorer
from streams.serving_model import ServingModel
from tests.factories import make_click
from tests.stack_fixtures import private_model
from tests.worker_harness import DecisionReader, WorkerProcess, isolated, produce

RELOAD = WorkerSettings(reload_every_s=1.0, reload_backoff_s=2.0, reload_backoff_max_s=8.0)


class FakeTriton:
    """A scorer whose loaded versions the test sets; counts the checks it answers."""

    def __init__(self, loaded: set[int]) -> None:
        self.loaded = loaded
        self.checks: list[int] = []

    async def check(self, version: int, batch_size: int) -> None:
        self.checks.append(version)
        if version not in self.loaded:
            raise ModelMismatch(f"model 'slidr' version {version} is not loaded in Triton")

    async def score(
        self, features: npt.NDArray[np.float32], version: int
    ) -> npt.NDArray[np.float32]:
        if version not in self.loaded:
            raise ModelUnavailable(f"Request for unknown model: 'slidr' version {version}")
        return np.full(len(features), 0.1, dtype=np.float32)

    async def aclose(self) -> None: ...


class ZeroStore:
    async def features(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        return np.zeros((len(clicks), N_FEATURES), dtype=np.float32)

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


_stamp = iter(range(1, 1_000_000))


def point_at(repo: Path, version: int) -> None:
    """Move the pointer, with an mtime of its own: two moves within one filesystem clock tick
    would otherwise look like none to the worker's stat()."""
    write_serving_pointer(repo, "slidr", version)
    ns = 1_700_000_000_000_000_000 + next(_stamp) * 1_000_000
    os.utime(model_dir(repo, "slidr") / "serving.json", ns=(ns, ns))


def add_version(repo: Path, version: int) -> None:
    shutil.copytree(model_dir(repo, "slidr") / "1", model_dir(repo, "slidr") / str(version))


@pytest.fixture
def served(repo: Path) -> tuple[ServingModel, FakeTriton, Clock, WorkerMetrics]:
    add_version(repo, 2)
    add_version(repo, 3)
    point_at(repo, 1)
    settings = Settings(triton=TritonSettings(model_repository=repo), worker=RELOAD)
    triton, clock, metrics = FakeTriton({1}), Clock(), WorkerMetrics()
    return ServingModel(settings, triton, metrics, clock=clock), triton, clock, metrics


def sample(metrics: WorkerMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def failing_on_2(model: ServingModel, clock: Clock, repo: Path) -> None:
    """Version 1 loaded, then the pointer moved to version 2, which Triton lacks: the switch
    at the next reload check fails."""
    await model.load()
    point_at(repo, 2)
    clock.now += 1.0
    await model.current()


async def test_a_failed_switch_keeps_the_good_version_and_is_retried_with_backoff(
    served: tuple[ServingModel, FakeTriton, Clock, WorkerMetrics],
    repo: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, triton, clock, metrics = served
    assert (await model.load()).version == 1
    point_at(repo, 2)  # promoted, but Triton has not loaded version 2
    tried_at: list[float] = []
    with caplog.at_level(logging.DEBUG, logger="streams.serving_model"):
        for _ in range(30):  # one batch every 0.5 s for 15 s
            clock.now += 0.5
            before = len(triton.checks)
            assert (await model.current()).version == 1
            if len(triton.checks) > before:
                tried_at.append(clock.now - 100.0)
    # First attempt at the reload check, then 2, 4, 8, 8 s later (capped), none per batch.
    assert tried_at == [1.0, 3.0, 7.0, 15.0]
    assert model.failures == 4
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "keeping version 1" in errors[0].getMessage()
    assert sample(metrics, "slidr_model_version") == 1
    assert sample(metrics, "slidr_model_pointer_version") == 2
    assert sample(metrics, "slidr_model_reload_failures_total") == 4

    triton.loaded.add(2)  # the same pointer: the failed switch is retried, and now succeeds
    clock.now += 8.0
    assert (await model.current()).version == 2
    assert model.failures == 0
    assert sample(metrics, "slidr_model_version") == 2
    assert sample(metrics, "slidr_model_pointer_version") == 2


async def test_a_new_pointer_during_a_failure_streak_is_tried_at_the_next_check(
    served: tuple[ServingModel, FakeTriton, Clock, WorkerMetrics], repo: Path
) -> None:
    model, triton, clock, metrics = served
    await failing_on_2(model, clock, repo)  # retry in 2 s
    triton.loaded.add(3)
    point_at(repo, 3)
    clock.now += 1.0  # the next reload check, before the retry is due
    assert (await model.current()).version == 3
    point_at(repo, 1)
    clock.now += 1.0
    assert (await model.current()).version == 1  # back to a loaded version: no failure
    assert sample(metrics, "slidr_model_reload_failures_total") == 1


async def test_the_pointer_moving_back_ends_a_failure_streak(
    served: tuple[ServingModel, FakeTriton, Clock, WorkerMetrics], repo: Path
) -> None:
    model, _, clock, metrics = served
    fingerprint_on_1 = (model_dir(repo, "slidr") / "serving.json").stat().st_mtime_ns
    await failing_on_2(model, clock, repo)
    write_serving_pointer(repo, "slidr", 1)
    os.utime(model_dir(repo, "slidr") / "serving.json", ns=(fingerprint_on_1, fingerprint_on_1))
    clock.now += 1.0
    assert (await model.current()).version == 1
    assert model.failures == 0
    assert sample(metrics, "slidr_model_pointer_version") == 1


async def test_a_served_version_unloaded_from_triton_fails_open_until_the_pointer_is_followed(
    served: tuple[ServingModel, FakeTriton, Clock, WorkerMetrics], repo: Path
) -> None:
    model, triton, clock, metrics = served
    pipeline = ClickPipeline(model.settings, ZeroStore(), model, metrics)
    n = iter(range(1000))

    async def batch() -> list[tuple[int, bool]]:
        clicks = [make_click(next(n)) for _ in range(3)]
        outcome = await pipeline.process(
            [RawClick(c.to_json(), c.click_id.encode(), 0, i) for i, c in enumerate(clicks)]
        )
        decisions = [orjson.loads(d) for d in outcome.decisions]
        return [(d["model_version"], d["degraded"]) for d in decisions]

    await model.load()
    assert await batch() == [(1, False)] * 3
    triton.loaded = {2}  # the monitor unloaded version 1; the pointer still names it
    assert await batch() == [(1, True)] * 3
    assert sample(metrics, "slidr_model_version") == 0  # nothing is scored
    # The next batch follows the pointer at once (not reload_every_s later): still version 1,
    # not loaded, so it keeps failing open and backs off.
    clock.now += 0.1
    assert await batch() == [(1, True)] * 3
    assert sample(metrics, "slidr_model_reload_failures_total") == 1
    point_at(repo, 2)  # a rollback (or promotion) to a loaded version
    clock.now += 1.0
    assert await batch() == [(2, False)] * 3
    assert sample(metrics, "slidr_model_version") == 2
    assert sample(metrics, "slidr_model_pointer_version") == 2


async def test_a_lost_version_loaded_again_is_served_again(
    served: tuple[ServingModel, FakeTriton, Clock, WorkerMetrics],
) -> None:
    model, triton, clock, metrics = served
    await model.load()
    model.lost(2, "a batch still in flight on a version the worker left")  # ignored
    assert sample(metrics, "slidr_model_version") == 1
    model.lost(1, "unloaded")
    triton.loaded = set()
    clock.now += 0.1
    assert (await model.current()).version == 1  # retried at once, failed
    triton.loaded = {1}  # Triton restarted and loaded it again
    clock.now += 2.0
    assert (await model.current()).version == 1
    assert sample(metrics, "slidr_model_version") == 1 and model.failures == 0


async def test_losing_the_served_version_retries_a_backed_off_switch_at_once(
    served: tuple[ServingModel, FakeTriton, Clock, WorkerMetrics], repo: Path
) -> None:
    model, triton, clock, _ = served
    await model.load()
    point_at(repo, 2)
    for _ in range(3):  # three failures: the next retry is 8 s away
        clock.now += 8.0
        await model.current()
    assert model.failures == 3
    triton.loaded = {2}  # Triton swapped versions: the worker's version 1 is gone
    model.lost(1, "unloaded")
    clock.now += 0.1
    assert (await model.current()).version == 2


# --- deadlines: a server that accepts connections and never answers ---


@pytest.fixture
def silent_port() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


async def test_the_scorer_check_has_a_deadline_and_names_the_server(silent_port: int) -> None:
    settings = TritonSettings(grpc_port=silent_port, control_timeout_s=0.3)
    scorer = TritonScorer(settings)
    started = time.monotonic()
    try:
        with pytest.raises(ScorerUnavailable) as caught:
            await asyncio.wait_for(scorer.check(1, 500), timeout=10)
    finally:
        await scorer.aclose()
    assert time.monotonic() - started < 3
    assert f"Triton at 127.0.0.1:{silent_port} did not answer within 0.3 s" in str(caught.value)
    assert "SLIDR_TRITON__CONTROL_TIMEOUT_S" in str(caught.value)


def test_the_registry_triton_calls_have_deadlines_and_name_the_server(silent_port: int) -> None:
    versions = TritonVersions(TritonSettings(grpc_port=silent_port, control_timeout_s=0.3))
    for call in (versions.loaded, lambda: versions.load([1])):
        started = time.monotonic()
        with pytest.raises(RegistryError, match=f"Triton at 127.0.0.1:{silent_port} did not "):
            call()
        assert time.monotonic() - started < 3


# --- the real stack ---


def scrape(settings: Settings) -> dict[str, float]:
    url = f"http://127.0.0.1:{settings.worker.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in body.splitlines())
        if name.startswith("slidr_model_") and not name.endswith("_created")
    }


def wave(prefix: str, n: int = 5) -> list[Click]:
    return [make_click(i, prefix=prefix, session=f"{prefix}-{i}") for i in range(n)]


@pytest.mark.integration
def test_a_worker_retries_a_failed_switch_and_follows_the_pointer_when_its_version_is_unloaded(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(
        private_model(stack_settings),
        reload_every_s=0.5,
        reload_backoff_s=0.5,
        reload_backoff_max_s=2.0,
    )
    repo, name = settings.triton.model_repository, settings.triton.model_name
    write_serving_pointer(repo, name, 1)  # else the newest directory serves
    shutil.copytree(model_dir(repo, name) / "1", model_dir(repo, name) / "2")
    triton = TritonVersions(settings.triton)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    reader = DecisionReader(settings)
    n = iter(range(1000))

    def decided() -> set[tuple[int, bool]]:
        clicks = wave(f"w{next(n)}")
        produce(settings, clicks)
        got = reader.wait_for(c.click_id for c in clicks)
        assert len(got) == len(clicks), worker.log()
        return {(d["model_version"], d["degraded"]) for d in got.values()}

    def until(want: set[tuple[int, bool]], timeout_s: float = 60) -> dict[str, float]:
        """Waves until one is decided as ``want``; then the worker's model metrics."""
        deadline = time.monotonic() + timeout_s
        while decided() != want:
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.3)
        return scrape(settings)

    worker.start()
    try:
        assert until({(1, False)}) == {
            "slidr_model_version": 1,
            "slidr_model_pointer_version": 1,
            "slidr_model_reload_failures_total": 0,
        }
        # Promoted before Triton loaded it: the switch fails (twice: it is retried, on the
        # batches that come), version 1 keeps scoring every wave.
        write_serving_pointer(repo, name, 2)
        deadline = time.monotonic() + 30
        while (metrics := scrape(settings))["slidr_model_reload_failures_total"] < 2:
            assert decided() == {(1, False)}
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.3)
        assert metrics["slidr_model_version"] == 1 and metrics["slidr_model_pointer_version"] == 2
        # Triton swaps 1 for 2 (what a promotion then the unload of the old version do): the
        # failed switch is retried, not recorded as done, so nothing fails open for long.
        triton.load([2])
        metrics = until({(2, False)})
        assert metrics["slidr_model_version"] == metrics["slidr_model_pointer_version"] == 2

        # Version 2 unloaded under the worker while the pointer still names it: fail-open, and
        # the served-version metric says nothing is served.
        triton.load([1])
        metrics = until({(2, True)})
        assert metrics["slidr_model_version"] == 0 and metrics["slidr_model_pointer_version"] == 2
        write_serving_pointer(repo, name, 1)  # a rollback to a version Triton has
        metrics = until({(1, False)})
        assert metrics["slidr_model_version"] == metrics["slidr_model_pointer_version"] == 1
        log = worker.log_path.read_text(errors="replace")
        # One ERROR line per failure streak, however many retries and batches.
        assert log.count("keeping version 1: the new serving record was refused") == 1, log
        assert log.count("is gone from Triton") == 1, log
        assert "model reload recovered: serving version 2" in log
        assert "model reload recovered: serving version 1" in log
    finally:
        reader.close()
        worker.stop()
