"""The article's metrics, on arrays of scores: IVR, FPR, robotic coverage, and their curves.

- IVR (invalidation rate): share of all clicks invalidated (score >= threshold).
- FPR: share of purchasing clicks invalidated; purchasing clicks stand in for all humans.
- Robotic coverage: share of heuristic-flagged clicks (sessions with more than k clicks in an
  hour) invalidated.
- With ground truth (simulated data only): bot recall, precision and the true human FPR.

numpy only: the streaming path, calibration and replay all use these definitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.floating[Any]]
Bools = npt.NDArray[np.bool_]


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


def curve(score: Floats, purchased: Bools, robotic: Bools) -> Curve:
    """The whole threshold sweep in O(n log n): one sort and cumulative sums."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    # The last index of each run of equal scores: a threshold cannot split ties.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    n, n_p, n_r = len(s), int(purchased.sum()), int(robotic.sum())
    invalid = (last + 1).astype(np.float64)
    fp = np.cumsum(purchased[order])[last].astype(np.float64)
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
