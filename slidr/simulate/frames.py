"""Columnar batches of integer codes, the generator's working format before strings exist."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
#: Column name -> equal-length array. Strings are made only at emission (see tables.py).
Frame = dict[str, npt.NDArray[Any]]

#: Click columns: time in ms since the epoch, ids as (hour of generation, serial) pairs,
#: categorical columns as codes into catalog/World tables (-1 = null), kind 0 = human.
CLICK_COLUMNS = (
    "t_ms", "gen_hour", "serial", "sess_hour", "sess", "customer", "ip", "ua", "device",
    "platform", "market", "ad", "placement", "kind",
)  # fmt: skip
PURCHASE_COLUMNS = (
    "t_ms", "gen_hour", "serial", "click_serial", "sess_hour", "sess", "customer", "amount",
    "currency",
)  # fmt: skip


def empty(columns: tuple[str, ...]) -> Frame:
    return {
        name: np.zeros(0, dtype=np.float64 if name == "amount" else np.int64) for name in columns
    }


def length(frame: Frame) -> int:
    return len(frame["t_ms"])


def take(frame: Frame, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Frame:
    return {name: values[index] for name, values in frame.items()}


def concat(frames: list[Frame], columns: tuple[str, ...]) -> Frame:
    if not frames:
        return empty(columns)
    return {name: np.concatenate([f[name] for f in frames]) for name in columns}


def sort_by_time(frame: Frame) -> Frame:
    # Stable: rows with equal times keep their deterministic generation order.
    return take(frame, np.argsort(frame["t_ms"], kind="stable"))


def split_by_hour(frame: Frame, start_ms: int) -> dict[int, Frame]:
    """Rows grouped by the hour (index from the start of the run) their event falls in."""
    hours = (frame["t_ms"] - start_ms) // 3_600_000
    order = np.argsort(hours, kind="stable")
    hours_sorted = hours[order]
    bounds = np.flatnonzero(np.diff(hours_sorted)) + 1
    parts: dict[int, Frame] = {}
    for chunk in np.split(order, bounds):
        if len(chunk):
            parts[int(hours[chunk[0]])] = take(frame, chunk)
    return parts
