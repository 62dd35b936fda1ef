"""Events -> one table per UTC event hour, with the dataset's schema (``slidr.archive.SCHEMAS``:
the event models' fields, in model order, with the simulator's types)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import cast

import numpy as np
import pyarrow as pa

from slidr.archive import CLICKS, DECISIONS, PURCHASES, SCHEMAS, feature_column
from slidr.events import Click, Decision, Purchase
from slidr.features import N_FEATURES

Event = Click | Purchase | Decision
MODELS: dict[str, type[Event]] = {CLICKS: Click, PURCHASES: Purchase, DECISIONS: Decision}


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
