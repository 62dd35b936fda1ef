"""The daily cycle on the real stack: a normal day is promoted and served; a day whose purchase
labels went missing for hours is refused and the serving version stays."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from models.cycle_page import PAGE_FILE, CycleParts
from models.daily import CycleStopped, DailyCycle
from models.dataset import load_labelled
from models.scoring import score_version
from models.train import ensure_features
from slidr.registry import Registry, TritonVersions
from slidr.settings import CalibrationSettings, GuardrailSettings, Settings
from slidr.simulate.config import SimConfig
from slidr.simulate.runner import run
from slidr.simulate.sinks import ParquetSink
from tests.factories import make_click
from tests.stack_fixtures import private_model
from tests.worker_harness import DecisionReader, WorkerProcess, isolated, produce

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 2, tzinfo=UTC)
#: The later held-out day of a week simulated from START (see test_learning.py).
DAY = "2026-03-06"
#: A re-solve on clicks after the later day.
NEXT_DAY_NOON = "2026-03-07T12:00:00+00:00"


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("daily-week")
    run(SimConfig(start=START, days=7, clicks_per_day=6000, seed=9), [ParquetSink(root)])
    return root


def _settings(stack_settings: Settings) -> Settings:
    # 6,000 clicks a day leave night hours with no purchase by chance (allow six such hours) and
    # about 120 purchasing clicks a day to calibrate on.
    guardrails = GuardrailSettings(max_hours_without_purchases=6, min_human_density=0.0)
    calibration = CalibrationSettings(min_purchases=50)
    return private_model(stack_settings).model_copy(
        update={"guardrails": guardrails, "calibration": calibration}
    )


def test_a_normal_day_is_promoted_and_the_worker_serves_it(
    week: Path, stack_settings: Settings, tmp_path: Path
) -> None:
    settings = _settings(stack_settings)
    result = DailyCycle(settings, tmp_path / "run", TritonVersions(settings.triton)).run(week, DAY)

    assert result.promoted, result.reason
    assert result.serving_before == 1 and result.candidate == 2
    assert [s.name for s in result.steps] == [
        "load",
        "data guardrails",
        "train",
        "calibrate",
        "model guardrails",
        "promote",
    ]
    assert (tmp_path / "run" / "cycle.json").exists()
    # The budget binds the human FPR (the default): the guardrail judged its estimate.
    candidate = result.figures["candidate v2"]
    low, high = candidate["human_fpr_est_ci"]
    assert low <= candidate["human_fpr_est"] <= high
    guarded = json.loads((tmp_path / "run" / "model-guardrails.json").read_text())
    (budget,) = [c for c in guarded["checks"] if c["name"] == "fpr_budget"]
    assert budget["observed"] == candidate["human_fpr_est"]
    assert "human FPR (est.) on" in budget["detail"]
    # The run on one page: the candidate, both guardrail verdicts, the later day's figures.
    assert result.page == str(tmp_path / "run" / PAGE_FILE)
    page = Path(result.page).read_text()
    assert "promoted: version 2 serves (was 1)" in page
    assert "training data" in page and "candidate model" in page
    assert page.count('class="verdict passed"') >= 2
    assert f"{result.figures['candidate v2']['ivr']:.2%}" in page
    assert page.count("data:image/png;base64,") >= 4
    registry = Registry(settings)
    assert registry.serving().version == 2
    assert registry.entry(1).state == "stable"

    live = isolated(settings)
    worker = WorkerProcess(live, tmp_path / "worker.log")
    reader = DecisionReader(live)
    worker.start()
    try:
        click = make_click(1, prefix="daily")
        produce(live, [click])
        decision = reader.wait_for([click.click_id])[click.click_id]
        assert decision["model_version"] == 2, worker.log()
    finally:
        worker.stop()
        reader.close()


def test_a_day_with_hours_of_missing_purchase_labels_is_refused(
    week: Path, stack_settings: Settings, tmp_path: Path
) -> None:
    settings = _settings(stack_settings)
    broken = tmp_path / "archive"
    shutil.copytree(week, broken)
    # The purchase feed of DAY stopped from 10:00 to 20:00: those hours' clicks lose their labels.
    purchases = ds.dataset(broken / "purchases", partitioning="hive").to_table()
    t = purchases["event_time"]
    start = datetime.fromisoformat(f"{DAY}T10:00:00+00:00")
    gap = pc.and_(
        pc.greater_equal(t, pa.scalar(start, t.type)),
        pc.less(t, pa.scalar(start + timedelta(hours=10), t.type)),
    )
    shutil.rmtree(broken / "purchases")
    ds.write_dataset(
        purchases.filter(pc.invert(gap)),
        broken / "purchases",
        format="parquet",
        partitioning=["date", "hour"],
        partitioning_flavor="hive",
    )

    result = DailyCycle(settings, tmp_path / "run", TritonVersions(settings.triton)).run(
        broken, DAY
    )

    assert not result.promoted and result.stopped_at == "data guardrails"
    assert result.reason is not None and "hourly:purchases" in result.reason
    assert result.candidate is None  # nothing was trained
    assert result.page is not None
    page = Path(result.page).read_text()
    assert "refused at data guardrails: version 1 keeps serving" in page
    assert "hourly:purchases" in page
    assert Registry(settings).serving().version == 1


def test_a_model_that_invalidates_everything_is_refused(
    week: Path, stack_settings: Settings, tmp_path: Path
) -> None:
    settings = _settings(stack_settings)
    repo, name = Path(settings.triton.model_repository), settings.triton.model_name
    broken = repo / name / "2"
    shutil.copytree(repo / name / "1", broken)
    spec = json.loads((broken / "heuristic.json").read_text())
    spec["limits"] = {index: 1e-6 for index in spec["limits"]}  # every click is "robotic"
    (broken / "heuristic.json").write_text(json.dumps(spec))
    ensure_features(week, settings, print)
    later, _ = load_labelled(week, settings.learn, [DAY])

    cycle = DailyCycle(settings, tmp_path / "run", TritonVersions(settings.triton))
    report, figures = cycle.judge(2, 1, later)

    assert not report.passed
    failed = {check.name for check in report.failed}
    assert {"ivr", "fpr_budget"} <= failed, report.to_markdown()
    assert figures["candidate v2"]["ivr"] == 1.0


def test_a_serving_model_tightened_intraday_is_compared_as_served_and_as_calibrated(
    week: Path, stack_settings: Settings, tmp_path: Path
) -> None:
    """The monitor raised the serving model's thresholds (calibration/intraday.py); the next
    day's candidate lands where the serving model was calibrated. Against the tightened
    thresholds alone its IVR rises beyond the change limit and it would be refused: a
    tightening would lock out every successor that undoes it."""
    settings = _settings(stack_settings)
    repo, name = Path(settings.triton.model_repository), settings.triton.model_name
    for version in (2, 3):  # the same scores as a trained model: change limits apply
        shutil.copytree(repo / name / "1", repo / name / str(version))
        meta = repo / name / str(version) / "metadata.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "kind": "test_copy"}))
    ensure_features(week, settings, print)
    later, _ = load_labelled(week, settings.learn, [DAY])
    scores = score_version(repo, name, 1, later)
    calibrated = {"all": float(np.quantile(scores, 0.6))}
    tightened = {"all": float(np.quantile(scores, 0.97))}
    resolved = {"id": "v2-intraday", "thresholds": tightened}
    (repo / name / "2" / "calibration.json").write_text(json.dumps(resolved))
    (repo / name / "3" / "calibration.json").write_text(
        json.dumps({"id": "v3-daily", "thresholds": calibrated})
    )
    cycle = DailyCycle(settings, tmp_path / "run", TritonVersions(settings.triton))

    locked, _ = cycle.judge(3, 2, later)
    resolved["intraday"] = {"calibrated_record": "v2-daily", "calibrated_thresholds": calibrated}
    (repo / name / "2" / "calibration.json").write_text(json.dumps(resolved))
    report, figures = cycle.judge(3, 2, later)

    assert "ivr_change:all" in {c.name for c in locked.refusing}, locked.to_markdown()
    # (The day-zero heuristic's scores are over budget at any IVR: only the changes matter.)
    changes = [c for c in report.failed if c.name.startswith(("ivr_change", "fpr_increase"))]
    assert not changes, report.to_markdown()
    (change,) = [c for c in report.checks if c.name == "ivr_change:all"]
    assert change.observed == pytest.approx(0.0)
    assert "vs serving as calibrated" in change.detail
    as_calibrated = figures["serving v2 as calibrated"]
    assert as_calibrated["ivr"] == pytest.approx(figures["candidate v3"]["ivr"])
    assert figures["serving v2"]["ivr"] < as_calibrated["ivr"] - 0.2


def test_a_refused_cycle_recalibrates_the_serving_model_behind_the_same_checks(
    week: Path, stack_settings: Settings, tmp_path: Path
) -> None:
    """The candidate was refused, and the serving model still serves thresholds the monitor
    tightened intraday: the cycle recalibrates it on the same days (recalibration runs daily)
    and writes the record only when the later day passes the absolute checks."""
    settings = _settings(stack_settings)
    repo, name = Path(settings.triton.model_repository), settings.triton.model_name
    shutil.copytree(repo / name / "1", repo / name / "2")
    meta = repo / name / "2" / "metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "kind": "test_copy"}))
    ensure_features(week, settings, print)
    holdout, _ = load_labelled(week, settings.learn, ["2026-03-05"])
    later, _ = load_labelled(week, settings.learn, [DAY])
    # Re-solved on clicks of the later day's morning: these days cover its evidence.
    window = [f"{DAY}T06:00:00+00:00", f"{DAY}T10:00:00+00:00"]
    tightened: dict[str, Any] = {
        "id": "v2-intraday",
        "thresholds": {"all": 0.999},
        "intraday": {
            "calibrated_record": "v2-daily",
            "calibrated_thresholds": {"all": 0.5},
            "window": window,
        },
    }
    path = repo / name / "2" / "calibration.json"
    newer = {**tightened, "intraday": {**tightened["intraday"], "window": [DAY, NEXT_DAY_NOON]}}
    path.write_text(json.dumps(newer))
    kept = DailyCycle(settings, tmp_path / "kept", TritonVersions(settings.triton))
    fresher = kept.recalibrate_serving(2, holdout, later, CycleParts())
    assert fresher.record_id is None and fresher.detail.endswith(
        "newer than these days: kept as it is"
    )
    assert json.loads(path.read_text()) == newer
    path.write_text(json.dumps(tightened))

    strict = settings.model_copy(
        update={"guardrails": settings.guardrails.model_copy(update={"min_coverage": 0.999})}
    )
    refused = DailyCycle(strict, tmp_path / "strict", TritonVersions(settings.triton))
    with pytest.raises(CycleStopped, match="coverage"):
        refused.recalibrate_serving(2, holdout, later, CycleParts())
    assert json.loads(path.read_text()) == tightened  # nothing written

    lenient = settings.model_copy(
        update={
            "guardrails": settings.guardrails.model_copy(
                update={"min_coverage": 0.0, "max_fpr": 1.0, "fpr_budget_slack": 1.0}
            )
        }
    )
    parts = CycleParts()
    cycle = DailyCycle(lenient, tmp_path / "run", TritonVersions(settings.triton))
    done = cycle.recalibrate_serving(2, holdout, later, parts)

    served = json.loads(path.read_text())
    assert done.detail.startswith("serving v2 recalibrated: ")
    assert done.record_id == served["id"] and "intraday" not in served
    assert done.figures["ivr"] > 0 and "human_fpr_est" in done.figures
    assert served["model_version"] == 2 and served["thresholds"] != tightened["thresholds"]
    (report,) = parts.guardrails
    assert report.subject == "serving v2 recalibrated" and report.passed
    assert (tmp_path / "run" / "calibration-serving").is_dir()
