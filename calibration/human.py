"""How many humans a threshold invalidates, not only how many purchasers (issue 19).

Purchasing clicks stand in for humans, but they are a biased sample: loyal, logged-in
customers buy far more often than anonymous visitors, and the model scores the two groups
differently, so the purchaser FPR understates the share of all human clicks invalidated.

The estimate here post-stratifies the stand-ins: within a cell (a slice, times a band of hours
of the day) the stand-ins are taken as a random sample of the cell's humans, and each cell is
weighted by an estimate of its number of human clicks. That number comes from the low-score
end of the cell, where (nearly) only humans are: if a share ``q`` of the cell's stand-ins score
at or below ``m``, and ``k`` of all its clicks do, the cell holds about ``k / q`` humans (the
positive-unlabelled estimate of Elkan and Noto, per cell). Each stand-in then carries the
weight ``(k / q) / stand-ins in the cell``; the human FPR of a threshold is the weighted share
of stand-ins it invalidates. Stand-ins are the purchasing clicks, and optionally the
high-RFM (``rfm_human``) clicks as a second sample of humans.

Both assumptions err the same way: a bot scoring below ``m`` is counted as a human of its
cell, which weights bot-heavy (logged-out) cells up, where humans are invalidated more, so the
estimate leans high rather than low.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from slidr.metrics import Bools, Floats, effective_size, wilson, z_two_sided

#: The share of a cell's stand-ins below the score that delimits its human end.
LOW_SCORE_QUANTILE = 0.5
#: A cell with fewer stand-ins than this is merged into its slice (all hours together).
MIN_CELL_STAND_INS = 10
#: Each stand-in's weight is shared with the clicks within about this many other stand-ins
#: on each side by score, in its slice (:func:`smooth_by_rank`).
SMOOTH_STAND_INS = 4.0


def stand_ins(frame: pd.DataFrame, with_rfm: bool) -> Bools:
    """Clicks standing in for humans: purchasing, and high-RFM ones when asked and known."""
    chosen = frame["purchased"].to_numpy(dtype=bool)
    if with_rfm and "rfm_human" in frame.columns:
        chosen = chosen | frame["rfm_human"].to_numpy(dtype=bool)
    out: Bools = chosen
    return out


def _cells(frame: pd.DataFrame, hour_bands: int) -> pd.Series:
    cells = frame["slice"].astype(str)
    if hour_bands > 1 and "hour" in frame.columns:
        band = frame["hour"].to_numpy(dtype=np.int64) * hour_bands // 24
        cells = cells + "@" + pd.Series(band, index=frame.index).astype(str)
    return cells


def stand_in_weights(frame: pd.DataFrame, *, with_rfm: bool, hour_bands: int) -> Floats:
    """Per click: its weight as a stand-in for the human clicks of its cell (0 if none)."""
    score = frame["score"].to_numpy(dtype=np.float64)
    chosen = stand_ins(frame, with_rfm)
    cells = _cells(frame, hour_bands)
    counts = pd.Series(chosen).groupby(cells.to_numpy()).sum()
    thin = set(counts.index[counts < MIN_CELL_STAND_INS])
    if thin:
        slices = frame["slice"].astype(str)
        cells = cells.where(~cells.isin(thin), slices)
    weights = np.zeros(len(frame))
    for _, rows in pd.Series(np.arange(len(frame))).groupby(cells.to_numpy()):
        idx = rows.to_numpy()
        mine = idx[chosen[idx]]
        if len(mine) == 0:
            continue
        cut = float(np.quantile(score[mine], LOW_SCORE_QUANTILE))
        share = float((score[mine] <= cut).mean())
        humans = max(float((score[idx] <= cut).sum()) / share, float(len(mine)))
        weights[mine] = humans / len(mine)
    return weights


def _box(a: Floats, length: int) -> Floats:
    """Full convolution of ``a`` with ``length`` ones (running sums), O(n)."""
    pad = np.zeros(length - 1)
    c = np.r_[0.0, np.cumsum(np.r_[pad, a, pad])]
    out: Floats = c[length:] - c[: len(c) - length]
    return out


def _triangle(a: Floats, half: int) -> Floats:
    """``a`` convolved with the triangle ``half + 1 - |d|`` for |d| <= half, same length."""
    full = _box(_box(a, half + 1), half + 1)
    out: Floats = full[half : half + len(a)]
    return out


def smooth_by_rank(
    score: Floats, weights: Floats, groups: npt.ArrayLike, per_side: float
) -> Floats:
    """Each positive weight shared with its neighbours by score rank within its group.

    In a group of ``n`` clicks holding ``k`` stand-ins, a stand-in's weight is spread over the
    clicks within ``h = ceil(per_side * n / k)`` ranks of it, by a triangular kernel (truncated
    at the ends of the group and renormalised, so each stand-in keeps its total weight): about
    ``per_side`` other stand-ins on each side. The result, at every click, is a local average of
    the stand-in weight around that score, i.e. a kernel estimate of the (weighted) stand-in
    share given the score, times all clicks' score distribution. A threshold's weighted share
    then moves smoothly with the threshold instead of stepping at each stand-in's score.

    >>> one = np.r_[np.zeros(4), 4.0, np.zeros(4)]  # 9 clicks, one stand-in: h = 3 ranks
    >>> smooth_by_rank(np.arange(9.0), one, np.zeros(9), 0.25).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0.0]
    >>> edge = smooth_by_rank(np.arange(9.0), np.r_[4.0, np.zeros(8)], np.zeros(9), 0.25)
    >>> float(edge.sum())  # at the end of the group the kernel is cut and renormalised
    4.0
    """
    out = np.zeros(len(score))
    keys = np.asarray(groups)
    for _, rows in pd.Series(np.arange(len(score))).groupby(keys):
        idx = rows.to_numpy()
        order = idx[np.argsort(score[idx], kind="stable")]
        a = weights[order]
        k = int((a > 0).sum())
        if k == 0:
            continue
        half = max(int(np.ceil(per_side * len(a) / k)), 0)
        norm = _triangle(np.ones(len(a)), half)
        out[order] = _triangle(a / norm, half)
    return out


def human_weights(
    frame: pd.DataFrame,
    *,
    with_rfm: bool,
    hour_bands: int,
    per_side: float = SMOOTH_STAND_INS,
) -> Floats:
    """Per click: its weight in the estimated human FPR: the post-stratified stand-in weights
    (:func:`stand_in_weights`) smoothed by score rank within each slice
    (:func:`smooth_by_rank`); ``per_side`` 0 leaves them on the stand-ins."""
    weights = stand_in_weights(frame, with_rfm=with_rfm, hour_bands=hour_bands)
    if per_side <= 0:
        return weights
    score = frame["score"].to_numpy(dtype=np.float64)
    return smooth_by_rank(score, weights, frame["slice"].astype(str).to_numpy(), per_side)


@dataclass(frozen=True)
class Estimate:
    """A rate with its two-sided interval and the sample size behind it."""

    value: float
    low: float
    high: float
    #: Clicks (purchaser FPR) or Kish's effective size of the weighted stand-ins (human FPR).
    n: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def weighted_rate(
    invalid: Bools, weights: Floats, confidence: float, n: float | None = None
) -> Estimate:
    """The weighted share of ``invalid`` among weighted clicks, with a Wilson interval on
    Kish's effective sample size (weights make the plain count overstate the evidence), or on
    ``n`` when given (smoothed weights: the evidence is still the stand-ins they came from)."""
    total = float(weights.sum())
    if total <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0.0)
    value = float(weights[invalid].sum()) / total
    if n is None:
        n = effective_size(weights[weights > 0])
    low, high = wilson(value, n, z_two_sided(confidence))
    return Estimate(value, low, high, n)
