"""Features for clicks that did not go through the worker, by the worker's own code (offline).

Historical or imported clicks (simulated Parquet, a TalkingData file) are fed in event-time
order through :class:`~streams.feature_store.RedisFeatureStore` under a private key prefix, so
their vectors are exactly what the live pipeline would have served, and the live counters are
never touched. The namespace is deleted afterwards.

Input: an archive's ``clicks/``; output: its ``features/`` (``slidr.archive``), one file per
hour with ``click_id``, ``event_time`` and ``features`` (float32 x N_FEATURES, in
``slidr.features.FEATURES`` order), the same columns the decisions archive has, so training
reads either. :class:`RedisFeaturizer` is the step an import runs after writing its clicks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from slidr.archive import (
    CLICKS,
    FEATURES_DATASET,
    FEATURES_SCHEMA,
    TIMESTAMP,
    feature_column,
    hour_partitions,
    read_hour,
    write_hour,
)
from slidr.errors import SlidrError, StackError
from slidr.events import Click
from slidr.settings import RedisSettings
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


def click_hours(root: Path) -> Iterator[tuple[str, str, pa.Table]]:
    """Each hour of the archive's clicks as one table sorted by (event_time, click_id)."""
    for date, hour in hour_partitions(root, CLICKS):
        table = read_hour(root, CLICKS, date, hour)
        yield date, hour, table.sort_by([("event_time", "ascending"), ("click_id", "ascending")])


#: ``(date, hour, clicks)`` after each hour written.
OnHour = Callable[[str, str, int], None]


async def featurize_dataset(
    root: Path, redis: RedisSettings, *, on_hour: OnHour | None = None
) -> int:
    """Features for every click of the archive ``root`` into its ``features/``; clicks count."""
    if not hour_partitions(root, CLICKS):
        raise SlidrError(f"no clicks under {root / CLICKS} (expected date=*/hour=*/*.parquet)")
    # A fresh namespace: counters start empty, as on a new pipeline, and nothing live is read.
    private = redis.model_copy(update={"key_prefix": f"slidr-featurize:{uuid.uuid4().hex}:"})
    try:
        async with RedisFeatureStore(private, timeout_s=30.0) as store:
            try:
                total = await _featurize_hours(root, store, on_hour)
            finally:
                await store.drop_namespace()
    except FeatureStoreUnavailable as exc:
        raise SlidrError(f"{exc}; start Redis with `slidr stack up`") from exc
    return total


async def _featurize_hours(root: Path, store: FeatureStore, on_hour: OnHour | None) -> int:
    total = 0
    for date, hour, table in click_hours(root):
        matrix = await featurize(clicks_of(table), store)
        rows = pa.table(
            {
                "click_id": table["click_id"],
                "event_time": pc.cast(table["event_time"], TIMESTAMP),
                "features": feature_column(matrix),
            },
            schema=FEATURES_SCHEMA,
        )
        write_hour(root, FEATURES_DATASET, date, hour, rows)
        total += rows.num_rows
        if on_hour is not None:
            on_hour(date, hour, rows.num_rows)
    return total


def featurize_dataset_sync(root: Path, redis: RedisSettings, on_hour: OnHour | None = None) -> int:
    return asyncio.run(featurize_dataset(root, redis, on_hour=on_hour))


async def _ping(redis: RedisSettings) -> None:
    async with RedisFeatureStore(redis, timeout_s=2.0) as store:
        await store.ping()


class RedisFeaturizer:
    """The offline features step of an import (:class:`slidr.ingest.Featurizer`): the worker's
    own Redis code, so Redis must be running."""

    def __init__(self, redis: RedisSettings) -> None:
        self.redis = redis

    def require(self) -> None:
        """Fail before hours of reading, not after: features need Redis."""
        try:
            asyncio.run(_ping(self.redis))
        except FeatureStoreUnavailable:
            redis = self.redis
            raise StackError(
                f"features need Redis at {redis.host}:{redis.port}, which does not answer: start "
                "it with `slidr stack up` or point SLIDR_REDIS__HOST / SLIDR_REDIS__PORT at one"
            ) from None

    def __call__(self, root: Path, on_hour: OnHour) -> int:
        return featurize_dataset_sync(root, self.redis, on_hour)
