"""JSON bytes of simulated events, identical to ``Click.to_json()`` / ``Purchase.to_json()``.

Building an event object per row would slow the Kafka sink for nothing, so the JSON is made
with orjson from the table's columns, keys in the models' field order; a unit test checks the
bytes against the models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from slidr.events import Click, Purchase
from slidr.simulate.tables import iso_times


def _rows(table: pa.Table, fields: tuple[str, ...], hour_start: datetime) -> list[bytes]:
    columns: list[list[Any]] = []
    for name in fields:
        if name == "event_time":
            t_ms = table.column(name).cast(pa.int64()).to_numpy()
            columns.append(iso_times(t_ms, hour_start).to_pylist())
        elif name == "schema_version":
            columns.append([1] * table.num_rows)
        else:
            columns.append(table.column(name).to_pylist())
    dumps = orjson.dumps
    return [dumps(dict(zip(fields, row, strict=True))) for row in zip(*columns, strict=True)]


def click_values(clicks: pa.Table, hour_start: datetime) -> list[bytes]:
    """One JSON document per click; every event time must lie in the hour from ``hour_start``."""
    return _rows(clicks, Click.__struct_fields__, hour_start)


def purchase_values(purchases: pa.Table, hour_start: datetime) -> list[bytes]:
    return _rows(purchases, Purchase.__struct_fields__, hour_start)


def truth_values(truth: pa.Table) -> list[bytes]:
    fields = ("click_id", "is_bot", "bot_kind")
    columns = [truth.column(name).to_pylist() for name in fields]
    dumps = orjson.dumps
    return [dumps(dict(zip(fields, row, strict=True))) for row in zip(*columns, strict=True)]
