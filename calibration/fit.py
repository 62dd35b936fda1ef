"""A slice's IVR as a concave function of its FPR, on the range the solver may choose from.

The article observes that IVR is well approximated by a quadratic in FPR. We fit
``IVR ~ a f^2 + b f + c`` with ``a <= 0`` (concave, so the joint problem stays convex) by least
squares on the curve's operating points in [lo, hi]: the best IVR at each FPR level, one per
purchasing click, so evenly spread over FPR. Where the fit is worse than ``max_fit_rmse`` the
slice uses the upper concave hull of those points instead (if that fits better), as the
minimum of affine pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from slidr.metrics import Curve, Floats


class FitMethod(StrEnum):
    QUADRATIC = "quadratic"
    HULL = "hull"


@dataclass(frozen=True)
class IvrFit:
    """IVR(f) for f in [lo, hi]; ``method`` says which of the two forms the solver uses."""

    method: FitMethod
    lo: float
    hi: float
    #: Coefficients (a, b, c) of a f^2 + b f + c, a <= 0.
    quadratic: tuple[float, float, float]
    #: The hull as min over pieces of slope * f + intercept.
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    quadratic_rmse: float
    hull_rmse: float

    @property
    def rmse(self) -> float:
        return self.quadratic_rmse if self.method is FitMethod.QUADRATIC else self.hull_rmse

    def predict(self, f: Floats) -> Floats:
        return (
            quadratic_at(self.quadratic, f)
            if self.method is FitMethod.QUADRATIC
            else (hull_at(self.slopes, self.intercepts, f))
        )


def quadratic_at(coef: tuple[float, float, float], f: Floats) -> Floats:
    a, b, c = coef
    out: Floats = (a * f + b) * f + c
    return out


def hull_at(slopes: tuple[float, ...], intercepts: tuple[float, ...], f: Floats) -> Floats:
    out: Floats = np.min(np.outer(f, slopes) + np.asarray(intercepts), axis=1)
    return out


def operating_points(c: Curve, lo: float, hi: float) -> tuple[Floats, Floats]:
    """(FPR, IVR) at the top of each FPR level of ``c`` with lo <= FPR <= hi."""
    top = np.flatnonzero(np.r_[c.fpr[1:] != c.fpr[:-1], True])
    f, y = c.fpr[top], c.ivr[top]
    inside = (f >= lo) & (f <= hi)
    return f[inside], y[inside]


def fit_quadratic(f: Floats, y: Floats) -> tuple[float, float, float]:
    """Least squares with a <= 0: if the free fit is convex, the constraint binds (a = 0)."""
    span = float(f[-1] - f[0])
    if span <= 0:
        return 0.0, 0.0, float(y.mean())
    # Fit on u in [0, 1] for conditioning, then map back to f.
    u = (f - f[0]) / span
    # Two points leave a quadratic undetermined: the line through them.
    big_a, big_b, big_c = np.polyfit(u, y, 2) if len(u) > 2 else (0.0, *np.polyfit(u, y, 1))
    if big_a > 0:
        big_a = 0.0
        big_b, big_c = np.polyfit(u, y, 1)
    lo = float(f[0])
    a = big_a / span**2
    b = big_b / span - 2 * big_a * lo / span**2
    c = big_a * lo**2 / span**2 - big_b * lo / span + big_c
    return float(a), float(b), float(c)


def upper_hull(f: Floats, y: Floats) -> tuple[Floats, Floats]:
    """Vertices of the upper concave hull of points sorted by f (monotone chain)."""
    keep: list[int] = []
    for i in range(len(f)):
        while len(keep) >= 2:
            j, k = keep[-2], keep[-1]
            # Drop k when it lies on or below the chord from j to i.
            if (f[k] - f[j]) * (y[i] - y[j]) - (y[k] - y[j]) * (f[i] - f[j]) >= 0:
                keep.pop()
            else:
                break
        keep.append(i)
    return f[keep], y[keep]


def hull_pieces(
    f: Floats, y: Floats, max_pieces: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The hull as at most ``max_pieces`` affine pieces (a subset of its vertices: still
    concave, never above the hull)."""
    vf, vy = upper_hull(f, y)
    if len(vf) < 2:
        return (0.0,), (float(vy[0]),)
    # Greedy: from the two ends, add the vertex farthest above the current chords.
    chosen = [0, len(vf) - 1]
    while len(chosen) <= max_pieces:
        gap = vy - np.interp(vf, vf[chosen], vy[chosen])
        farthest = int(np.argmax(gap))
        if gap[farthest] <= 0:
            break
        chosen = sorted([*chosen, farthest])
    vf, vy = vf[chosen], vy[chosen]
    slopes = np.diff(vy) / np.diff(vf)
    intercepts = vy[:-1] - slopes * vf[:-1]
    return tuple(map(float, slopes)), tuple(map(float, intercepts))


def _rmse(predicted: Floats, y: Floats) -> float:
    return float(np.sqrt(np.mean((predicted - y) ** 2)))


def fit_ivr(c: Curve, lo: float, hi: float, max_rmse: float, max_pieces: int) -> IvrFit:
    f, y = operating_points(c, lo, hi)
    coef = fit_quadratic(f, y)
    slopes, intercepts = hull_pieces(f, y, max_pieces)
    quadratic_rmse = _rmse(quadratic_at(coef, f), y)
    hull_rmse = _rmse(hull_at(slopes, intercepts, f), y)
    # The hull rides on the upper points: on a noisy curve it can fit worse than the quadratic.
    use_hull = quadratic_rmse > max_rmse and hull_rmse < quadratic_rmse
    return IvrFit(
        method=FitMethod.HULL if use_hull else FitMethod.QUADRATIC,
        lo=lo,
        hi=hi,
        quadratic=coef,
        slopes=slopes,
        intercepts=intercepts,
        quadratic_rmse=quadratic_rmse,
        hull_rmse=hull_rmse,
    )
