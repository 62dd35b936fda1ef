"""Slice-level calibration of one model version: held-out scores in, thresholds and report out.

:func:`run` never raises on an infeasible budget or a solver failure: it returns an outcome
whose status says what happened, with the last good thresholds kept as the safe result.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
import pandas as pd

from calibration.compare import PolicyRates, global_thresholds, invalidated, measure
from calibration.errors import CalibrationError
from calibration.fit import FitMethod, IvrFit, fit_ivr
from calibration.human import Estimate, human_weights, stand_in_weights, weighted_rate
from calibration.problem import SliceTerms, SolveFailed, allocation_problem
from calibration.slices import SliceData, build_shrunk_slices, build_slices, check_frame
from slidr.metrics import (
    REPORT_CONFIDENCE,
    Curve,
    Floats,
    curve,
    effective_size,
    knee,
    z_one_sided,
)
from slidr.serving_figures import SCORE_BINS
from slidr.settings import CalibrationSettings
from slidr.slices import ROOT_SLICE, SLICE_FIELDS

log = logging.getLogger(__name__)

#: The solver's FPR may sit a rounding error below a curve point it means to reach.
_FPR_TOLERANCE = 1e-9


class Status(StrEnum):
    CALIBRATED = "calibrated"
    INFEASIBLE_BUDGET = "infeasible_budget"
    SOLVER_FAILED = "solver_failed"


class Policy(StrEnum):
    """The thresholds compared on the held-out day."""

    #: One threshold at the knee of the calibration day's overall IVR-FPR curve.
    GLOBAL_KNEE = "global_knee"
    #: One threshold at the slice-level thresholds' overall FPR, on the calibration day.
    GLOBAL_SAME_FPR = "global_same_fpr"
    #: One threshold at the slice-level thresholds' overall FPR on the held-out day itself:
    #: not deployable (it peeks at the day it is measured on), but the comparison at equal FPR.
    GLOBAL_HELD_OUT_FPR = "global_held_out_fpr"
    SLICE_LEVEL = "slice_level"


@dataclass(frozen=True)
class SliceFit:
    unit: SliceData
    fit: IvrFit


@dataclass(frozen=True)
class SlicePoint:
    """A unit's chosen point: the solver's FPR, its threshold and the calibration day's rates."""

    target_fpr: float
    threshold: float
    ivr: float
    fpr: float
    coverage: float
    fit_ivr: float


@dataclass(frozen=True)
class PolicyResult:
    policy: Policy
    thresholds: dict[str, float]
    calibration_day: PolicyRates
    evaluation_day: PolicyRates


@dataclass(frozen=True)
class CalibrationOutcome:
    status: Status
    message: str
    model_version: int
    settings: CalibrationSettings
    #: The calibration day's sweep over all clicks (the global policies are read off it).
    overall_curve: Curve
    fits: list[SliceFit]
    #: Per unit name; empty unless calibrated.
    points: dict[str, SlicePoint]
    #: What to serve: the new thresholds, or the last good ones when the solve gave none.
    thresholds: dict[str, float]
    min_feasible_budget: float
    #: The FPR the thresholds were solved at: the budget's point under ``budget_confidence``
    #: (:func:`bounded_budget`), never below ``min_feasible_budget``.
    solved_budget: float
    notes: list[str]
    windows: dict[str, list[str]]
    solve_ms: float
    comparison: dict[Policy, PolicyResult]
    #: Shares of the held-out day's scores in equal bins over [0, 1] (the monitor's baseline).
    score_histogram: list[float]
    #: Day ("calibration_day", "evaluation_day") -> slice ("all" too) -> "purchaser" / "human"
    #: FPR of the served thresholds, with intervals (calibration/human.py).
    fpr_estimates: dict[str, dict[str, dict[str, Estimate]]] = field(default_factory=dict)
    #: The calibration day's purchaser FPR of the served thresholds per band of hours of the
    #: day (``human_hour_bands``), and its purchasing clicks: the diurnal profile the intraday
    #: re-solve judges a part-day window against (calibration/intraday.py).
    fpr_by_hour_band: dict[str, list[float]] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def calibrated(self) -> bool:
        return self.status is Status.CALIBRATED


def _window(frame: pd.DataFrame) -> list[str]:
    if "date" in frame.columns:
        days = sorted(str(d) for d in frame["date"].unique())
    elif "event_time" in frame.columns:
        days = sorted(frame["event_time"].dt.strftime("%Y-%m-%d").unique())
    else:
        return []
    return [days[0], days[-1]]


def _fit_unit(unit: SliceData, s: CalibrationSettings, notes: list[str]) -> SliceFit:
    c = unit.curve
    if unit.robotic == 0:
        lo = 0.0
        notes.append(f"{unit.name}: no heuristic-flagged clicks, so no coverage floor")
    else:
        # The last point invalidates everything (coverage 1), so some point reaches the floor.
        lo = float(c.fpr[np.argmax(c.coverage >= s.min_coverage)])
    if lo > s.max_slice_fpr and s.slice_pooling == "shrink":
        # Every slice decides alone here, and in logged-in slices the heuristic flag is mostly
        # humans (docs/calibration.md): a floor out of reach would make any budget infeasible.
        notes.append(
            f"{unit.name}: coverage {s.min_coverage:.0%} needs FPR {lo:.2%}, above "
            f"max_slice_fpr {s.max_slice_fpr:.2%}: no coverage floor for this slice"
        )
        lo = 0.0
    hi = max(min(s.max_slice_fpr, float(c.fpr[-1])), lo)
    if lo > s.max_slice_fpr:
        notes.append(
            f"{unit.name}: coverage {s.min_coverage:.0%} needs FPR {lo:.2%}, above "
            f"max_slice_fpr {s.max_slice_fpr:.2%}; the floor wins"
        )
    fit = fit_ivr(c, lo, hi, s.max_fit_rmse, s.max_hull_pieces)
    if fit.method is FitMethod.QUADRATIC and fit.quadratic_rmse > s.max_fit_rmse:
        notes.append(
            f"{unit.name}: quadratic fit RMSE {fit.quadratic_rmse:.4f} > max_fit_rmse "
            f"{s.max_fit_rmse}, but the concave hull fits no better (RMSE {fit.hull_rmse:.4f}): "
            "keeping the quadratic; the slice's curve is noisy"
        )
    if fit.method is FitMethod.HULL:
        notes.append(
            f"{unit.name}: quadratic fit RMSE {fit.quadratic_rmse:.4f} > max_fit_rmse "
            f"{s.max_fit_rmse}: using the concave hull ({len(fit.slopes)} pieces, RMSE "
            f"{fit.hull_rmse:.4f})"
        )
    return SliceFit(unit, fit)


def threshold_at(c: Curve, fpr: float) -> tuple[int, float]:
    """The curve point with the most invalidations within ``fpr``, and its score threshold."""
    i = c.at_fpr(fpr + _FPR_TOLERANCE)
    t = float(c.thresholds[i])
    if math.isinf(t):
        # Invalidate nothing: just above the highest score seen.
        t = math.nextafter(float(c.thresholds[1]), math.inf) if len(c.thresholds) > 1 else 1.0
    return i, t


def _points(fits: list[SliceFit], chosen: Floats) -> dict[str, SlicePoint]:
    points = {}
    for sf, f in zip(fits, chosen, strict=True):
        i, t = threshold_at(sf.unit.curve, float(f))
        ivr, fpr, coverage = sf.unit.curve.rates_at(i)
        fit_ivr = float(sf.fit.predict(np.array([f]))[0])
        points[sf.unit.name] = SlicePoint(float(f), t, ivr, fpr, coverage, fit_ivr)
    return points


def overall_curve(frame: pd.DataFrame) -> Curve:
    return curve(
        frame["score"].to_numpy(dtype=np.float64),
        frame["purchased"].to_numpy(dtype=bool),
        frame["robotic"].to_numpy(dtype=bool),
    )


def _comparison(
    frames: tuple[pd.DataFrame, pd.DataFrame],
    overall: Curve,
    slice_thresholds: dict[str, float],
    default: float,
) -> dict[Policy, PolicyResult]:
    def one(policy: Policy, thresholds: dict[str, float]) -> PolicyResult:
        calib, held_out = (measure(frame, thresholds, default) for frame in frames)
        return PolicyResult(policy, thresholds, calib, held_out)

    def global_at(c: Curve, fpr: float) -> dict[str, float]:
        return global_thresholds(threshold_at(c, fpr)[1])

    out = {
        Policy.GLOBAL_KNEE: one(Policy.GLOBAL_KNEE, global_at(overall, overall.fpr[knee(overall)]))
    }
    if slice_thresholds:
        sliced = one(Policy.SLICE_LEVEL, slice_thresholds)
        out[Policy.GLOBAL_SAME_FPR] = one(
            Policy.GLOBAL_SAME_FPR, global_at(overall, sliced.calibration_day.overall.fpr)
        )
        out[Policy.GLOBAL_HELD_OUT_FPR] = one(
            Policy.GLOBAL_HELD_OUT_FPR,
            global_at(overall_curve(frames[1]), sliced.evaluation_day.overall.fpr),
        )
        out[Policy.SLICE_LEVEL] = sliced
    return out


def _histogram(scores: Floats) -> list[float]:
    counts, _ = np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))
    return [float(c) for c in counts / max(len(scores), 1)]


def run(
    calib: pd.DataFrame,
    held_out: pd.DataFrame,
    settings: CalibrationSettings,
    *,
    model_version: int,
    default_threshold: float = 0.5,
    last_good: Mapping[str, float] | None = None,
) -> CalibrationOutcome:
    """Calibrate on ``calib``, compare the policies on the later day ``held_out``.

    Both frames are labelled click frames (docs/datasets.md) with a ``score`` column.
    ``default_threshold`` is what the worker applies to a slice without a threshold;
    ``last_good`` the thresholds served now, kept when no new solution is found.
    """
    unknown = sorted(set(settings.slice_fields) - set(SLICE_FIELDS))
    if unknown:
        raise CalibrationError(
            f"cannot slice by {', '.join(unknown)}; slice fields must come from "
            f"{', '.join(SLICE_FIELDS)} (SLIDR_CALIBRATION__SLICE_FIELDS)"
        )
    check_frame(calib, settings.slice_fields, "calibration")
    check_frame(held_out, settings.slice_fields, "held-out")
    weight = fpr_weight(calib, settings)
    if settings.slice_pooling == "shrink":
        units, notes, _ = build_shrunk_slices(
            calib,
            settings.min_purchases,
            weight,
            settings.fpr_budget,
            settings.max_prior_strength,
        )
    else:
        units, notes = build_slices(calib, settings.min_purchases, weight)
    if settings.fpr_target == "human":
        notes.append(
            "the budget binds the estimated human FPR (stand-ins weighted to all humans, "
            "calibration/human.py), not the purchaser FPR"
        )
    fits = [_fit_unit(u, settings, notes) for u in units]
    overall = overall_curve(calib)
    shares = np.array([sf.unit.purchase_share for sf in fits])
    min_budget = float(shares @ np.array([sf.fit.lo for sf in fits]))
    kept = dict(last_good or {})
    keeping = (
        f"keeping the last good thresholds ({len(kept)} slices)"
        if kept
        else "no thresholds to keep: slices stay on the default threshold"
    )
    points: dict[str, SlicePoint] = {}
    solve_ms = 0.0
    n = evidence(calib, settings)
    solved_at = max(bounded_budget(settings.fpr_budget, n, settings.budget_confidence), min_budget)
    if solved_at < settings.fpr_budget:
        notes.append(
            f"the budget binds the {settings.budget_confidence:.0%} upper bound of the "
            f"{settings.fpr_target} FPR on {n:,.0f} (effective) clicks: solved at "
            f"{solved_at:.2%}"
            + (", the smallest feasible budget" if solved_at == min_budget else "")
        )
    if settings.fpr_budget < min_budget:
        status = Status.INFEASIBLE_BUDGET
        # Rounded up, so that the budget the message names is feasible as written.
        enough = math.ceil(min_budget * 1e6) / 1e6
        message = (
            f"the FPR budget {settings.fpr_budget:.4%} is below {min_budget:.4%}, the smallest "
            f"budget at which every slice reaches {settings.min_coverage:.0%} robotic coverage: "
            f"raise the budget to at least {enough:.4%} or lower min_coverage; {keeping}"
        )
    else:
        problem = allocation_problem(len(fits), settings.max_hull_pieces)
        terms = [SliceTerms(sf.unit.click_share, sf.unit.purchase_share, sf.fit) for sf in fits]
        t0 = time.perf_counter()
        try:
            chosen = problem.solve(terms, solved_at)
        except SolveFailed as exc:
            status, message = Status.SOLVER_FAILED, f"{exc}; {keeping}"
        else:
            points = _points(fits, chosen)
            kept = {name: p.threshold for name, p in points.items()}
            status = Status.CALIBRATED
            margin = solved_at_phrase(settings, solved_at)
            message = (
                f"calibrated {len(points)} slices under an FPR budget of {settings.fpr_budget:.2%}"
                + (f" ({margin})" if margin else "")
            )
        solve_ms = (time.perf_counter() - t0) * 1e3
    if status is not Status.CALIBRATED:
        log.error("calibration of version %d: %s", model_version, message)
    return CalibrationOutcome(
        status=status,
        message=message,
        model_version=model_version,
        settings=settings,
        overall_curve=overall,
        fits=fits,
        points=points,
        thresholds=kept,
        min_feasible_budget=min_budget,
        solved_budget=solved_at,
        notes=notes,
        windows={"calibrate": _window(calib), "evaluate": _window(held_out)},
        solve_ms=solve_ms,
        comparison=_comparison((calib, held_out), overall, kept, default_threshold),
        score_histogram=_histogram(held_out["score"].to_numpy(dtype=np.float64)),
        fpr_estimates={
            "calibration_day": fpr_estimates(calib, kept, default_threshold, settings),
            "evaluation_day": fpr_estimates(held_out, kept, default_threshold, settings),
        },
        fpr_by_hour_band=hour_profile(calib, kept, default_threshold, settings.human_hour_bands),
    )


def hour_profile(
    frame: pd.DataFrame, thresholds: Mapping[str, float], default: float, bands: int
) -> dict[str, list[float]]:
    """Purchaser FPR of ``thresholds`` and purchasing clicks per band of hours of the day
    (empty without an ``hour`` column)."""
    if "hour" not in frame.columns:
        return {}
    invalid = invalidated(frame, thresholds, default)
    bought = frame["purchased"].to_numpy(dtype=bool)
    band = frame["hour"].to_numpy(dtype=np.int64) * bands // 24
    n = np.bincount(band[bought], minlength=bands).astype(np.float64)
    k = np.bincount(band[bought & invalid], minlength=bands).astype(np.float64)
    fpr = np.divide(k, n, out=np.zeros(bands), where=n > 0)
    return {"purchaser": fpr.tolist(), "purchases": n.tolist()}


def evidence(frame: pd.DataFrame, settings: CalibrationSettings) -> float:
    """The sample size behind the FPR the budget binds: the purchasing clicks, or Kish's
    effective size of the human stand-ins' (unsmoothed) weights, as in :func:`fpr_estimates`."""
    if settings.fpr_target == "purchaser":
        return float(frame["purchased"].sum())
    behind = stand_in_weights(
        frame, with_rfm=settings.human_with_rfm, hour_bands=settings.human_hour_bands
    )
    return effective_size(behind[behind > 0])


def solved_at_phrase(settings: CalibrationSettings, solved: float) -> str:
    """Where the thresholds were solved when that is below the budget, else "": one wording
    for the outcome's message and the report's lines."""
    if solved >= settings.fpr_budget:
        return ""
    confidence = settings.budget_confidence
    return f"solved at {solved:.2%}, whose {confidence:.0%} upper bound is the budget"


def bounded_budget(budget: float, n: float, confidence: float) -> float:
    """The largest FPR whose one-sided Wilson upper bound at ``confidence``, observed on ``n``
    clicks, is at most ``budget`` (0 when none is).

    Wilson's bound is the rate the score test would just accept, ``|p - b| = z sqrt(b (1 - b)
    / n)`` with the variance at ``b``, so the answer is ``b - z sqrt(b (1 - b) / n)``.

    >>> round(bounded_budget(0.02, 600, 0.8), 4)
    0.0152
    >>> bounded_budget(0.02, 600, 0.5)  # the point itself
    0.02
    """
    z = z_one_sided(confidence)
    if n <= 0:
        return budget
    return max(budget - z * math.sqrt(budget * (1.0 - budget) / n), 0.0)


def fpr_weight(frame: pd.DataFrame, settings: CalibrationSettings) -> Floats:
    """Each click's weight in the FPR the budget binds (purchasing clicks, or human stand-ins)."""
    if settings.fpr_target == "purchaser":
        out: Floats = frame["purchased"].to_numpy(dtype=np.float64)
        return out
    return human_weights(
        frame, with_rfm=settings.human_with_rfm, hour_bands=settings.human_hour_bands
    )


def fpr_estimates(
    frame: pd.DataFrame,
    thresholds: Mapping[str, float],
    default: float,
    settings: CalibrationSettings,
) -> dict[str, dict[str, Estimate]]:
    """Both FPRs of ``thresholds`` on ``frame``, overall ("all") and per slice, with 95 %
    intervals: the purchaser FPR (Wilson on purchasing clicks) and the estimated human FPR
    (Wilson on the stand-ins' effective size); the human weights come from ``frame`` itself."""
    invalid = invalidated(frame, thresholds, default)
    purchased = frame["purchased"].to_numpy(dtype=np.float64)
    human = human_weights(
        frame, with_rfm=settings.human_with_rfm, hour_bands=settings.human_hour_bands
    )
    behind = stand_in_weights(
        frame, with_rfm=settings.human_with_rfm, hour_bands=settings.human_hour_bands
    )
    out = {}
    groups = {ROOT_SLICE: np.arange(len(frame))} | {
        str(k): v for k, v in frame.groupby("slice", observed=True).indices.items()
    }
    for name, rows in groups.items():
        out[name] = {
            "purchaser": weighted_rate(invalid[rows], purchased[rows], REPORT_CONFIDENCE),
            "human": weighted_rate(
                invalid[rows],
                human[rows],
                REPORT_CONFIDENCE,
                effective_size(behind[rows][behind[rows] > 0]),
            ),
        }
    return out
