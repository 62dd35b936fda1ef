"""Thresholding policies measured on a day of labelled clicks: overall and per slice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from slidr.metrics import Bools, Floats, Rates, TruthRates, rates, truth_rates
from slidr.slices import ROOT_SLICE, lookup_threshold


@dataclass(frozen=True)
class PolicyRates:
    """What one set of served thresholds does to one day of clicks."""

    overall: Rates
    per_slice: dict[str, Rates]
    #: Against the simulator's ground truth; None on data without ``is_bot``.
    truth: TruthRates | None
    per_slice_truth: dict[str, TruthRates] | None

    def as_dict(self) -> dict[str, Any]:
        # Each rate with its 95 % Wilson interval (``*_ci``): unweighted shares of clicks.
        return {
            "overall": self.overall.as_dict() | self.overall.intervals(),
            "per_slice": {k: v.as_dict() | v.intervals() for k, v in self.per_slice.items()},
            "truth": None if self.truth is None else self.truth.as_dict(),
            "per_slice_truth": None
            if self.per_slice_truth is None
            else {k: v.as_dict() for k, v in self.per_slice_truth.items()},
        }


def global_thresholds(threshold: float) -> dict[str, float]:
    """One threshold for every slice, as a record would serve it."""
    return {ROOT_SLICE: threshold}


def row_thresholds(slices: pd.Series, thresholds: Mapping[str, float], default: float) -> Floats:
    """The threshold the worker would apply to each click (same fallback as serving)."""
    per_slice = {s: lookup_threshold(thresholds, str(s), default) for s in slices.unique()}
    out: Floats = slices.map(per_slice).to_numpy(dtype=np.float64)
    return out


def invalidated(frame: pd.DataFrame, thresholds: Mapping[str, float], default: float) -> Bools:
    scores = frame["score"].to_numpy(dtype=np.float64)
    flags: Bools = scores >= row_thresholds(frame["slice"], thresholds, default)
    return flags


def measure(frame: pd.DataFrame, thresholds: Mapping[str, float], default: float) -> PolicyRates:
    invalid = invalidated(frame, thresholds, default)
    purchased = frame["purchased"].to_numpy(dtype=bool)
    robotic = frame["robotic"].to_numpy(dtype=bool)
    is_bot = frame["is_bot"].to_numpy(dtype=bool) if "is_bot" in frame.columns else None
    per_slice: dict[str, Rates] = {}
    per_slice_truth: dict[str, TruthRates] = {}
    for name, rows in frame.groupby("slice", observed=True).indices.items():
        per_slice[str(name)] = rates(invalid[rows], purchased[rows], robotic[rows])
        if is_bot is not None:
            per_slice_truth[str(name)] = truth_rates(invalid[rows], is_bot[rows])
    return PolicyRates(
        overall=rates(invalid, purchased, robotic),
        per_slice=dict(sorted(per_slice.items())),
        truth=None if is_bot is None else truth_rates(invalid, is_bot),
        per_slice_truth=None if is_bot is None else dict(sorted(per_slice_truth.items())),
    )
