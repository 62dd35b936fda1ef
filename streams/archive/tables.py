"""The archived datasets' Parquet schemas, and events -> one table per UTC event hour.

Column names are the event models' fields, in model order, with the simulator's types, so an
archived clicks file and a simulated one have the same schema and a row validates with
``msgspec.convert(row, Click)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from slidr.events import Click, Decision, Purchase
from slidr.features import N_FEATURES

TIMESTAMP = pa.timestamp("ms", tz="UTC")
FEATURE_TYPE = pa.list_(pa.float32(), N_FEATURES)
#: Feature vectors computed offline (training, imports): beside the archive, same columns as
#: the decisions dataset's vectors, so training reads either.
FEATURES_DATASET = "features"
FEATURES_SCHEMA = pa.schema(
    [("click_id", pa.string()), ("event_time", TIMESTAMP), ("features", FEATURE_TYPE)]
)


def feature_column(matrix: npt.NDArray[np.float32]) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, N_FEATURES)


def feature_matrix(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.float32]:
    """A ``features`` column back as float32 [n, N_FEATURES]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(-1, N_FEATURES)


CLICKS = "clicks"
PURCHASES = "purchases"
DECISIONS = "decisions"
#: The datasets `slidr archive` writes, each from the topic of the same name in TopicSettings.
DATASETS: tuple[str, ...] = (CLICKS, PURCHASES, DECISIONS)

Event = Click | Purchase | Decision
MODELS: dict[str, type[Event]] = {CLICKS: Click, PURCHASES: Purchase, DECISIONS: Decision}

SCHEMAS: dict[str, pa.Schema] = {
    CLICKS: pa.schema(
        [
            ("schema_version", pa.int8()),
            ("event_time", TIMESTAMP),
            ("click_id", pa.string()),
            ("session_id", pa.string()),
            ("customer_id", pa.string()),
            ("logged_in", pa.bool_()),
            ("ip", pa.string()),
            ("user_agent", pa.string()),
            ("device_type", pa.string()),
            ("platform", pa.string()),
            ("marketplace", pa.string()),
            ("ad_id", pa.string()),
            ("campaign_id", pa.string()),
            ("advertiser_id", pa.string()),
            ("placement", pa.string()),
        ]
    ),
    PURCHASES: pa.schema(
        [
            ("schema_version", pa.int8()),
            ("event_time", TIMESTAMP),
            ("purchase_id", pa.string()),
            ("click_id", pa.string()),
            ("session_id", pa.string()),
            ("customer_id", pa.string()),
            ("amount", pa.float64()),
            ("currency", pa.string()),
        ]
    ),
    DECISIONS: pa.schema(
        [
            ("schema_version", pa.int8()),
            ("click_id", pa.string()),
            ("event_time", TIMESTAMP),
            ("verdict", pa.string()),
            ("score", pa.float64()),
            ("threshold", pa.float64()),
            ("slice", pa.string()),
            ("model_name", pa.string()),
            ("model_version", pa.int32()),
            ("reason_codes", pa.list_(pa.string())),
            ("feature_hash", pa.string()),
            # All NaN when the decision carries no vector of this length (fail-open before
            # features existed). Not null: pyarrow < 26 cannot read null fixed-size lists back
            # from Parquet (apache/arrow#35692).
            ("features", FEATURE_TYPE),
            ("degraded", pa.bool_()),
            # Null on decisions archived before the field existed, and on fail-open ones.
            ("ivt_category", pa.string()),
            ("processing_ms", pa.float64()),
            ("decided_at", TIMESTAMP),
            ("replay_run_id", pa.string()),
            ("source_partition", pa.int32()),
            ("source_offset", pa.int64()),
        ]
    ),
}


def hour_of(event_time: datetime) -> tuple[str, str]:
    """The (date, hour) partition of a UTC event time, as written in the directory names."""
    return event_time.strftime("%Y-%m-%d"), f"{event_time.hour:02d}"


def _features(decisions: Sequence[Decision]) -> pa.Array:
    matrix = np.full((len(decisions), N_FEATURES), np.nan, dtype=np.float32)
    for i, decision in enumerate(decisions):
        if len(decision.features) == N_FEATURES:
            matrix[i] = decision.features
    return feature_column(matrix)


def to_table(dataset: str, events: Sequence[Event]) -> pa.Table:
    """Events of one dataset as a table with exactly that dataset's schema."""
    schema = SCHEMAS[dataset]
    columns = [
        _features(cast(Sequence[Decision], events))
        if field.name == "features"
        else pa.array([getattr(e, field.name) for e in events], field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def hour_tables(dataset: str, events: Sequence[Event]) -> dict[tuple[str, str], pa.Table]:
    """Events split by the UTC hour of their event_time, one table per (date, hour)."""
    groups: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        groups[hour_of(event.event_time)].append(event)
    return {key: to_table(dataset, group) for key, group in sorted(groups.items())}
