"""Features for clicks that did not go through the worker, by the worker's own code (offline).

Historical or imported clicks (simulated Parquet, a TalkingData file) are fed in event-time
order through :class:`~streams.feature_store.RedisFeatureStore` under a private key prefix, so
their vectors are exactly what the live pipeline would have served, and the live counters are
never touched. The namespace is deleted afterwards.

Output: ``<out>/features/date=YYYY-MM-DD/hour=HH/part-0.parquet`` with ``click_id``,
``event_time`` and ``features`` (float32 x N_FEATURES, in ``slidr.features.FEATURES`` order),
the same columns the decisions archive has, so training reads either.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from slidr.errors import SlidrError
from slidr.events import Click
from slidr.settings import RedisSettings
from streams.archive.tables import (
    FEATURES_DATASET,
    FEATURES_SCHEMA,
    TIMESTAMP,
    feature_column,
)
from streams.feature_store import (
    FeatureStore,
    FeatureStoreUnavailable,
    RedisFeatureStore,
    featurize,
)

_CLICK_FIELDS = Click.__struct_fields__


def clicks_of(table: pa.Table) -> list[Click]:
    """Rows of a clicks table as Click objects (msgspec checks them again, at 2 µs a row)."""
    rows = table.select([f for f in _CLICK_FIELDS if f in table.column_names]).to_pylist()
    return msgspec.convert(rows, list[Click])


def hour_partitions(root: Path) -> list[tuple[str, str]]:
    """The (date, hour) partitions of a hive-partitioned dataset, in time order."""
    found = [
        (d.name.removeprefix("date="), h.name.removeprefix("hour="))
        for d in root.glob("date=*")
        for h in d.glob("hour=*")
        if any(h.glob("*.parquet"))
    ]
    return sorted(found)


def read_hours(root: Path) -> Iterator[tuple[str, str, pa.Table]]:
    """Each hour partition of ``root`` as one table sorted by (event_time, click_id)."""
    for date, hour in hour_partitions(root):
        table = ds.dataset(root / f"date={date}" / f"hour={hour}", format="parquet").to_table()
        yield date, hour, table.sort_by([("event_time", "ascending"), ("click_id", "ascending")])


def write_hour(out: Path, date: str, hour: str, table: pa.Table) -> None:
    target = out / f"date={date}" / f"hour={hour}"
    target.mkdir(parents=True, exist_ok=True)
    staging = target / "part-0.parquet.partial"
    pq.write_table(table, staging, compression="zstd")
    staging.replace(target / "part-0.parquet")


async def featurize_dataset(
    clicks_root: Path,
    out_root: Path,
    redis: RedisSettings,
    *,
    on_hour: Callable[[str, str, int], None] | None = None,
) -> int:
    """Features for every click under ``clicks_root`` into ``out_root/features``; clicks count."""
    if not hour_partitions(clicks_root):
        raise SlidrError(f"no clicks under {clicks_root} (expected date=*/hour=*/*.parquet)")
    # A fresh namespace: counters start empty, as on a new pipeline, and nothing live is read.
    private = redis.model_copy(update={"key_prefix": f"slidr-featurize:{uuid.uuid4().hex}:"})
    try:
        async with RedisFeatureStore(private, timeout_s=30.0) as store:
            try:
                total = await _featurize_hours(clicks_root, out_root, store, on_hour)
            finally:
                await store.drop_namespace()
    except FeatureStoreUnavailable as exc:
        raise SlidrError(f"{exc}; start Redis with `slidr stack up`") from exc
    return total


async def _featurize_hours(
    clicks_root: Path,
    out_root: Path,
    store: FeatureStore,
    on_hour: Callable[[str, str, int], None] | None,
) -> int:
    total = 0
    for date, hour, table in read_hours(clicks_root):
        matrix = await featurize(clicks_of(table), store)
        rows = pa.table(
            {
                "click_id": table["click_id"],
                "event_time": pc.cast(table["event_time"], TIMESTAMP),
                "features": feature_column(matrix),
            },
            schema=FEATURES_SCHEMA,
        )
        write_hour(out_root / FEATURES_DATASET, date, hour, rows)
        total += rows.num_rows
        if on_hour is not None:
            on_hour(date, hour, rows.num_rows)
    return total


def featurize_dataset_sync(
    clicks_root: Path,
    out_root: Path,
    redis: RedisSettings,
    on_hour: Callable[[str, str, int], None] | None = None,
) -> int:
    return asyncio.run(featurize_dataset(clicks_root, out_root, redis, on_hour=on_hour))
