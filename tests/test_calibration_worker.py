"""A calibration record on the real stack: the worker serves its per-slice thresholds, falls
back to the parent's for a pooled slice, and follows a new record without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from calibration.calibrate import run
from calibration.record import write_record
from slidr.events import Click, DeviceType
from slidr.settings import Settings
from slidr.slices import lookup_threshold
from tests.factories import make_click
from tests.stack_fixtures import private_model
from tests.test_calibration import SETTINGS, synthetic_day
from tests.worker_harness import DecisionReader, WorkerProcess, isolated, produce

pytestmark = pytest.mark.integration

RELOAD_EVERY_S = 0.5


def one_click_per_slice(prefix: str) -> list[Click]:
    return [
        make_click(
            i,
            prefix=prefix,
            session=f"{prefix}-s-{i}",
            device=device,
            customer=f"u-{i}" if logged_in else None,
        )
        for i, (device, logged_in) in enumerate((d, li) for d in DeviceType for li in (False, True))
    ]


def served(reader: DecisionReader, clicks: list[Click]) -> dict[str, float]:
    decisions = reader.wait_for([c.click_id for c in clicks])
    assert len(decisions) == len(clicks)
    return {d["slice"]: d["threshold"] for d in decisions.values()}


def test_the_worker_serves_per_slice_thresholds_and_follows_a_new_record(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(private_model(stack_settings), reload_every_s=RELOAD_EVERY_S)
    repo, name = settings.triton.model_repository, settings.triton.model_name
    held_out = synthetic_day(2, "2026-01-06")
    # app/in has too few purchases here: the app slices are pooled and get the "app" threshold.
    pooled = run(
        synthetic_day(1, "2026-01-05", sizes={"app/in": 200}), held_out, SETTINGS, model_version=1
    )
    write_record(pooled, repo, name)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    reader = DecisionReader(settings)
    worker.start()
    try:
        first = one_click_per_slice("first")
        produce(settings, first)
        got = served(reader, first)
        assert got == {s: lookup_threshold(pooled.thresholds, s, -1.0) for s in got}, worker.log()
        assert got["app/in"] == got["app/out"] == pooled.thresholds["app"]
        assert len(set(got.values())) == 5  # four slices and the pooled "app"

        recalibrated = run(synthetic_day(1, "2026-01-05"), held_out, SETTINGS, model_version=1)
        write_record(recalibrated, repo, name)
        time.sleep(2 * RELOAD_EVERY_S)  # the worker looks for a new record this often
        second = one_click_per_slice("second")
        produce(settings, second)
        assert served(reader, second) == recalibrated.thresholds, worker.log()
    finally:
        reader.close()
        worker.stop()
