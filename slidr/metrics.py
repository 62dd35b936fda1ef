"""The article's metrics, on arrays of scores: IVR, FPR, robotic coverage, and their curves.

- IVR (invalidation rate): share of all clicks invalidated (score >= threshold).
- FPR: share of purchasing clicks invalidated; purchasing clicks stand in for all humans.
- Robotic coverage: share of heuristic-flagged clicks (sessions with more than k clicks in an
  hour) invalidated.
- With ground truth (simulated data only): bot recall, precision and the true human FPR.

numpy only: the streaming path, calibration and replay all use these definitions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.floating[Any]]
Bools = npt.NDArray[np.bool_]

#: Confidence of the two-sided intervals every report shows beside a rate.
REPORT_CONFIDENCE = 0.95


def z_two_sided(confidence: float) -> float:
    """The normal quantile of a two-sided interval at ``confidence`` (0.95 -> 1.96)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def z_one_sided(confidence: float) -> float:
    """The normal quantile of a one-sided bound at ``confidence`` (0.95 -> 1.645; 0.5 -> 0)."""
    return NormalDist().inv_cdf(confidence)


def wilson(rate: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``rate`` observed on ``n`` trials.

    ``n`` may be an effective sample size (Kish's, for a weighted proportion); z = 0 gives the
    point itself, NaN rate or n = 0 gives (NaN, NaN).

    >>> [round(v, 4) for v in wilson(0.02, 500, 1.96)]
    [0.0109, 0.0364]
    >>> wilson(0.0, 100, 1.96)[0]
    0.0
    """
    if n <= 0 or math.isnan(rate):
        return math.nan, math.nan
    p = min(max(rate, 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(
    a: tuple[float, float], b: tuple[float, float], z: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``rate_a - rate_b``, each given as (rate, n).

    Treats the two as independent samples; on the same clicks (positively correlated) it is
    wider than the truth, so a verdict on it errs towards not refusing.
    """
    (pa, na), (pb, nb) = a, b
    la, ua = wilson(pa, na, z)
    lb, ub = wilson(pb, nb, z)
    d = pa - pb
    return (
        d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
        d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2),
    )


def effective_size(weights: Floats) -> float:
    """Kish's effective sample size of weighted observations: (sum w)^2 / sum w^2."""
    squares = float(np.square(weights).sum())
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def _share(hit: Bools, among: Bools) -> float:
    n = int(among.sum())
    return float((hit & among).sum() / n) if n else float("nan")


@dataclass(frozen=True)
class Rates:
    """Operating figures of one threshold on one set of clicks."""

    ivr: float
    fpr: float
    coverage: float
    clicks: int
    purchasing: int
    robotic: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def interval(self, metric: str, z: float) -> tuple[float, float]:
        """Wilson interval of ``metric`` (ivr, fpr or coverage) on its own denominator."""
        n = {"ivr": self.clicks, "fpr": self.purchasing, "coverage": self.robotic}[metric]
        return wilson(float(getattr(self, metric)), n, z)

    def intervals(self, confidence: float = REPORT_CONFIDENCE) -> dict[str, list[float]]:
        """``{"ivr_ci": [low, high], "fpr_ci": ..., "coverage_ci": ...}`` at ``confidence``."""
        z = z_two_sided(confidence)
        return {f"{m}_ci": list(self.interval(m, z)) for m in ("ivr", "fpr", "coverage")}


def rates(invalid: Bools, purchased: Bools, robotic: Bools) -> Rates:
    """IVR, FPR and robotic coverage of the decisions ``invalid``."""
    everything = np.ones_like(invalid, dtype=bool)
    return Rates(
        ivr=_share(invalid, everything),
        fpr=_share(invalid, purchased),
        coverage=_share(invalid, robotic),
        clicks=int(invalid.size),
        purchasing=int(purchased.sum()),
        robotic=int(robotic.sum()),
    )


@dataclass(frozen=True)
class TruthRates:
    """Against the simulator's ground truth: what the weak-label metrics stand in for."""

    bot_recall: float
    precision: float
    human_fpr: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def truth_rates(invalid: Bools, is_bot: Bools) -> TruthRates:
    return TruthRates(
        bot_recall=_share(invalid, is_bot),
        precision=_share(is_bot, invalid),
        human_fpr=_share(invalid, ~is_bot),
    )


@dataclass(frozen=True)
class Curve:
    """IVR, FPR and coverage for every distinct threshold, in decreasing threshold order.

    Point i invalidates the clicks with score >= ``thresholds[i]``; the first point
    (threshold +inf) invalidates nothing, so every curve starts at (0, 0, 0).
    """

    thresholds: Floats
    ivr: Floats
    fpr: Floats
    coverage: Floats

    def at_fpr(self, fpr: float) -> int:
        """Index of the point with the most invalidations whose FPR is at most ``fpr``."""
        return int(np.searchsorted(self.fpr, fpr, side="right") - 1)

    def rates_at(self, i: int) -> tuple[float, float, float]:
        return float(self.ivr[i]), float(self.fpr[i]), float(self.coverage[i])


def curve(
    score: Floats, purchased: Bools, robotic: Bools, fpr_weight: Floats | None = None
) -> Curve:
    """The whole threshold sweep in O(n log n): one sort and cumulative sums.

    ``fpr_weight``: the FPR as a weighted share (e.g. stand-ins weighted to all humans,
    calibration/human.py) instead of the share of purchasing clicks.
    """
    order = np.argsort(-score, kind="stable")
    s = score[order]
    # The last index of each run of equal scores: a threshold cannot split ties.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    weight = purchased.astype(np.float64) if fpr_weight is None else fpr_weight
    n, n_p, n_r = len(s), float(weight.sum()), int(robotic.sum())
    invalid = (last + 1).astype(np.float64)
    fp = np.cumsum(weight[order])[last].astype(np.float64)
    covered = np.cumsum(robotic[order])[last].astype(np.float64)
    return Curve(
        thresholds=np.r_[np.inf, s[last]].astype(np.float64),
        ivr=np.r_[0.0, invalid / n] if n else np.zeros(1),
        fpr=np.r_[0.0, fp / n_p] if n_p else np.zeros(len(last) + 1),
        coverage=np.r_[0.0, covered / n_r] if n_r else np.zeros(len(last) + 1),
    )


def knee(c: Curve) -> int:
    """The knee of the IVR-FPR curve: the point farthest above the chord from its ends."""
    x, y = c.fpr, c.ivr
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    norm = float(np.hypot(dx, dy)) or 1.0
    distance = (dx * (y - y[0]) - dy * (x - x[0])) / norm
    return int(np.argmax(distance))
