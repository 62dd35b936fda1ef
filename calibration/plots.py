"""One PNG per slice: the calibration day's IVR-FPR curve, its fits and the operating points.

matplotlib is imported only when a plot is drawn (it is slow to import); figures are drawn
with ``matplotlib.figure.Figure`` directly, so no pyplot state or GUI backend is involved.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from calibration.calibrate import CalibrationOutcome, Policy, SliceFit
from calibration.fit import FitMethod, hull_at, quadratic_at
from slidr.metrics import REPORT_CONFIDENCE, Curve, wilson, z_two_sided
from slidr.slices import ROOT_SLICE, lookup_threshold

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_DPI = 110
_MARKERS = {
    Policy.GLOBAL_KNEE: ("s", "global, at the knee"),
    Policy.GLOBAL_SAME_FPR: ("^", "global, same overall FPR"),
    Policy.GLOBAL_HELD_OUT_FPR: ("v", "global, same FPR on held-out day"),
    Policy.SLICE_LEVEL: ("o", "slice-level"),
}


def plot_name(unit: str) -> str:
    return "curve-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", unit) + ".png"


def point_at_threshold(c: Curve, threshold: float) -> tuple[float, float]:
    """(FPR, IVR) on ``c`` of invalidating every score >= ``threshold``."""
    i = int(np.searchsorted(-c.thresholds, -threshold, side="right") - 1)
    return float(c.fpr[i]), float(c.ivr[i])


def _policy_points(ax: Axes, outcome: CalibrationOutcome, c: Curve, unit: str) -> float:
    """Mark every policy's point on ``c``; return the largest FPR marked."""
    widest = 0.0
    for policy, result in outcome.comparison.items():
        marker, label = _MARKERS[policy]
        if unit == ROOT_SLICE:
            # All clicks: where each policy lands overall, whatever its per-slice thresholds.
            overall = result.calibration_day.overall
            fpr, ivr, shown = overall.fpr, overall.ivr, label
        else:
            t = lookup_threshold(result.thresholds, unit, math.nan)
            if math.isnan(t):
                continue
            (fpr, ivr), shown = point_at_threshold(c, t), f"{label} ({t:.3f})"
        # The FPR's 95 % Wilson interval where the clicks decided are the unit's own.
        day = result.calibration_day
        counts = day.overall if unit == ROOT_SLICE else day.per_slice.get(unit)
        xerr = None
        if counts is not None and counts.purchasing:
            low, high = wilson(fpr, counts.purchasing, z_two_sided(REPORT_CONFIDENCE))
            xerr = [[max(fpr - low, 0.0)], [max(high - fpr, 0.0)]]
        ax.errorbar(
            fpr, ivr, xerr=xerr, marker=marker, linestyle="none", markersize=7, label=shown,
            zorder=3, capsize=2,
        )  # fmt: skip
        widest = max(widest, fpr)
    return widest


def _draw(ax: Axes, c: Curve, fit: SliceFit | None, outcome: CalibrationOutcome, unit: str) -> None:
    widest = _policy_points(ax, outcome, c, unit)
    if fit is not None:
        f = np.linspace(fit.fit.lo, fit.fit.hi, 100)
        used = fit.fit.method
        ax.plot(
            f,
            quadratic_at(fit.fit.quadratic, f),
            linestyle="-" if used is FitMethod.QUADRATIC else ":",
            linewidth=2.4,
            alpha=0.8,
            zorder=2.5,
            label=f"quadratic fit (RMSE {fit.fit.quadratic_rmse:.4f})",
        )
        if used is FitMethod.HULL:
            hull = hull_at(fit.fit.slopes, fit.fit.intercepts, f)
            ax.plot(f, hull, linewidth=2.4, alpha=0.8, zorder=2.5, label="concave hull (used)")
        ax.axvline(fit.fit.lo, color="grey", linestyle=":", linewidth=0.8, label="coverage floor")
        widest = max(widest, fit.fit.hi)
    right = min(1.0, 1.25 * max(widest, 1e-3))
    # Only the ends of each FPR level: the same picture from thousands of points, not millions.
    level = c.fpr[1:] != c.fpr[:-1]
    ends = (np.r_[True, level] | np.r_[level, True]) & (c.fpr <= right)
    ax.plot(c.fpr[ends], c.ivr[ends], color="black", linewidth=1.2, label="empirical curve")
    ax.set_xlim(0.0, right)
    ax.set_ylim(0.0, min(1.0, 1.15 * float(c.ivr[c.at_fpr(right)]) + 0.02))
    ax.set_xlabel("FPR (share of purchasing clicks invalidated)")
    ax.set_ylabel("IVR (share of clicks invalidated)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_slices(outcome: CalibrationOutcome, out_dir: Path) -> list[Path]:
    """``curve-all.png`` for all clicks, then one plot per decision unit."""
    from matplotlib.figure import Figure

    panels: list[tuple[str, Curve, SliceFit | None, str]] = [
        (ROOT_SLICE, outcome.overall_curve, None, "all clicks"),
    ]
    for sf in outcome.fits:
        pooled = f", pooled: {', '.join(sf.unit.members)}" if sf.unit.pooled else ""
        title = f"{sf.unit.name} ({sf.unit.clicks:,} clicks, {sf.fit.method.value} fit{pooled})"
        panels.append((sf.unit.name, sf.unit.curve, sf, title))
    paths = []
    for unit, c, fit, title in panels:
        figure = Figure(figsize=(8.5, 4.2))
        # Fixed margins (room for the legend on the right): constrained layout draws twice.
        figure.subplots_adjust(left=0.1, right=0.64, bottom=0.12, top=0.92)
        ax = figure.subplots()
        _draw(ax, c, fit, outcome, unit)
        ax.set_title(f"{title}, calibration day", fontsize=9)
        path = out_dir / plot_name(unit)
        figure.savefig(path, dpi=_DPI)
        paths.append(path)
    return paths
