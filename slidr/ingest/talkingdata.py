"""Import of the TalkingData AdTracking train CSV into an archive that trains like any other.

Two passes in bounded memory, because rows may be out of order anywhere in the file:

1. read and validate the file block by block (:mod:`slidr.ingest.talkingdata_csv`) and stage
   each block in a temporary directory, partitioned by the hour of each click (and, for
   attributed clicks, by the hour of the attribution);
2. hour by hour, in time order: sort, map to :class:`~slidr.events.Click` and
   :class:`~slidr.events.Purchase` columns, write ``clicks/`` and ``purchases/``.

Then features through the worker's own Redis code (a :class:`~slidr.ingest.Featurizer`, the
offline featurizer of ``models.featurize`` handed in by the caller) and ``import.json``, written
last: an archive without it is incomplete. The mapping and its reasons are in
``docs/talkingdata.md``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from slidr.archive import (
    CLICKS,
    CUSTOMERS_FILE,
    DECISIONS,
    FEATURES_DATASET,
    LABELS_FILE,
    PURCHASES,
    SCHEMAS,
    TIMESTAMP,
    TRUTH,
    write_bytes,
    write_hour,
    write_label_source,
)
from slidr.events import DeviceType, Platform
from slidr.features import FEATURE_HASH
from slidr.ingest import Featurizer
from slidr.ingest.talkingdata_csv import TIMESTAMP_S, TalkingDataError, TrainFileReader
from slidr.simulate.sinks import MANIFEST_FILE as SIMULATION_FILE
from slidr.simulate.tables import ip_strings
from slidr.slices import slice_of

MANIFEST_FILE = "import.json"
MARKETPLACE = "TD"
#: TalkingData's ids are anonymised. Devices 1 and 2 carry ~98 % of its clicks: the two big
#: phone families, in apps. Every other id is rare and mixed: mobile web, platform unknown.
DEVICES: dict[int, tuple[DeviceType, Platform]] = {
    1: (DeviceType.APP, Platform.ANDROID),
    2: (DeviceType.APP, Platform.IOS),
}
OTHER_DEVICE: tuple[DeviceType, Platform] = (DeviceType.MOBILE_WEB, Platform.OTHER)
#: ip id n becomes the address 10.0.0.0 + n.
IP_BASE = 10 << 24
SESSION_RULE = "(ip, device, os) per UTC clock hour"
#: Everything of an archive: an import replaces all of it or nothing.
ARCHIVE_ENTRIES = (
    CLICKS,
    PURCHASES,
    FEATURES_DATASET,
    DECISIONS,
    TRUTH,
    CUSTOMERS_FILE,
    SIMULATION_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
)
#: TalkingData computed is_attributed after the period ended: the labels are final.
LABEL_SOURCE = "TalkingData is_attributed, computed after the data period"

_HOUR = "hour"
_HOUR_PARTITIONING = ds.partitioning(pa.schema([(_HOUR, pa.int64())]), flavor="hive")

#: ``(stage, advance, total)``: stages "read" (bytes; total None with a limit), "write" and
#: "features" (hours).
ProgressFn = Callable[[str, int, int | None], None]


def _ignore_progress(stage: str, advance: int, total: int | None) -> None:
    """The default progress callback: none."""


def _text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(values, pa.string())


def _by_device(device: pa.ChunkedArray, part: int) -> pa.ChunkedArray:
    """Device type (part 0) or platform (part 1) of each device id."""
    known = pa.array(list(DEVICES), pa.int64())
    names = pa.array([str(pair[part]) for pair in DEVICES.values()], pa.string())
    return pc.fill_null(names.take(pc.index_in(device, value_set=known)), str(OTHER_DEVICE[part]))


def _epoch_hours(times: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.divide(pc.cast(times, pa.int64()), 3600)


def _hour_labels(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """``YYYYMMDDHH`` of each time; formatted once per distinct hour (strftime is slow)."""
    hours = _epoch_hours(times)
    distinct = pc.unique(hours)
    labels = pc.strftime(pc.cast(pc.multiply(distinct, 3600), TIMESTAMP_S), format="%Y%m%d%H")
    return labels.take(pc.index_in(hours, value_set=distinct))


def _session_ids(raw: pa.Table) -> pa.ChunkedArray:
    hour = _hour_labels(raw["click_time"])
    return pc.binary_join_element_wise(
        "td", _text(raw["ip"]), _text(raw["device"]), _text(raw["os"]), hour, "-"
    )


def _ids(prefix: str, values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(prefix, _text(values), "-")


def click_table(raw: pa.Table) -> pa.Table:
    """Validated rows (``RAW_SCHEMA``) as the columns of :class:`~slidr.events.Click`."""
    n = raw.num_rows
    nulls = pa.nulls(n, pa.string())
    return pa.table(
        {
            "schema_version": pa.array([1] * n, pa.int8()),
            "event_time": pc.cast(raw["click_time"], TIMESTAMP),
            "click_id": _ids("td", raw["line"]),
            "session_id": _session_ids(raw),
            # TalkingData has no accounts.
            "customer_id": nulls,
            "logged_in": pa.array([False] * n),
            "ip": ip_strings(pc.bit_wise_or(raw["ip"], IP_BASE).to_numpy()),
            "user_agent": pc.binary_join_element_wise(
                "td-device-", _text(raw["device"]), "/os-", _text(raw["os"]), ""
            ),
            "device_type": _by_device(raw["device"], 0),
            "platform": _by_device(raw["device"], 1),
            "marketplace": pa.array([MARKETPLACE] * n),
            "ad_id": _ids("app", raw["app"]),
            "campaign_id": _ids("channel", raw["channel"]),
            "advertiser_id": _ids("app", raw["app"]),
            "placement": nulls,
        },
        schema=SCHEMAS[CLICKS],
    )


def purchase_table(raw: pa.Table) -> pa.Table:
    """Attributed rows as :class:`~slidr.events.Purchase` columns: one download = one purchase."""
    n = raw.num_rows
    return pa.table(
        {
            "schema_version": pa.array([1] * n, pa.int8()),
            "event_time": pc.cast(raw["attributed_time"], TIMESTAMP),
            "purchase_id": _ids("td-p", raw["line"]),
            "click_id": _ids("td", raw["line"]),
            "session_id": _session_ids(raw),
            "customer_id": pa.nulls(n, pa.string()),
            "amount": pa.array([1.0] * n, pa.float64()),
            "currency": pa.array(["USD"] * n),
        },
        schema=SCHEMAS[PURCHASES],
    )


def _stage(raw: pa.Table, root: Path, times: str, block: int) -> None:
    ds.write_dataset(
        raw.append_column(_HOUR, _epoch_hours(raw[times])),
        root,
        format="ipc",
        partitioning=_HOUR_PARTITIONING,
        basename_template=f"block-{block}-{{i}}.arrow",
        existing_data_behavior="overwrite_or_ignore",
    )


def _staged_hours(root: Path) -> list[int]:
    return sorted(int(p.name.removeprefix(f"{_HOUR}=")) for p in root.glob(f"{_HOUR}=*"))


def _hour_key(hour: int) -> tuple[str, str]:
    start = datetime.fromtimestamp(hour * 3600, UTC)
    return f"{start:%Y-%m-%d}", f"{start:%H}"


def _iso(value: pa.Scalar) -> str | None:
    moment = value.as_py()
    return moment.isoformat() if moment is not None else None


@dataclass
class ArchiveSummary:
    """What :func:`write_archive` wrote, for ``import.json``."""

    click_hours: int = 0
    slices: Counter[str] = field(default_factory=Counter)
    first_click: str | None = None
    last_click: str | None = None
    last_purchase: str | None = None
    read_s: float = 0.0
    write_s: float = 0.0


def _read_staged(root: Path, hour: int, times: str) -> pa.Table:
    table = ds.dataset(root / f"{_HOUR}={hour}", format="ipc").to_table()
    return table.sort_by([(times, "ascending"), ("line", "ascending")])


def _write_hours(staging: Path, out: Path, on_progress: ProgressFn) -> ArchiveSummary:
    summary = ArchiveSummary()
    click_hours = _staged_hours(staging / CLICKS)
    purchase_hours = _staged_hours(staging / PURCHASES)
    total = len(click_hours) + len(purchase_hours)
    on_progress("write", 0, total)
    for hour in click_hours:
        clicks = click_table(_read_staged(staging / CLICKS, hour, "click_time"))
        write_hour(out, CLICKS, *_hour_key(hour), clicks)
        for item in pc.value_counts(clicks["device_type"]).to_pylist():
            summary.slices[slice_of(item["values"], False)] += item["counts"]
        summary.first_click = summary.first_click or _iso(pc.min(clicks["event_time"]))
        summary.last_click = _iso(pc.max(clicks["event_time"]))
        on_progress("write", 1, total)
    for hour in purchase_hours:
        raw = _read_staged(staging / PURCHASES, hour, "attributed_time")
        purchases = purchase_table(raw)
        write_hour(out, PURCHASES, *_hour_key(hour), purchases)
        summary.last_purchase = _iso(pc.max(purchases["event_time"]))
        on_progress("write", 1, total)
    summary.click_hours = len(click_hours)
    return summary


def write_archive(
    reader: TrainFileReader,
    out: Path,
    *,
    replacing: Sequence[Path] = (),
    on_progress: ProgressFn = _ignore_progress,
) -> ArchiveSummary:
    """Read the whole file into a staging area in ``out``, then write clicks/ and purchases/.

    ``replacing`` (an earlier archive) is removed only once the file has been read whole, so a
    file refused half-way leaves it intact.
    """
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".import-") as tmp:
        staging = Path(tmp)
        for block, raw in enumerate(reader.tables(lambda n: on_progress("read", n, None))):
            _stage(raw, staging / CLICKS, "click_time", block)
            attributed = raw.filter(raw["is_attributed"])
            if attributed.num_rows:
                _stage(attributed, staging / PURCHASES, "attributed_time", block)
        if reader.report.rows == 0:
            within = f" in its first {reader.limit} lines" if reader.limit else ""
            raise TalkingDataError(f"{reader.path} has no data rows{within}")
        read_s = time.perf_counter() - started
        _remove(replacing)
        summary = _write_hours(staging, out, on_progress)
    summary.read_s = read_s
    summary.write_s = time.perf_counter() - started - read_s
    return summary


def _claim(out: Path, overwrite: bool) -> list[Path]:
    """The archive entries already in ``out``; refuses them unless ``overwrite``."""
    existing = [out / name for name in ARCHIVE_ENTRIES if (out / name).exists()]
    if existing and not overwrite:
        raise TalkingDataError(
            f"{out} already holds an archive ({existing[0].name}); choose another directory "
            "or pass --overwrite"
        )
    return existing


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def import_talkingdata(
    source: Path,
    out: Path,
    featurize: Featurizer,
    *,
    limit: int | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn = _ignore_progress,
) -> dict[str, Any]:
    """Import ``source`` (train format) into the archive ``out``, its features computed by
    ``featurize`` (checked first: ``featurize.require()``); the manifest written."""
    reader = TrainFileReader(source, limit)
    existing = _claim(out, overwrite)
    featurize.require()
    on_progress("read", 0, None if limit else source.stat().st_size - reader.header.data_offset)
    archive = write_archive(reader, out, replacing=existing, on_progress=on_progress)
    started = time.perf_counter()
    hours = archive.click_hours
    on_progress("features", 0, hours)
    featurized = featurize(out, lambda _d, _h, _n: on_progress("features", 1, hours))
    features_s = time.perf_counter() - started
    report = reader.report
    manifest: dict[str, Any] = {
        "format": "talkingdata-train",
        "source": str(source.resolve()),
        "source_bytes": source.stat().st_size,
        "header_line": reader.header.line,
        "header_repaired": reader.header.repairs(),
        "limit": limit,
        **report.as_dict(),
        "clicks": report.rows,
        "purchases": report.attributed,
        "attributed_share": report.attributed / report.rows,
        "time_range": {
            "first_click": archive.first_click,
            "last_click": archive.last_click,
            "last_purchase": archive.last_purchase,
        },
        "slices": dict(sorted(archive.slices.items())),
        "mapping": {
            "session": SESSION_RULE,
            "devices": {str(k): f"{t}/{p}" for k, (t, p) in DEVICES.items()}
            | {"other": f"{OTHER_DEVICE[0]}/{OTHER_DEVICE[1]}"},
        },
        "features": {"clicks": featurized, "feature_hash": FEATURE_HASH},
        "seconds": {
            "read": round(archive.read_s, 3),
            "write": round(archive.write_s, 3),
            "features": round(features_s, 3),
        },
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_label_source(out, final=True, source=LABEL_SOURCE)
    write_bytes(out / MANIFEST_FILE, orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest
