"""The labelled click frame: archive -> one row per click with features, weak labels and flags.

Layout of the archive and of the frame: docs/datasets.md. Weak labels follow the article: a
click is human if a purchase followed it within the attribution window, or if its customer has
a high RFM score; every other click is labelled non-human. Clicks younger than the attribution
window (relative to the newest archived event) are not labelled yet and are left out, unless
the archive declares its labels final (``labels.json``, see :class:`LabelSource`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from slidr.archive import (
    CLICKS,
    DECISIONS,
    FEATURES_DATASET,
    PURCHASES,
    TRUTH,
    ArchiveError,
    dataset_dates,
    feature_matrix,
    has_dataset,
    read_customers,
    read_dataset,
    read_label_declaration,
)
from slidr.errors import SlidrError
from slidr.events import GIVT_PREFIX
from slidr.features import FEATURES
from slidr.settings import LearnSettings
from slidr.slices import DEFAULT_SLICE_FIELDS, slice_name

Bools = npt.NDArray[np.bool_]
_CLICK_COLUMNS = (
    "click_id",
    "event_time",
    "session_id",
    "customer_id",
    # logged_in comes with the feature vector (a feature of the same name, 0.0 or 1.0).
    "device_type",
    "platform",
    "marketplace",
)


class DatasetError(SlidrError):
    """The archive cannot give a labelled frame for the requested days."""


@dataclass(frozen=True)
class LabelSource:
    """How long a click's label can still change: the data's own label horizon.

    Live and simulated archives learn of purchases as they happen, so a click is labelled once
    the attribution window has passed (``horizon_h`` = the window) and only purchases within it
    count. A source whose labels were computed after the fact (TalkingData's ``is_attributed``)
    declares them final in ``labels.json``: every archived purchase counts, whatever its delay,
    and no click waits (``horizon_h`` None).
    """

    horizon_h: float | None
    source: str

    @property
    def final(self) -> bool:
        return self.horizon_h is None


def label_source(root: Path, window_h: float) -> LabelSource:
    """The archive's declared label horizon (``labels.json``, written by
    ``slidr.archive.write_label_source``), else the attribution window ``window_h``."""
    try:
        declared = read_label_declaration(root)
    except ArchiveError as exc:
        raise DatasetError(str(exc)) from None
    if declared is None:
        return LabelSource(window_h, f"purchases within the {window_h:g} h attribution window")
    final, source = declared
    if final:
        return LabelSource(None, source)
    return LabelSource(window_h, source)


@dataclass(frozen=True)
class LabelReport:
    """How many clicks got a weak label, and why the others did not."""

    clicks: int
    without_features: int
    not_yet_labelled: int
    labelled: int
    human_by_purchase: int
    human_by_rfm: int
    non_human: int
    as_of: str
    #: Newest labelled time: ``as_of`` less the label horizon, or the newest click when final.
    labelled_until: str = ""
    #: Hours a click waits for its label; None when the archive's labels are final.
    horizon_h: float | None = None
    label_source: str = ""

    @property
    def coverage(self) -> float:
        """Share of the archived clicks that carry a label."""
        return self.labelled / self.clicks if self.clicks else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "coverage": self.coverage}


def complete_days(frame: pd.DataFrame, report: LabelReport) -> list[str]:
    """Days wholly inside the labelled span: the first archived hour to ``labelled_until``.

    A partial first or last day would skew a split towards the hours it happens to hold.
    """
    if frame.empty:
        return []
    start = frame["event_time"].min().floor("h")
    end = pd.Timestamp(report.labelled_until)
    days = sorted(frame["date"].unique())
    return [
        d
        for d in days
        if pd.Timestamp(d, tz="UTC") >= start
        and pd.Timestamp(d, tz="UTC") + pd.Timedelta(days=1) <= end
    ]


def archive_dates(root: Path) -> list[str]:
    """The days that have clicks in the archive, in order."""
    return dataset_dates(root, CLICKS)


def _newest_event(root: Path) -> pd.Timestamp:
    newest: list[pd.Timestamp] = []
    for name in (CLICKS, PURCHASES):
        if has_dataset(root, name):
            value = pc.max(read_dataset(root, name, columns=["event_time"])["event_time"]).as_py()
            if value is not None:
                newest.append(pd.Timestamp(value))
    return max(newest)


def _served_features(root: Path, dates: Sequence[str]) -> pd.DataFrame:
    """click_id -> vector: the served one (non-degraded decisions) first, else offline."""
    parts: list[pd.DataFrame] = []
    if has_dataset(root, DECISIONS):
        table = read_dataset(root, DECISIONS, dates, ["click_id", "features", "degraded"])
        table = table.filter(pc.invert(table["degraded"]))
        parts.append(_vectors(table))
    if has_dataset(root, FEATURES_DATASET):
        parts.append(
            _vectors(read_dataset(root, FEATURES_DATASET, dates, ["click_id", "features"]))
        )
    if not parts:
        raise DatasetError(
            f"{root} has neither decisions/ nor features/: archive the decisions topic "
            "(`slidr archive`) or compute features offline (`slidr train` does it for "
            "simulated Parquet)"
        )
    # A click decided twice (e.g. redelivered) got the same row twice (the row cache).
    return pd.concat(parts).drop_duplicates("click_id", keep="first")


def _givt_clicks(root: Path, dates: Sequence[str]) -> set[str]:
    """Clicks the worker decided by a GIVT list (reason code ``givt:*``): no part of training or
    calibration data, which are about what the model must find. Read from the archived
    decisions (what serving did), not recomputed; archives without decisions keep every click."""
    if not has_dataset(root, DECISIONS):
        return set()
    table = read_dataset(root, DECISIONS, dates, ["click_id", "reason_codes"])
    codes = pc.list_flatten(table["reason_codes"])
    owners = pc.list_parent_indices(table["reason_codes"])
    hits = pc.starts_with(codes, GIVT_PREFIX)
    rows = pc.filter(owners, hits)
    return set(pc.take(table["click_id"], rows).to_pylist())


def _vectors(table: pa.Table) -> pd.DataFrame:
    matrix = feature_matrix(table["features"])
    frame = pd.DataFrame(matrix, columns=list(FEATURES))
    frame.insert(0, "click_id", table["click_id"].to_numpy(zero_copy_only=False))
    return frame


def _purchased(root: Path, clicks: pd.DataFrame, window: timedelta | None) -> Bools:
    """True where a purchase of the click arrived within ``window`` after it (None: ever)."""
    if not has_dataset(root, PURCHASES):
        return np.zeros(len(clicks), dtype=bool)
    first = min(clicks["date"])
    days = [d for d in dataset_dates(root, PURCHASES) if d >= first]
    table = read_dataset(root, PURCHASES, days, ["click_id", "event_time"]).to_pandas()
    table = table.dropna(subset=["click_id"]).rename(columns={"event_time": "purchase_time"})
    joined = clicks[["click_id", "event_time"]].merge(table, on="click_id", how="inner")
    delay = joined["purchase_time"] - joined["event_time"]
    within = delay >= pd.Timedelta(0)
    if window is not None:
        within &= delay <= window
    ok = joined.loc[within, "click_id"]
    flags: Bools = clicks["click_id"].isin(set(ok)).to_numpy()
    return flags


def _rfm_human(root: Path, clicks: pd.DataFrame, threshold: float) -> Bools:
    table = read_customers(root, ["customer_id", "rfm_score"])
    if table is None:
        return np.zeros(len(clicks), dtype=bool)
    customers = table.to_pandas()
    high = set(customers.loc[customers["rfm_score"] > threshold, "customer_id"])
    flags: Bools = clicks["customer_id"].isin(high).to_numpy()
    return flags


def robotic_flag(clicks: pd.DataFrame, k: int) -> Bools:
    """The coverage heuristic: clicks of sessions with more than k clicks in one clock hour."""
    hour = clicks["event_time"].dt.floor("h")
    per_session_hour = clicks.groupby([clicks["session_id"], hour])["click_id"].transform("size")
    flags: Bools = (per_session_hour > k).to_numpy()
    return flags


def _slices(frame: pd.DataFrame, fields: Sequence[str]) -> pd.Series:
    combos = frame[list(fields)].drop_duplicates()
    names = {
        tuple(row): slice_name(dict(zip(fields, row, strict=True)), fields)
        for row in combos.itertuples(index=False)
    }
    keys = pd.Series(list(zip(*(frame[f] for f in fields), strict=True)), index=frame.index)
    return keys.map(names).astype("string")


def _truth(root: Path, dates: Sequence[str]) -> pd.DataFrame | None:
    if not has_dataset(root, TRUTH):
        return None
    return read_dataset(root, TRUTH, dates, ["click_id", "is_bot"]).to_pandas()


def load_labelled(
    root: Path,
    learn: LearnSettings,
    dates: Sequence[str] | None = None,
    slice_fields: Sequence[str] = DEFAULT_SLICE_FIELDS,
) -> tuple[pd.DataFrame, LabelReport]:
    """The labelled frame of ``dates`` (all archived days by default) and its label report."""
    root = Path(root)
    known = archive_dates(root)
    if not known:
        raise DatasetError(f"no clicks under {root / CLICKS} (expected date=*/hour=* Parquet)")
    wanted = list(dates) if dates is not None else known
    missing = sorted(set(wanted) - set(known))
    if missing:
        raise DatasetError(
            f"the archive {root} has no clicks for {', '.join(missing)}; it has "
            f"{known[0]} .. {known[-1]}"
        )
    clicks = read_dataset(root, CLICKS, wanted, _CLICK_COLUMNS).to_pandas()
    total = len(clicks)
    givt = _givt_clicks(root, wanted)
    if givt:
        clicks = clicks.loc[~clicks["click_id"].isin(givt)].reset_index(drop=True)
    clicks = clicks.merge(_served_features(root, wanted), on="click_id", how="inner")
    without_features = total - len(clicks)

    labels = label_source(root, learn.attribution_window_h)
    window = None if labels.horizon_h is None else timedelta(hours=labels.horizon_h)
    as_of = _newest_event(root)
    if window is None:
        until = clicks["event_time"].max() if len(clicks) else as_of
    else:
        until = as_of - window
    mature = clicks["event_time"] <= until
    # The heuristic flag needs the whole session-hour, so it is computed before dropping.
    clicks["robotic"] = robotic_flag(clicks, learn.coverage_k)
    clicks = clicks.loc[mature.to_numpy()].reset_index(drop=True)

    clicks["date"] = clicks["event_time"].dt.strftime("%Y-%m-%d")
    clicks["hour"] = clicks["event_time"].dt.hour.astype("int8")
    clicks["dow"] = clicks["event_time"].dt.dayofweek.astype("int8")
    clicks["purchased"] = _purchased(root, clicks, window)
    clicks["rfm_human"] = _rfm_human(root, clicks, learn.rfm_threshold)
    clicks["label"] = (~(clicks["purchased"] | clicks["rfm_human"])).astype("int8")
    clicks["slice"] = _slices(clicks, slice_fields)
    truth = _truth(root, wanted)
    if truth is not None:
        clicks = clicks.merge(truth, on="click_id", how="left")
        clicks["is_bot"] = clicks["is_bot"].fillna(False).astype(bool)
    report = LabelReport(
        clicks=total,
        without_features=without_features,
        not_yet_labelled=int((~mature).sum()),
        labelled=len(clicks),
        human_by_purchase=int(clicks["purchased"].sum()),
        human_by_rfm=int((clicks["rfm_human"] & ~clicks["purchased"]).sum()),
        non_human=int(clicks["label"].sum()),
        as_of=as_of.isoformat(),
        labelled_until=pd.Timestamp(until).isoformat(),
        horizon_h=labels.horizon_h,
        label_source=labels.source,
    )
    return clicks, report
