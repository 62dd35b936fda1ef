"""Data guardrails: refuse a training window whose new day looks broken.

Value ranges are checked row by row on the labelled click frame; column types and null shares,
volume per hour against the trailing week, purchase labels in every hour of the new day and
the human density of every hour of the week are computed with pandas into small tables and
checked there. All of it runs as GX suites (``guardrails.data_suites``), so every result is
saved the same way: GX's own validation results, and a report of named checks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from guardrails.report import Check, GuardrailError, GuardrailReport, Status, format_value
from slidr.metrics import REPORT_CONFIDENCE, wilson, z_one_sided, z_two_sided
from slidr.settings import GuardrailSettings

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )

log = logging.getLogger(__name__)

#: Files written under ``out_dir``: GX's validation results, and the report (.json and .md).
VALIDATION_FILE = "data-validation.json"
REPORT_STEM = "data-guardrails"

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Out-of-range values quoted in a failed check's detail.
_EXAMPLES = 5


def type_family(frame: pd.DataFrame, column: str) -> str:
    """The type family the schema suite expects: string, datetime, integer, float or bool."""
    if column not in frame.columns:
        return "missing"
    series = frame[column]
    if isinstance(series.dtype, pd.CategoricalDtype):  # e.g. dictionary-encoded Parquet strings
        series = series.cat.categories.to_series()
    if ptypes.is_bool_dtype(series):
        return "bool"
    if ptypes.is_datetime64_any_dtype(series):
        return "datetime"
    if ptypes.is_integer_dtype(series):
        return "integer"
    if ptypes.is_float_dtype(series):
        return "float"
    if ptypes.is_string_dtype(series):
        return "string"
    return str(series.dtype)


def hourly_table(frame: pd.DataFrame, new_day: str, trailing_days: int) -> pd.DataFrame:
    """One row per hour of ``new_day``: clicks, the trailing mean of that hour, purchases.

    The reference is the mean over the trailing days present in the frame (an hour without
    clicks on such a day counts 0); an hour without reference gets no ratio (not checked).
    """
    hours = pd.RangeIndex(24, name="hour")
    new = frame.loc[frame["date"] == new_day]
    start = (date.fromisoformat(new_day) - timedelta(days=trailing_days)).isoformat()
    trailing = frame.loc[(frame["date"] >= start) & (frame["date"] < new_day)]
    clicks = new.groupby("hour").size().reindex(hours, fill_value=0)
    if trailing.empty:
        reference = pd.Series(np.nan, index=hours)
    else:
        per_day = trailing.groupby(["date", "hour"]).size().unstack(fill_value=0)
        reference = per_day.reindex(columns=hours, fill_value=0).mean(axis=0)
    table = pd.DataFrame(
        {
            "when": [f"{new_day} {h:02d}h" for h in hours],
            "clicks": clicks.to_numpy(),
            "trailing_mean_clicks": reference.to_numpy(),
            "purchases": new.groupby("hour")["purchased"].sum().reindex(hours, fill_value=0),
        },
        index=hours,
    )
    table["volume_ratio"] = table["clicks"] / table["trailing_mean_clicks"].replace(0.0, np.nan)
    return table.reset_index()


def hours_of_week_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per hour of the week seen in the window: clicks, humans, human density."""
    keys = frame[["dow", "hour", "label"]].dropna(subset=["dow", "hour"])  # nulls: own check
    hour_of_week = keys["dow"].astype(int) * 24 + keys["hour"].astype(int)
    humans = (keys["label"] == 0).groupby(hour_of_week).agg(["size", "sum"])
    table = pd.DataFrame(
        {
            "hour_of_week": humans.index,
            "when": [f"{_DAY_NAMES[h // 24]} {h % 24:02d}h" for h in humans.index],
            "clicks": humans["size"].to_numpy(),
            "humans": humans["sum"].to_numpy(),
        }
    )
    table["human_density"] = table["humans"] / table["clicks"]
    return table


def _quiet_context() -> AbstractDataContext:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs every step at INFO (one module even sets its own logger to INFO) and draws a
    # progress bar per validation.
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _validate(
    context: AbstractDataContext,
    table: pd.DataFrame,
    suite: gx.ExpectationSuite,
    index_column: str | None = None,
) -> dict[str, Any]:
    name = suite.name
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
        .get_batch(batch_parameters={"dataframe": table})
    )
    # Small tables name every failing row by their index column; the click frame gives examples.
    result_format: dict[str, Any] = {"result_format": "SUMMARY"}
    if index_column:
        result_format = {
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [index_column],
        }
    result = batch.validate(context.suites.add(suite), result_format=result_format)
    # GX leaves this one unannotated; it returns plain JSON types.
    return dict(result.to_json_dict())  # type: ignore[no-untyped-call]


def columns_table(frame: pd.DataFrame, expected: Mapping[str, str]) -> pd.DataFrame:
    """One row per required column: its type family, the expected one, its share of nulls."""
    return pd.DataFrame(
        {
            "column": list(expected),
            "expected_type": list(expected.values()),
            "type": [type_family(frame, c) for c in expected],
            "null_share": [
                float(frame[c].isna().mean()) if c in frame.columns else np.nan for c in expected
            ],
        }
    )


def _worst(values: list[float], low: float | None) -> float:
    below = [v for v in values if low is not None and v < low]
    return min(below) if below else max(values)


def _check(result: Mapping[str, Any], index_column: str | None) -> Check:
    """One GX expectation result as a report check, showing what its ``meta`` asks for."""
    config, found = result["expectation_config"], result["result"]
    meta, kwargs = config["meta"], config["kwargs"]
    name, bound, observe = meta["check"], meta["bound"], meta["observe"]
    error = result["exception_info"]
    if error.get("raised_exception"):
        detail = f"not evaluated: {error['exception_message']}"
        return Check(name, Status.FAILED, None, bound, detail)
    total, count = found.get("element_count", 0), found.get("unexpected_count", 0)
    if total and found.get("missing_count") == total:
        return Check(name, Status.SKIPPED, None, bound, meta["if_empty"])
    status = Status.PASSED if result["success"] else Status.FAILED
    rows = found.get("unexpected_index_list") or []
    observed: float | int | str | None = count
    if observe == "pairs":
        a, b = kwargs["column_A"], kwargs["column_B"]
        detail = ", ".join(f"{r[index_column]}: {r[a]} (expected {r[b]})" for r in rows)
    elif observe == "worst":
        column = kwargs["column"]
        observed = _worst([r[column] for r in rows], kwargs.get("min_value")) if rows else None
        detail = ", ".join(f"{r[index_column]}: {format_value(r[column])}" for r in rows)
    else:  # "count": rows of the click frame, too many to name
        sample = (found.get("partial_unexpected_list") or [])[:_EXAMPLES]
        examples = ", ".join(format_value(v) for v in sample)
        detail = f"{count:,} of {total:,} values outside, e.g. {examples}" if count else ""
    return Check(name, status, observed, bound, detail)


def _checks(result: Mapping[str, Any], index_column: str | None = None) -> list[Check]:
    return [_check(r, index_column) for r in result["results"]]


def judge_density(check: Check, week: pd.DataFrame, settings: GuardrailSettings) -> Check:
    """The human-density check with its uncertainty: an hour's density is a share of its
    clicks, so a failed check stays failed only if some hour's one-sided Wilson upper bound is
    below the minimum at the stated confidence; otherwise it is reported unsure. The interval
    shown is the worst hour's."""
    low = settings.min_human_density
    if check.status is Status.SKIPPED or week.empty or low <= 0:
        return check
    density = week["human_density"].to_numpy(dtype=np.float64)
    clicks = week["clicks"].to_numpy(dtype=np.float64)
    worst = int(np.argmin(density))
    z = z_one_sided(settings.confidence)
    upper = np.array([wilson(d, n, z)[1] for d, n in zip(density, clicks, strict=True)])
    interval = wilson(float(density[worst]), float(clicks[worst]), z_two_sided(REPORT_CONFIDENCE))
    status = check.status
    if status is Status.FAILED and not (upper < low).any():
        status = Status.UNSURE
    return replace(check, status=status, interval=interval)


def check_training_data(
    frame: pd.DataFrame, new_day: str, settings: GuardrailSettings, out_dir: Path
) -> GuardrailReport:
    """Check the labelled click frame of ``new_day`` plus its trailing days; save the results.

    Writes ``data-validation.json`` (GX results of every suite) and ``data-guardrails.json`` /
    ``.md`` (the report) under ``out_dir``. A frame with wrong column types gets no further.
    """
    try:
        date.fromisoformat(new_day)
    except ValueError:
        raise GuardrailError(f"new day {new_day!r} is not a date: give it as YYYY-MM-DD") from None
    from guardrails import data_suites as suites

    context = _quiet_context()
    columns = columns_table(frame, suites.COLUMN_TYPES)
    results = {"columns": _validate(context, columns, suites.columns_suite(settings), "column")}
    checks = _checks(results["columns"], "column")
    if next(c for c in checks if c.name == "schema").passed:
        values = frame[list(suites.VALUE_COLUMNS)].astype("float64")
        results["values"] = _validate(context, values, suites.values_suite())
        checks += _checks(results["values"])
        hours = hourly_table(frame, new_day, settings.trailing_days)
        results["hours"] = _validate(context, hours, suites.hours_suite(settings), "when")
        checks += _checks(results["hours"], "when")
        week = hours_of_week_table(frame)
        results["hours_of_week"] = _validate(
            context, week, suites.hours_of_week_suite(settings), "when"
        )
        checks += [
            judge_density(c, week, settings) if c.name == "hour_of_week:human_density" else c
            for c in _checks(results["hours_of_week"], "when")
        ]
    else:
        checks.append(Check("values and hours", Status.SKIPPED, None, "", "fix the schema first"))
    report = GuardrailReport(f"training data {new_day}", tuple(checks))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / VALIDATION_FILE).write_text(json.dumps(results, indent=2))
    report.save(out_dir, REPORT_STEM)
    verdict = "refused" if report.refused else "passed" if report.passed else "passed, unsure"
    log.info("data guardrails for %s: %s", new_day, verdict)
    return report
