"""The archive on disk: dataset names, their Parquet schemas, schema-checked reads and atomic
writes (one codec). Every reader and writer of an archive goes through this module: the
archiver (``streams.archive``), the simulator's Parquet sink, the TalkingData import, the
offline featurizer and training.

Layout (``docs/datasets.md``): one root directory, hive-partitioned datasets
``ROOT/<dataset>/date=YYYY-MM-DD/hour=HH/*.parquet`` and a few files beside them
(``customers.parquet``, ``labels.json``). Files whose names start with "." or "_" (staging
files, markers) are never read as data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from slidr.errors import SlidrError
from slidr.features import N_FEATURES

# --- names ---------------------------------------------------------------------------------

CLICKS = "clicks"
PURCHASES = "purchases"
DECISIONS = "decisions"
#: Feature vectors computed offline (training, imports): beside the archive, same columns as
#: the decisions dataset's vectors, so training reads either.
FEATURES_DATASET = "features"
#: Simulated data only: the ground truth of each click.
TRUTH = "truth"
#: The datasets `slidr archive` writes, each from the topic of the same name in TopicSettings.
ARCHIVED: tuple[str, ...] = (CLICKS, PURCHASES, DECISIONS)
#: The CRM export: customer_id, rfm_score in [0, 1] (and the RFM parts).
CUSTOMERS_FILE = "customers.parquet"
#: The archive's own label horizon, when its source has one (see ``models.dataset``).
LABELS_FILE = "labels.json"
#: The file of an hour partition written in one piece (simulator, import, featurizer); the
#: archiver writes one file per Kafka segment instead (``streams.archive.store``).
PART_FILE = "part-0.parquet"
#: Every Parquet file is written with this codec.
COMPRESSION = "zstd"
#: Suffix of a file being written; with a leading "." the staging file is hidden from readers.
STAGING_SUFFIX = ".partial"


class ArchiveError(SlidrError):
    """The archive cannot be written or read as asked."""


# --- schemas -------------------------------------------------------------------------------

TIMESTAMP = pa.timestamp("ms", tz="UTC")
FEATURE_TYPE = pa.list_(pa.float32(), N_FEATURES)
FEATURES_SCHEMA = pa.schema(
    [("click_id", pa.string()), ("event_time", TIMESTAMP), ("features", FEATURE_TYPE)]
)

#: Each dataset's columns. Those of clicks, purchases and decisions are the event models'
#: fields, in model order, with the simulator's types, so an archived clicks file and a
#: simulated one have the same schema and a row validates with ``msgspec.convert(row, Click)``.
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
            # 0 live, a replay's planning time in ms; null in files archived before it existed.
            ("revision", pa.int64()),
            ("replay_run_id", pa.string()),
            ("source_partition", pa.int32()),
            ("source_offset", pa.int64()),
        ]
    ),
    FEATURES_DATASET: FEATURES_SCHEMA,
    TRUTH: pa.schema(
        [
            ("click_id", pa.string()),
            ("event_time", TIMESTAMP),
            ("is_bot", pa.bool_()),
            ("bot_kind", pa.string()),
        ]
    ),
}
CUSTOMERS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("recency_days", pa.int32()),
        ("frequency", pa.int32()),
        ("monetary", pa.float64()),
        ("rfm_score", pa.float64()),
    ]
)


def feature_column(matrix: npt.NDArray[np.float32]) -> pa.FixedSizeListArray:
    """float32 [n, N_FEATURES] as a ``features`` column."""
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, N_FEATURES)


def feature_matrix(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.float32]:
    """A ``features`` column back as float32 [n, N_FEATURES]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(-1, N_FEATURES)


# --- where things are ----------------------------------------------------------------------


def hour_dir(root: Path, name: str, day: str, hour: str) -> Path:
    """The folder of one hour partition.

    >>> hour_dir(Path("a"), CLICKS, "2026-03-02", "07").as_posix()
    'a/clicks/date=2026-03-02/hour=07'
    """
    return Path(root) / name / f"date={day}" / f"hour={hour}"


def staging_path(final: Path) -> Path:
    """Where ``final`` is written before it is renamed into place (hidden from readers).

    >>> staging_path(Path("d/part-0.parquet")).as_posix()
    'd/.part-0.parquet.partial'
    """
    return final.with_name(f".{final.name}{STAGING_SUFFIX}")


def _data_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith((".", "_")))


def dataset_dates(root: Path, name: str) -> list[str]:
    """The days (YYYY-MM-DD) a dataset has partitions for, in order."""
    folder = Path(root) / name
    return sorted(p.name.removeprefix("date=") for p in folder.glob("date=*") if p.is_dir())


def has_dataset(root: Path, name: str) -> bool:
    """Whether the archive holds the dataset at all (a folder with a date partition)."""
    return bool(dataset_dates(root, name))


def hour_partitions(root: Path, name: str) -> list[tuple[str, str]]:
    """The (date, hour) partitions of a dataset that hold data, in time order."""
    folder = Path(root) / name
    found = [
        (d.name.removeprefix("date="), h.name.removeprefix("hour="))
        for d in folder.glob("date=*")
        for h in d.glob("hour=*")
        if _data_files(h, "*.parquet")
    ]
    return sorted(found)


# --- reading -------------------------------------------------------------------------------


def _check_dates(dates: Sequence[str]) -> None:
    for day in dates:
        try:
            valid = date.fromisoformat(day).isoformat() == day
        except ValueError:
            valid = False
        if not valid:
            raise ArchiveError(f"{day!r} is not a date: use YYYY-MM-DD")


def _read_files(
    files: Sequence[Path],
    where: Path,
    schema: pa.Schema | None,
    columns: Sequence[str] | None,
) -> pa.Table:
    """Files read against the dataset's schema: columns cast to its types, a column a file
    lacks (written before it existed) read as nulls, a file that cannot be cast refused."""
    wanted = list(columns) if columns is not None else None
    if not files:
        if schema is None:
            raise ArchiveError(f"{where} has no Parquet files")
        empty = schema.empty_table()
        return empty.select(wanted) if wanted is not None else empty
    if schema is not None and wanted is not None:
        unknown = [c for c in wanted if c not in schema.names]
        if unknown:
            raise ArchiveError(f"{where} has no column {', '.join(unknown)}")
    try:
        found = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        return found.to_table(columns=wanted)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ArchiveError(
            f"a file in {where} does not have the archive's schema ({exc}): was it written by "
            "another tool? rewrite it, or archive to a new root"
        ) from None


def read_dataset(
    root: Path,
    name: str,
    dates: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """One archived dataset (e.g. "decisions"), optionally only the given UTC dates (YYYY-MM-DD)
    and columns, checked against its schema (``SCHEMAS``).

    Columns are the dataset's own (the event model's fields); rows come in hour order. A known
    dataset that is absent reads as an empty table; an unknown name needs its folder.
    """
    _check_dates(dates or ())
    root = Path(root)
    folder = root / name
    schema = SCHEMAS.get(name)
    if schema is None and not folder.is_dir():
        raise ArchiveError(f"no dataset {name!r} under {root}: check the archive root")
    patterns = [f"date={day}" for day in dates] if dates is not None else ["date=*"]
    files = sorted(
        p for pattern in patterns for p in _data_files(folder, f"{pattern}/hour=*/*.parquet")
    )
    return _read_files(files, folder, schema, columns)


def read_hour(root: Path, name: str, day: str, hour: str) -> pa.Table:
    """One hour partition of a dataset, checked against its schema."""
    folder = hour_dir(root, name, day, hour)
    return _read_files(_data_files(folder, "*.parquet"), folder, SCHEMAS.get(name), None)


def read_customers(root: Path, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The CRM export ``customers.parquet``, or None when the archive has none."""
    path = Path(root) / CUSTOMERS_FILE
    if not path.exists():
        return None
    return _read_files([path], path, CUSTOMERS_SCHEMA, columns)


def read_label_declaration(root: Path) -> tuple[bool, str] | None:
    """``labels.json``: (whether the labels are final, their source), or None without one."""
    path = Path(root) / LABELS_FILE
    if not path.exists():
        return None
    try:
        declared = json.loads(path.read_text())
        final, source = declared["final"], str(declared.get("source", path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(
            f'{path} is not a label declaration ({exc}); expected {{"final": true}}'
        ) from None
    if not isinstance(final, bool):
        raise ArchiveError(f"{path}: 'final' must be true or false, not {final!r}")
    return final, source


# --- writing -------------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(staging: Path, write: Callable[[BinaryIO], object], durable: bool = True) -> None:
    with staging.open("wb") as sink:
        write(sink)
        if durable:
            sink.flush()
            os.fsync(sink.fileno())


def _check_schema(name: str, table: pa.Table) -> None:
    schema = SCHEMAS.get(name)
    if schema is not None and not table.schema.equals(schema):
        raise ArchiveError(
            f"refusing to write {name!r} rows with the schema\n{table.schema}\n"
            f"where the archive's is\n{schema}"
        )


def stage_table(
    final: Path, table: pa.Table, name: str | None = None, *, durable: bool = True
) -> Path:
    """Write ``table`` to ``final``'s hidden staging file (fsynced if ``durable``); return it.

    Rename it into place (``staging.replace(final)``, then :func:`fsync_dir`) to publish it;
    this is how a writer publishes several files at once (``streams.archive.store``).
    ``name``: the dataset, whose schema the table must have.
    """
    if name is not None:
        _check_schema(name, table)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(final)
    _write(staging, lambda sink: pq.write_table(table, sink, compression=COMPRESSION), durable)
    return staging


def write_table(
    final: Path, table: pa.Table, name: str | None = None, *, durable: bool = True
) -> Path:
    """Write one Parquet file atomically: readers see the whole file or none of it.

    ``durable``: on disk before this returns (fsync of the file and its folder), so a marker or
    manifest written afterwards never points at a file a power cut lost. Only data that is
    cheaper to regenerate than to sync (a simulation) skips it.
    """
    stage_table(final, table, name, durable=durable).replace(final)
    if durable:
        fsync_dir(final.parent)
    return final


def write_hour(
    root: Path, name: str, day: str, hour: str, table: pa.Table, *, durable: bool = True
) -> Path:
    """One hour partition of a dataset, in one file, atomically, with the dataset's schema."""
    final = hour_dir(root, name, day, hour) / PART_FILE
    return write_table(final, table, name, durable=durable)


def write_customers(root: Path, customers: pa.Table, *, durable: bool = True) -> Path:
    """The CRM export ``customers.parquet``, atomically."""
    return write_table(Path(root) / CUSTOMERS_FILE, customers, durable=durable)


def write_bytes(final: Path, data: bytes) -> Path:
    """Replace a small file (a marker, a declaration) atomically and durably."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(final)
    _write(staging, lambda sink: sink.write(data))
    staging.replace(final)
    fsync_dir(final.parent)
    return final


def write_label_source(root: Path, *, final: bool, source: str) -> Path:
    """Declare the archive's labels final (or not) in ``root/labels.json``."""
    body = json.dumps({"final": final, "source": source}, indent=2) + "\n"
    return write_bytes(Path(root) / LABELS_FILE, body.encode())
