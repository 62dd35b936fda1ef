"""Data guardrails on small synthetic labelled click frames (a week of history plus a new day)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from guardrails.data import REPORT_STEM, VALIDATION_FILE, check_training_data, type_family
from guardrails.report import GuardrailError, GuardrailFailed, GuardrailReport, Status
from slidr.features import FEATURES, MAX_GAP_S, TIME_FEATURES
from slidr.settings import GuardrailSettings
from slidr.slices import slice_of

START = "2026-01-05"  # a Monday
NEW_DAY = "2026-01-12"  # the Monday after: the last day of an 8-day frame
#: Clicks of each hour that were purchases: every hour of every day has some.
PURCHASES_PER_HOUR = 2


def labelled_frame(days: int = 8, clicks_per_hour: int = 20, seed: int = 1) -> pd.DataFrame:
    """A labelled click frame as docs/datasets.md describes it, with plausible values."""
    rng = np.random.default_rng(seed)
    n = days * 24 * clicks_per_hour
    seconds = (np.arange(n) // clicks_per_hour) * 3600 + rng.integers(0, 3600, n)
    event_time = pd.Series(pd.Timestamp(START, tz="UTC") + pd.to_timedelta(seconds, unit="s"))
    event_time = event_time.astype("datetime64[ms, UTC]")
    logged_in = rng.random(n) < 0.5
    purchased = np.arange(n) % clicks_per_hour < PURCHASES_PER_HOUR
    rfm_human = rng.random(n) < 0.2
    device = rng.choice(["desktop", "mobile_web", "app"], n)
    frame = pd.DataFrame(
        {
            "click_id": [f"c-{i}" for i in range(n)],
            "event_time": event_time,
            "date": event_time.dt.strftime("%Y-%m-%d"),
            "hour": event_time.dt.hour.astype("int8"),
            "dow": event_time.dt.dayofweek.astype("int8"),
            "logged_in": logged_in,
            "device_type": device,
            "slice": [slice_of(d, i) for d, i in zip(device, logged_in, strict=True)],
            "purchased": purchased,
            "rfm_human": rfm_human,
            "robotic": rng.random(n) < 0.1,
        }
    )
    relabel(frame)
    for name in FEATURES:
        values: npt.NDArray[Any]
        if name.endswith("_gap_s"):
            values = rng.uniform(0.0, MAX_GAP_S, n)
        elif name in TIME_FEATURES:
            values = rng.uniform(-1.0, 1.0, n)
        elif name == "logged_in":
            values = logged_in
        else:
            values = rng.poisson(3.0, n)
        frame[name] = np.asarray(values, dtype=np.float32)
    return frame


def relabel(frame: pd.DataFrame) -> None:
    """The weak label: human (0) if the click led to a purchase or its customer has high RFM."""
    frame["label"] = (~(frame["purchased"] | frame["rfm_human"])).astype("int8")


def failed(report: GuardrailReport) -> dict[str, str]:
    return {check.name: check.detail for check in report.failed}


def test_a_normal_day_passes_and_its_results_are_saved(tmp_path: Path) -> None:
    report = check_training_data(labelled_frame(), NEW_DAY, GuardrailSettings(), tmp_path)

    assert report.passed, report.to_markdown()
    names = {check.name for check in report.checks}
    assert {"schema", "nulls", "hourly:volume_ratio", "hourly:purchases"} <= names
    assert {"hour_of_week:human_density", "range:ip_gap_s", "range:label"} <= names
    saved = json.loads((tmp_path / VALIDATION_FILE).read_text())
    assert set(saved) == {"columns", "values", "hours", "hours_of_week"}
    assert all(result["success"] for result in saved.values())
    summary = json.loads((tmp_path / f"{REPORT_STEM}.json").read_text())
    assert summary["passed"] is True
    assert len(summary["checks"]) == len(report.checks)


def test_a_day_without_purchase_labels_for_four_hours_is_refused(tmp_path: Path) -> None:
    frame = labelled_frame()
    lost = (frame["date"] == NEW_DAY) & frame["hour"].between(3, 6)
    frame.loc[lost, "purchased"] = False
    relabel(frame)

    report = check_training_data(frame, NEW_DAY, GuardrailSettings(), tmp_path)

    assert list(failed(report)) == ["hourly:purchases"]
    (check,) = report.failed
    assert check.observed == 0
    assert check.bound == ">= 1 in 90% of rows"
    assert check.detail == ", ".join(f"{NEW_DAY} {h:02d}h: 0" for h in range(3, 7))
    refused = r"hourly:purchases \(observed 0, bound >= 1 in 90% of rows\)"
    with pytest.raises(GuardrailFailed, match=refused):
        report.raise_if_failed()
    saved = (tmp_path / f"{REPORT_STEM}.md").read_text()
    assert "**refused** (1 failed)" in saved
    assert f"{NEW_DAY} 03h: 0" in saved


def test_each_broken_value_lost_hour_and_humanless_hour_is_named(tmp_path: Path) -> None:
    frame = labelled_frame()
    frame.loc[5, "ip_clicks_1m"] = -1.0
    frame.loc[6, "session_gap_s"] = MAX_GAP_S + 1.0
    frame.loc[7, "customer_distinct_ips"] = np.nan
    # The archive lost hour 12 of the new day, and 90 % of hour 13.
    new_day = frame["date"] == NEW_DAY
    frame = frame.loc[~(new_day & (frame["hour"] == 12))]
    thinned = frame.index[(frame["date"] == NEW_DAY) & (frame["hour"] == 13)][2:]
    frame = frame.drop(thinned)
    # No weak-labelled human at all on Wednesday 04h (a trailing day).
    wednesday_4h = (frame["dow"] == 2) & (frame["hour"] == 4)
    frame.loc[wednesday_4h, ["purchased", "rfm_human"]] = False
    relabel(frame)

    # Strict about purchases: no hour of the new day may go without one.
    strict = GuardrailSettings(max_hours_without_purchases=0)
    report = check_training_data(frame, NEW_DAY, strict, tmp_path)

    problems = failed(report)
    assert set(problems) == {
        "nulls",
        "range:ip_clicks_1m",
        "range:session_gap_s",
        "hourly:volume_ratio",
        "hourly:purchases",
        "hour_of_week:human_density",
    }
    assert problems["nulls"] == "customer_distinct_ips: 0.000263"
    assert problems["range:ip_clicks_1m"] == "1 of 3,802 values outside, e.g. -1"
    assert problems["hourly:volume_ratio"] == f"{NEW_DAY} 12h: 0, {NEW_DAY} 13h: 0.1"
    assert problems["hourly:purchases"] == f"{NEW_DAY} 12h: 0"
    assert problems["hour_of_week:human_density"] == "Wed 04h: 0"


def test_a_wrong_schema_is_refused_before_any_value_check(tmp_path: Path) -> None:
    frame = labelled_frame(days=1).drop(columns=["label"])
    frame["hour"] = frame["hour"].astype("float64")

    report = check_training_data(frame, START, GuardrailSettings(), tmp_path)

    assert failed(report) == {
        "schema": "hour: float (expected integer), label: missing (expected integer)"
    }
    assert [c.status for c in report.checks if c.name == "values and hours"] == [Status.SKIPPED]


def test_without_trailing_days_the_volume_is_not_compared(tmp_path: Path) -> None:
    report = check_training_data(labelled_frame(days=1), START, GuardrailSettings(), tmp_path)

    assert report.passed
    (volume,) = [c for c in report.checks if c.name == "hourly:volume_ratio"]
    assert volume.status is Status.SKIPPED
    assert volume.detail == "no trailing day in the frame to compare with"


@pytest.mark.parametrize(
    ("column", "family"),
    [
        (pd.Series(["a", "b"]), "string"),
        (pd.Series(["a", "b"], dtype=object), "string"),
        (pd.Series(["a", "b"], dtype="category"), "string"),
        (pd.Series([1, None], dtype="Int8"), "integer"),
        (pd.Series([True, None], dtype="boolean"), "bool"),
        (pd.Series([1.5], dtype="float32"), "float"),
        (pd.Series(pd.to_datetime(["2026-01-05"], utc=True)), "datetime"),
        (pd.Series(["a", 1], dtype=object), "object"),
    ],
)
def test_type_families_accept_equivalent_dtypes_only(column: pd.Series, family: str) -> None:
    assert type_family(pd.DataFrame({"x": column}), "x") == family
    assert type_family(pd.DataFrame({"x": column}), "y") == "missing"


def test_a_new_day_that_is_not_a_date_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GuardrailError, match="YYYY-MM-DD"):
        check_training_data(labelled_frame(days=1), "12/01/2026", GuardrailSettings(), tmp_path)
    assert not any(tmp_path.iterdir())
