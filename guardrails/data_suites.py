"""The data guardrails as Great Expectations (GX Core 1.x) suites, kept as code.

Four suites, each validated on its own table (built with pandas in ``guardrails.data``):

- ``columns``: one row per required column of the labelled click frame: type family, null share;
- ``values``: the click frame's numeric columns, row by row: value ranges;
- ``hours``: one row per hour of the new day: volume against the trailing week, purchases;
- ``hours_of_week``: one row per hour of the week over the window: human density.

Every expectation carries ``meta``: ``check`` (its name in the report), ``bound`` (in words),
``if_empty`` (why it is skipped when every value is missing) and ``observe``: what the report
shows of a failure: ``pairs`` (the mismatching rows), ``count`` (rows out of range, with
examples) or ``worst`` (the worst value; every failing row named).
Importing this module imports GX (~3 s): import it where the suites are needed.
"""

from __future__ import annotations

from typing import Any

import great_expectations as gx

# Imported from their modules: the package re-exports them implicitly, which strict mypy refuses.
from great_expectations.expectations.core.expect_column_pair_values_to_be_equal import (
    ExpectColumnPairValuesToBeEqual,
)
from great_expectations.expectations.core.expect_column_values_to_be_between import (
    ExpectColumnValuesToBeBetween,
)
from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
    ExpectColumnValuesToBeInSet,
)
from great_expectations.expectations.expectation import Expectation

from slidr.features import FEATURES, MAX_GAP_S, SPEC, TIME_FEATURES
from slidr.settings import GuardrailSettings

#: Required columns of the labelled click frame (docs/datasets.md) and their type families.
COLUMN_TYPES: dict[str, str] = {
    "click_id": "string",
    "event_time": "datetime",
    "date": "string",
    "hour": "integer",
    "dow": "integer",
    "logged_in": "bool",
    "device_type": "string",
    "slice": "string",
    "purchased": "bool",
    "rfm_human": "bool",
    "label": "integer",
    "robotic": "bool",
    **{name: "float" for name in FEATURES},
}


_NO_VALUES = "no values to check"


def _meta(check: str, bound: str, observe: str, if_empty: str = _NO_VALUES) -> dict[str, Any]:
    return {"check": check, "bound": bound, "observe": observe, "if_empty": if_empty}


def _between(
    check: str,
    column: str,
    low: float | None,
    high: float | None,
    observe: str,
    if_empty: str = _NO_VALUES,
    mostly: float = 1.0,
) -> Expectation:
    if low is not None and high is not None:
        bound = f"in [{low:g}, {high:g}]"
    else:
        bound = f">= {low:g}" if low is not None else f"<= {high:g}"
    if observe == "count":
        bound = f"every value {bound}"
    if mostly < 1.0:
        bound = f"{bound} in {mostly:.0%} of rows"
    return ExpectColumnValuesToBeBetween(
        column=column,
        min_value=low,
        max_value=high,
        mostly=mostly,
        meta=_meta(check, bound, observe, if_empty),
    )


def _in_set(column: str, values: list[float]) -> Expectation:
    bound = "every value in {" + ", ".join(f"{v:g}" for v in values) + "}"
    return ExpectColumnValuesToBeInSet(
        column=column, value_set=values, meta=_meta(f"range:{column}", bound, "count")
    )


def feature_bounds(name: str) -> tuple[float, float | None]:
    """The valid range of a feature: counts are >= 0, gaps capped, time on the unit circle,
    a categorical id one of its buckets."""
    buckets = {c.name: c.buckets for c in SPEC.categorical}
    if name in buckets:
        return 0.0, float(buckets[name] - 1)
    if name.endswith("_gap_s"):
        return 0.0, MAX_GAP_S
    if name in TIME_FEATURES:
        return -1.0, 1.0
    return 0.0, None


#: The columns of the values table (as float64: GX's vectorised path takes no other floats).
VALUE_COLUMNS: tuple[str, ...] = (*FEATURES, "hour", "dow", "label")


def columns_suite(settings: GuardrailSettings) -> gx.ExpectationSuite:
    """On the columns table: one row per required column (type family, null share)."""
    suite = gx.ExpectationSuite(name="columns")
    suite.add_expectation(
        ExpectColumnPairValuesToBeEqual(
            column_A="type",
            column_B="expected_type",
            meta=_meta("schema", "types of docs/datasets.md", "pairs"),
        )
    )
    suite.add_expectation(_between("nulls", "null_share", None, settings.max_null_rate, "worst"))
    return suite


def values_suite() -> gx.ExpectationSuite:
    """On the click frame's numeric columns, row by row."""
    suite = gx.ExpectationSuite(name="values")
    for name in FEATURES:
        if name == "logged_in":
            suite.add_expectation(_in_set(name, [0.0, 1.0]))
        else:
            suite.add_expectation(_between(f"range:{name}", name, *feature_bounds(name), "count"))
    suite.add_expectation(_between("range:hour", "hour", 0, 23, "count"))
    suite.add_expectation(_between("range:dow", "dow", 0, 6, "count"))
    suite.add_expectation(_in_set("label", [0.0, 1.0]))
    return suite


def hours_suite(settings: GuardrailSettings) -> gx.ExpectationSuite:
    """On the new day's hourly table."""
    suite = gx.ExpectationSuite(name="hours")
    suite.add_expectation(
        _between(
            "hourly:volume_ratio",
            "volume_ratio",
            settings.min_volume_ratio,
            settings.max_volume_ratio,
            "worst",
            if_empty="no trailing day in the frame to compare with",
        )
    )
    # A quiet night hour may see no purchase by chance; several hours without any means the
    # purchase feed broke, and the labels of those hours are wrong.
    allowed = settings.max_hours_without_purchases
    suite.add_expectation(
        _between(
            "hourly:purchases",
            "purchases",
            settings.min_purchases_per_hour,
            None,
            "worst",
            mostly=1.0 - (allowed + 0.5) / 24,
        )
    )
    return suite


def hours_of_week_suite(settings: GuardrailSettings) -> gx.ExpectationSuite:
    """On the window's hour-of-week table."""
    suite = gx.ExpectationSuite(name="hours_of_week")
    low = settings.min_human_density
    suite.add_expectation(
        _between("hour_of_week:human_density", "human_density", low, None, "worst")
    )
    return suite
