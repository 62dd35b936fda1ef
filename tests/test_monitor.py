"""The online monitor: windows and rules as plain logic, then a bad model on the real stack."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from slidr.events import Decision, DeviceType, Verdict
from slidr.features import FEATURE_HASH
from slidr.registry import Registry, State, TritonVersions
from slidr.serving_figures import ServingFigures
from slidr.settings import MonitorSettings, RegistrySettings, Settings, TritonSettings
from streams.monitor.consumer import Monitor
from streams.monitor.rules import deviations, psi
from streams.monitor.window import MODEL_ERROR, Observation, SlidingWindow, WindowFigures
from tests.factories import make_click
from tests.stack_fixtures import free_ports, private_model, settings_env
from tests.test_registry import FakeTriton, add_version
from tests.worker_harness import SLIDR, DecisionReader, WorkerProcess, isolated, produce

LIMITS = MonitorSettings(min_decisions=100, min_slice_decisions=50, window_s=12.0)


def obs(
    n: int = 1,
    *,
    invalid: float = 0.0,
    version: int = 1,
    slice_name: str = "desktop/out",
    at: float = 1000.0,
    degraded: bool = False,
    model_error: bool = False,
    score: float | None = None,
) -> list[Observation]:
    """``n`` decisions, the first ``invalid`` share of them invalid (score 0.9, else 0.1)."""
    return [
        Observation(
            version=version,
            slice=slice_name,
            invalid=i < invalid * n,
            score=score if score is not None else (0.9 if i < invalid * n else 0.1),
            degraded=degraded,
            model_error=model_error,
            at=at,
        )
        for i in range(n)
    ]


def window_of(observations: list[Observation], now: float = 1000.0) -> WindowFigures:
    window = SlidingWindow(LIMITS.window_s)
    for o in observations:
        window.add(o)
    return window.figures(now)


# --- windows ---


def test_window_slides_out_old_buckets_and_ignores_degraded_in_ivr() -> None:
    window = SlidingWindow(12.0)  # 12 buckets of 1 s
    for o in obs(10, invalid=1.0, at=100.0) + obs(10, at=105.0):
        window.add(o)
    for o in obs(5, at=105.0, degraded=True, model_error=True):
        window.add(o)
    figures = window.figures(now=105.0)
    assert figures.total.decisions == 25 and figures.total.scored == 20
    assert figures.total.ivr == 0.5 and figures.total.model_error_share == 0.2
    assert figures.total.histogram[9] == 10 and figures.total.histogram[1] == 10
    later = window.figures(now=112.5)  # the bucket of t=100 left the window
    assert later.total.scored == 10 and later.total.ivr == 0.0
    assert window.first_at == 100.0
    window.add(obs(1, at=200.0)[0])  # a version nobody judges still forgets old buckets
    assert list(window.buckets) == [200]


def test_observation_reads_a_published_decision_and_skips_anything_else() -> None:
    click = make_click(1, device=DeviceType.APP)
    decision = Decision(
        click_id=click.click_id,
        event_time=click.event_time,
        verdict=Verdict.VALID,
        score=0.0,
        threshold=0.5,
        slice="app/out",
        model_name="slidr",
        model_version=3,
        reason_codes=[MODEL_ERROR],
        feature_hash=FEATURE_HASH,
        features=[],
        degraded=True,
        processing_ms=1.0,
        decided_at=datetime.now(UTC),
    )
    o = Observation.from_json(decision.to_json(), at=5.0)
    assert o == Observation(3, "app/out", False, 0.0, True, True, 5.0)
    assert Observation.from_json(b"{not json", at=5.0) is None
    assert Observation.from_json(b'{"click_id": "x"}', at=5.0) is None


# --- rules ---


def test_small_windows_are_not_judged() -> None:
    baseline = ServingFigures(ivr=0.0)
    assert deviations(window_of(obs(99, invalid=1.0)), baseline, LIMITS) == []
    found = deviations(window_of(obs(100, invalid=1.0)), baseline, LIMITS)
    assert [(d.rule, d.scope) for d in found] == [("IVR", "all")]


def test_a_deviation_must_be_both_large_and_beyond_noise() -> None:
    baseline = ServingFigures(ivr=0.10, slices={"desktop/out": 0.10})
    # Large enough but 60 decisions of a slice are too few to tell from noise (z ~ 3.9).
    slice_only = MonitorSettings(min_decisions=10_000, min_slice_decisions=50)
    assert deviations(window_of(obs(60, invalid=0.25)), baseline, slice_only) == []
    # The same gap over 400 decisions is sharp, overall and in its slice.
    found = deviations(window_of(obs(400, invalid=0.25)), baseline, LIMITS)
    assert {(d.rule, d.scope) for d in found} == {("IVR", "all"), ("IVR", "desktop/out")}
    assert "IVR of all is 0.250, expected 0.100 (400 decisions)" in [str(d) for d in found]
    # Beyond noise but small: a recalibrated model may move IVR by a few points.
    assert deviations(window_of(obs(5000, invalid=0.15)), baseline, LIMITS) == []


def test_one_slice_can_deviate_alone() -> None:
    baseline = ServingFigures(ivr=0.1, slices={"desktop/out": 0.1, "app/in": 0.1})
    window = window_of(obs(900, invalid=0.1) + obs(100, invalid=0.9, slice_name="app/in"))
    assert [(d.rule, d.scope) for d in deviations(window, baseline, LIMITS)] == [("IVR", "app/in")]


def test_triton_errors_count_without_a_baseline_and_redis_outages_do_not() -> None:
    scored = obs(40)
    assert deviations(window_of(scored + obs(60, degraded=True)), None, LIMITS) == []
    found = deviations(window_of(scored + obs(60, degraded=True, model_error=True)), None, LIMITS)
    assert [(d.rule, d.observed, d.relation) for d in found] == [
        ("model-error share", 0.6, "limit")
    ]


def test_score_histogram_shift_is_caught_when_training_recorded_one() -> None:
    low = [50.0, 30.0, 10.0, 5.0, 5.0, 0, 0, 0, 0, 0]
    baseline = ServingFigures(ivr=0.0, score_histogram=low)
    same = (
        obs(50, score=0.05)
        + obs(30, score=0.15)
        + obs(10, score=0.25)
        + obs(5, score=0.35)
        + obs(5, score=0.45)
    )
    assert psi(window_of(same).total.score_shares, low) < 0.01
    assert deviations(window_of(same), baseline, LIMITS) == []
    shifted = window_of(obs(100, score=0.45))  # all valid: IVR unchanged
    assert [d.rule for d in deviations(shifted, baseline, LIMITS)] == ["score PSI"]


# --- the monitor's decisions, on a temporary registry ---


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lifecycle(tmp_path: Path) -> tuple[Settings, Registry, FakeTriton]:
    add_version(tmp_path, 1)
    settings = Settings(
        triton=TritonSettings(model_repository=tmp_path, model_name="m"),
        monitor=LIMITS,
        registry=RegistrySettings(unload_after_s=5.0),
    )
    triton = FakeTriton()
    registry = Registry(settings, triton)
    registry.entries()
    add_version(tmp_path, 2)
    registry.register(2)
    return settings, registry, triton


def feed(monitor: Monitor, observations: list[Observation]) -> None:
    for o in observations:
        monitor.observe(o)


def metric(monitor: Monitor, name: str) -> float | None:
    return monitor.metrics.registry.get_sample_value(name)


def test_a_deviating_version_is_rolled_back_to_the_one_observed_before(
    lifecycle: tuple[Settings, Registry, FakeTriton],
) -> None:
    settings, registry, triton = lifecycle
    clock = Clock()
    monitor = Monitor(settings, registry, clock=clock)
    feed(monitor, obs(200, invalid=0.05, at=999.0))
    assert monitor.evaluate() == []
    observed = registry.entry(1).observed
    assert observed is not None and observed.ivr == 0.05 and observed.decisions == 200

    registry.promote(2)
    assert monitor.baseline(2) == ServingFigures(ivr=0.05, slices={"desktop/out": 0.05})
    feed(monitor, obs(100, invalid=1.0, version=2, at=1001.0))
    clock.now = 1003.5
    found = monitor.evaluate()
    assert [(d.rule, d.scope) for d in found] == [("IVR", "all"), ("IVR", "desktop/out")]
    assert registry.serving().version == 1
    assert registry.entry(2).state is State.REFUSED
    assert (registry.entry(2).reason or "").startswith("monitor: IVR of all is 1.000")
    assert metric(monitor, "slidr_monitor_rollback_seconds") == 2.5
    assert metric(monitor, "slidr_monitor_rollbacks_total") == 1
    assert metric(monitor, "slidr_monitor_alert") == 1
    assert triton.loads[-1] == {1, 2}  # version 2 stays loaded while workers follow

    clock.now += settings.registry.unload_after_s
    monitor.evaluate()
    assert triton.loads[-1] == {1}


def test_alert_only_keeps_the_version_and_alerts_once_a_window(
    lifecycle: tuple[Settings, Registry, FakeTriton],
) -> None:
    settings, registry, _ = lifecycle
    settings = settings.model_copy(
        update={"monitor": LIMITS.model_copy(update={"auto_rollback": False})}
    )
    registry.promote(2)
    registry.record_observed(1, ServingFigures(ivr=0.05))
    clock = Clock()
    monitor = Monitor(settings, registry, clock=clock)
    feed(monitor, obs(100, invalid=1.0, version=2, at=1000.0))
    assert monitor.evaluate() and monitor.evaluate()
    assert registry.serving().version == 2
    assert metric(monitor, "slidr_monitor_alert") == 1
    # One alert: the second evaluation, in the same window, stayed quiet.
    deviations_counted = monitor.metrics.registry.get_sample_value(
        "slidr_monitor_deviations_total", {"rule": "IVR"}
    )
    assert deviations_counted == 1


def test_expected_figures_of_the_version_come_first(
    lifecycle: tuple[Settings, Registry, FakeTriton], tmp_path: Path
) -> None:
    settings, registry, _ = lifecycle
    (tmp_path / "m" / "2" / "calibration.json").write_text(json.dumps({"expected": {"ivr": 0.9}}))
    registry.promote(2)
    registry.record_observed(1, ServingFigures(ivr=0.05))
    monitor = Monitor(settings, registry, clock=Clock())
    feed(monitor, obs(100, invalid=0.95, version=2))
    assert monitor.evaluate() == []
    assert registry.serving().version == 2


def version_sample(monitor: Monitor, name: str, version: int) -> float | None:
    return monitor.metrics.registry.get_sample_value(name, {"version": str(version)})


def test_a_version_workers_were_left_on_is_flagged_when_triton_fails_it(
    lifecycle: tuple[Settings, Registry, FakeTriton], caplog: pytest.LogCaptureFixture
) -> None:
    settings, registry, triton = lifecycle
    registry.promote(2)
    clock = Clock()
    monitor = Monitor(settings, registry, clock=clock)
    # Version 2 serves; one worker stayed on version 1, which Triton no longer has. Fewer
    # decisions than min_decisions: that worker holds few partitions.
    feed(monitor, obs(200, version=2, at=999.0))
    feed(monitor, obs(10, version=1, at=999.0) + obs(50, version=1, at=999.0, degraded=True,
                                                     model_error=True))  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="streams.monitor.consumer"):
        assert monitor.evaluate() == []  # the serving version is fine
        monitor.evaluate()  # flagged once a window, not once an evaluation
    assert version_sample(monitor, "slidr_monitor_version_alert", 1) == 1
    assert version_sample(monitor, "slidr_monitor_version_model_error_share", 1) == 50 / 60
    assert version_sample(monitor, "slidr_monitor_version_degraded_share", 1) == 50 / 60
    assert version_sample(monitor, "slidr_monitor_version_decisions", 1) == 60
    assert version_sample(monitor, "slidr_monitor_version_alert", 2) == 0
    assert version_sample(monitor, "slidr_monitor_version_decisions", 2) == 200
    [alert] = [r.getMessage() for r in caplog.records]
    assert "ALERT: model m version 1 does not serve (version 2 does)" in alert
    assert "model-error share of all is 0.833" in alert
    # Flagged, never rolled back: it does not serve, its workers must follow the pointer.
    assert registry.serving().version == 2 and triton.loads[-1] == {1, 2}
    assert metric(monitor, "slidr_monitor_rollbacks_total") == 0

    # Once its workers followed, the version leaves the window and its series go away.
    clock.now += LIMITS.window_s
    monitor.evaluate()
    assert 1 not in monitor.windows
    assert version_sample(monitor, "slidr_monitor_version_alert", 1) is None


def test_redis_outages_do_not_flag_a_version(
    lifecycle: tuple[Settings, Registry, FakeTriton],
) -> None:
    settings, registry, _ = lifecycle
    monitor = Monitor(settings, registry, clock=Clock())
    feed(monitor, obs(100, version=2, at=999.0, degraded=True))  # no model error
    assert monitor.watch_versions(1, 1000.0) == {}
    assert version_sample(monitor, "slidr_monitor_version_degraded_share", 2) == 1.0
    assert version_sample(monitor, "slidr_monitor_version_alert", 2) == 0


# --- the real stack: a bad model forced into serving is rolled back ---


def install_bad_version(settings: Settings, version: int) -> None:
    """A velocity heuristic with tiny limits: every click is past them, so all are invalid."""
    root = Path(settings.triton.model_repository) / settings.triton.model_name
    vdir = root / str(version)
    vdir.mkdir()
    shutil.copy(root / "model.py", vdir / "model.py")
    day_zero = json.loads((root / "1" / "heuristic.json").read_text())
    day_zero["limits"] = {index: 0.01 for index in day_zero["limits"]}
    (vdir / "heuristic.json").write_text(json.dumps(day_zero))
    meta = {"kind": "velocity_heuristic", "feature_hash": FEATURE_HASH, "note": "deliberately bad"}
    (vdir / "metadata.json").write_text(json.dumps(meta))


def wave(prefix: str, n: int) -> list:  # type: ignore[type-arg]
    at = datetime.now(UTC) - timedelta(minutes=1)
    devices = list(DeviceType)
    return [
        make_click(i, prefix=prefix, at=at, session=f"{prefix}-{i}", ip=f"203.0.113.{i % 200}",
                   device=devices[i % 3])
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def live(stack_settings: Settings) -> Settings:
    private = isolated(private_model(stack_settings), reload_every_s=0.5)
    monitor = MonitorSettings(
        consumer_group=f"monitor-{private.worker.consumer_group}",
        from_beginning=True,
        window_s=6.0,
        evaluate_every_s=0.25,
        min_decisions=150,
        min_slice_decisions=40,
        metrics_port=free_ports(1)[0],
    )
    return private.model_copy(
        update={"monitor": monitor, "registry": RegistrySettings(unload_after_s=2.0)}
    )


@pytest.fixture
def monitor_process(live: Settings, tmp_path: Path) -> Iterator[Path]:
    log_path = tmp_path / "monitor.log"
    env = {**os.environ, **settings_env(live)}
    with log_path.open("ab") as log:
        proc = subprocess.Popen([SLIDR, "monitor"], env=env, stdout=log, stderr=log)
    yield log_path
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.integration
def test_a_bad_model_forced_into_serving_is_rolled_back_automatically(
    live: Settings, monitor_process: Path, tmp_path: Path
) -> None:
    triton = TritonVersions(live.triton)
    registry = Registry(live, triton)
    assert registry.serving().version == 1
    worker = WorkerProcess(live, tmp_path / "worker.log")
    worker.start()
    reader = DecisionReader(live)
    try:
        # Version 1 serves normal traffic; the monitor records what it looks like.
        first = wave("good", 300)
        produce(live, first)
        decided = reader.wait_for(c.click_id for c in first)
        assert len(decided) == 300, worker.log()
        assert {d["model_version"] for d in decided.values()} == {1}
        deadline = time.monotonic() + 30
        while registry.entry(1).observed is None and time.monotonic() < deadline:
            time.sleep(0.2)
        observed = registry.entry(1).observed
        assert observed is not None and observed.ivr < 0.1, monitor_process.read_text()

        install_bad_version(live, 2)
        registry.register(2)
        promoted_at = time.monotonic()
        registry.promote(2, why="forced by the test")  # no guardrail stopped it

        versions: list[int] = []
        degraded = 0
        deadline = time.monotonic() + 90
        n = 0
        while time.monotonic() < deadline:
            batch = wave(f"w{n}", 60)
            n += 1
            produce(live, batch)
            got = reader.wait_for((c.click_id for c in batch), timeout_s=30)
            versions += [got[c.click_id]["model_version"] for c in batch if c.click_id in got]
            degraded += sum(d["degraded"] for d in got.values())
            if 2 in versions and versions[-60:] == [1] * 60:
                break
        restored_at = time.monotonic()
        log = monitor_process.read_text()
        assert 2 in versions, worker.log()
        assert versions[-60:] == [1] * 60, log
        assert registry.serving().version == 1
        assert registry.entry(2).state is State.REFUSED
        assert "ALERT: rolled model" in log
        assert degraded == 0  # both versions stayed loaded while the workers switched
        metrics = (
            urllib.request.urlopen(
                f"http://127.0.0.1:{live.monitor.metrics_port}/metrics", timeout=5
            )
            .read()
            .decode()
        )
        took = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("slidr_monitor_rollback_seconds ")
        )
        print(
            f"\nfirst bad decision -> rollback: {took:.2f} s; promotion -> all decisions back "
            f"on version 1: {restored_at - promoted_at:.2f} s"
        )
        deadline = time.monotonic() + 30
        while 2 in triton.loaded() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert triton.loaded() == {1}
    finally:
        reader.close()
        worker.stop()
