"""Reading the archive back: one dataset, optionally a few UTC dates, as one table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from streams.archive.store import ArchiveError
from streams.archive.tables import SCHEMAS


def read_dataset(root: Path, name: str, dates: Sequence[str] | None = None) -> pa.Table:
    """One archived dataset (e.g. "decisions"), optionally only the given UTC dates (YYYY-MM-DD).

    Columns are the dataset's own (the event model's fields); rows come in hour order.
    """
    for day in dates or ():
        try:
            valid = date.fromisoformat(day).isoformat() == day
        except ValueError:
            valid = False
        if not valid:
            raise ArchiveError(f"{day!r} is not a date: use YYYY-MM-DD")
    folder = root / name
    if name not in SCHEMAS and not folder.is_dir():
        raise ArchiveError(f"no dataset {name!r} under {root}: check the archive root")
    patterns = [f"date={day}" for day in dates] if dates is not None else ["date=*"]
    files = sorted(
        str(path)
        for pattern in patterns
        for path in folder.glob(f"{pattern}/hour=*/*.parquet")
        if not path.name.startswith((".", "_"))
    )
    schema = SCHEMAS.get(name)
    if not files:
        if schema is None:
            raise ArchiveError(f"dataset {name!r} under {root} has no Parquet files")
        return schema.empty_table()
    return ds.dataset(files, schema=schema, format="parquet").to_table()
