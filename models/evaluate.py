"""Models side by side on one held-out day: the article's metrics at equal FPR.

For every model and every FPR point, the threshold comes from the model's overall IVR-FPR
curve (the most invalidations whose FPR on purchasing clicks stays within the point). At that
one threshold, IVR, FPR and robotic coverage - and on simulated data the ground-truth bot
recall, precision and human false-positive rate - are measured overall, per slice and per hour
of day. A served threshold (one global, or one per slice) is measured the same way. Beside them:
ROC-AUC of the weak label and of ``purchased`` (a LOW score should pick out purchasing clicks).

The metric definitions are ``slidr.metrics``; this module only slices the day and collects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import roc_auc_score

from slidr.errors import SlidrError
from slidr.metrics import Bools, Curve, Floats, Rates, TruthRates, curve, rates, truth_rates

DEFAULT_FPR_POINTS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)
#: Columns of the labelled click frame (docs/datasets.md) the evaluation reads; ``is_bot`` is
#: read when present.
REQUIRED_COLUMNS: tuple[str, ...] = ("slice", "hour", "purchased", "robotic", "label")
HOURS = 24
#: Curves are kept thinned: the corner at each of these FPRs (dense where operating points
#: live) plus an even spread over all clicks, so a day of millions of clicks stays small.
_CURVE_FPR_GRID: Floats = np.r_[np.linspace(0.0, 0.1, 201), np.linspace(0.1, 1.0, 91)[1:]]
_CURVE_SPREAD = 101

#: A served threshold: one for every click, or one per slice name.
Threshold = float | Mapping[str, float]


class EvaluationError(SlidrError):
    """The frame, scores or thresholds cannot be evaluated; the message says what to fix."""


def _json(value: float | int | None) -> float | int | None:
    """NaN (no clicks to measure on) and +inf (invalidate nothing) become JSON null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _floats(values: Floats | Sequence[float]) -> list[float | int | None]:
    return [_json(float(v)) for v in values]


@dataclass(frozen=True)
class Figures:
    """The operating figures of one threshold on one set of clicks."""

    rates: Rates
    #: Ground truth figures; None unless the frame has ``is_bot``.
    truth: TruthRates | None

    def to_dict(self) -> dict[str, float | int | list[float | int | None] | None]:
        merged: dict[str, float | int] = {**self.rates.as_dict()}
        if self.truth is not None:
            merged.update(self.truth.as_dict())
        out: dict[str, float | int | list[float | int | None] | None] = {
            key: _json(value) for key, value in merged.items()
        }
        # 95 % Wilson intervals: the rates are unweighted shares of the day's clicks.
        out.update({key: _floats(v) for key, v in self.rates.intervals().items()})
        return out


@dataclass(frozen=True)
class OperatingPoint:
    """One model at one threshold (or one per slice): overall, per slice and per hour."""

    threshold: float | dict[str, float]
    #: The FPR point the threshold was chosen for; None for a served threshold.
    target_fpr: float | None
    overall: Figures
    slices: dict[str, Figures]
    #: IVR in each hour of day 0-23; NaN for an hour without clicks.
    hourly_ivr: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        threshold = (
            {name: _json(t) for name, t in self.threshold.items()}
            if isinstance(self.threshold, dict)
            else _json(self.threshold)
        )
        return {
            "target_fpr": self.target_fpr,
            "threshold": threshold,
            "overall": self.overall.to_dict(),
            "slices": {name: f.to_dict() for name, f in self.slices.items()},
            "hourly_ivr": _floats(self.hourly_ivr),
        }


def _curve_dict(c: Curve) -> dict[str, list[float | int | None]]:
    return {
        "threshold": _floats(c.thresholds),
        "ivr": _floats(c.ivr),
        "fpr": _floats(c.fpr),
        "coverage": _floats(c.coverage),
    }


def _point(points: tuple[OperatingPoint, ...], fpr: float, what: str) -> OperatingPoint:
    for point in points:
        if point.target_fpr is not None and math.isclose(point.target_fpr, fpr):
            return point
    if not points:
        raise EvaluationError(f"no {what} points: the day has no ground truth (is_bot)")
    evaluated = ", ".join(f"{p.target_fpr:g}" for p in points)
    raise EvaluationError(f"{what} point {fpr:g} was not evaluated; pick one of {evaluated}")


@dataclass(frozen=True)
class ModelEvaluation:
    #: ROC-AUC with which a low score picks out purchasing clicks: AUC(purchased, -score).
    auc_purchased: float
    #: ROC-AUC of the weak label (1 = non-human) against the score.
    auc_label: float
    #: ROC-AUC of the ground truth against the score; None without ``is_bot``.
    auc_bot: float | None
    #: One operating point per FPR point, in the order of ``Evaluation.fpr_points``.
    at_fpr: tuple[OperatingPoint, ...]
    #: The same points with the threshold set on the ground truth: true human FPR at most each
    #: point (bot recall at equal true human FPR); empty without ``is_bot``.
    at_human_fpr: tuple[OperatingPoint, ...]
    #: The model at its served threshold(s), when they were given.
    served: OperatingPoint | None
    #: Thinned curves (see ``_CURVE_FPR_GRID``): overall, and per slice, where FPR is NaN in a
    #: slice without purchasing clicks and coverage NaN in one without heuristic-flagged clicks.
    curve: Curve
    slice_curves: dict[str, Curve]

    def at(self, fpr: float) -> OperatingPoint:
        """The operating point chosen for the FPR point ``fpr`` (weak-label FPR)."""
        return _point(self.at_fpr, fpr, "FPR")

    def at_human(self, fpr: float) -> OperatingPoint:
        """The operating point whose true human FPR is at most ``fpr`` (needs ``is_bot``)."""
        return _point(self.at_human_fpr, fpr, "true human FPR")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "auc_purchased": _json(self.auc_purchased),
            "auc_label": _json(self.auc_label),
        }
        if self.auc_bot is not None:
            out["auc_bot"] = _json(self.auc_bot)
        out["at_fpr"] = [p.to_dict() for p in self.at_fpr]
        if self.at_human_fpr:
            out["at_human_fpr"] = [p.to_dict() for p in self.at_human_fpr]
        if self.served is not None:
            out["served"] = self.served.to_dict()
        out["curves"] = {"all": _curve_dict(self.curve)} | {
            name: _curve_dict(c) for name, c in self.slice_curves.items()
        }
        return out


@dataclass(frozen=True)
class Evaluation:
    fpr_points: tuple[float, ...]
    slices: tuple[str, ...]
    clicks: int
    purchasing: int
    robotic: int
    #: Ground-truth bots on the day; None when the frame has no ``is_bot`` (real data).
    bots: int | None
    #: The k of the robotic-coverage heuristic the frame's ``robotic`` column was built with.
    coverage_k: int | None
    models: dict[str, ModelEvaluation]

    @property
    def has_truth(self) -> bool:
        return self.bots is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fpr_points": list(self.fpr_points),
            "slices": list(self.slices),
            "clicks": self.clicks,
            "purchasing": self.purchasing,
            "robotic": self.robotic,
            "coverage_k": self.coverage_k,
        }
        if self.bots is not None:
            out["bots"] = self.bots
        out["models"] = {name: m.to_dict() for name, m in self.models.items()}
        return out


@dataclass(frozen=True)
class _Day:
    """The frame's columns as arrays, and a mask per slice, computed once for every model."""

    purchased: Bools
    robotic: Bools
    label: Bools
    is_bot: Bools | None
    hour: npt.NDArray[np.int64]
    slices: dict[str, Bools]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Day:
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise EvaluationError(
                f"the click frame lacks column(s) {', '.join(missing)}: build it with "
                "models.dataset.load_labelled (docs/datasets.md)"
            )
        truth_columns = ("is_bot",) if "is_bot" in frame.columns else ()
        for column in (*REQUIRED_COLUMNS, *truth_columns):
            if frame[column].isna().any():
                raise EvaluationError(f"column {column!r} of the click frame has missing values")
        if len(frame) == 0:
            raise EvaluationError("the click frame is empty: evaluate on a day with clicks")
        hour = frame["hour"].to_numpy(dtype=np.int64)
        if hour.min() < 0 or hour.max() >= HOURS:
            raise EvaluationError("column 'hour' must hold hours of day 0-23")
        purchased = frame["purchased"].to_numpy(dtype=bool)
        if not purchased.any():
            raise EvaluationError(
                "no purchasing clicks in the frame, so FPR is undefined: evaluate on a day "
                "with purchases (or check the purchase join)"
            )
        codes, names = pd.factorize(frame["slice"], sort=True)
        return cls(
            purchased=purchased,
            robotic=frame["robotic"].to_numpy(dtype=bool),
            label=frame["label"].to_numpy(dtype=np.int64) == 1,
            is_bot=frame["is_bot"].to_numpy(dtype=bool) if truth_columns else None,
            hour=hour,
            slices={str(name): codes == i for i, name in enumerate(names)},
        )

    def figures(self, invalid: Bools, among: Bools | None = None) -> Figures:
        rows: Bools | slice = slice(None) if among is None else among
        return Figures(
            rates=rates(invalid[rows], self.purchased[rows], self.robotic[rows]),
            truth=None if self.is_bot is None else truth_rates(invalid[rows], self.is_bot[rows]),
        )

    def hourly_ivr(self, invalid: Bools) -> tuple[float, ...]:
        clicks = np.bincount(self.hour, minlength=HOURS)
        flagged = np.bincount(self.hour, weights=invalid.astype(np.float64), minlength=HOURS)
        with np.errstate(invalid="ignore", divide="ignore"):
            return tuple(float(v) for v in flagged / clicks)

    def at(self, score: Floats, threshold: Threshold, target_fpr: float | None) -> OperatingPoint:
        kept: float | dict[str, float]
        if isinstance(threshold, Mapping):
            unset = sorted(set(self.slices) - set(threshold))
            if unset:
                raise EvaluationError(
                    f"no threshold for slice(s) {', '.join(unset)}: give one per slice of the "
                    "day, or one global threshold"
                )
            kept = {name: float(threshold[name]) for name in self.slices}
            cut = np.empty_like(score)
            for name, mask in self.slices.items():
                cut[mask] = kept[name]
        else:
            kept = float(threshold)
            cut = np.full_like(score, kept)
        invalid = score >= cut
        return OperatingPoint(
            threshold=kept,
            target_fpr=target_fpr,
            overall=self.figures(invalid),
            slices={name: self.figures(invalid, mask) for name, mask in self.slices.items()},
            hourly_ivr=self.hourly_ivr(invalid),
        )


def _auc(positive: Bools, score: Floats) -> float:
    if positive.all() or not positive.any():
        return float("nan")  # one class only: no ranking to measure
    return float(roc_auc_score(positive, score))


def _thin(c: Curve) -> Curve:
    corners = np.searchsorted(c.fpr, _CURVE_FPR_GRID, side="right") - 1
    spread = np.linspace(0, len(c.thresholds) - 1, _CURVE_SPREAD).round().astype(np.int64)
    keep = np.unique(np.r_[corners, spread])
    return Curve(c.thresholds[keep], c.ivr[keep], c.fpr[keep], c.coverage[keep])


def _slice_curve(score: Floats, purchased: Bools, robotic: Bools) -> Curve:
    # Thinned before the NaNs go in: the corner search needs the (all-zero) FPR column sorted.
    c = _thin(curve(score, purchased, robotic))
    nan = np.full_like(c.fpr, np.nan)
    return replace(
        c,
        fpr=c.fpr if purchased.any() else nan,
        coverage=c.coverage if robotic.any() else nan,
    )


def _evaluate_model(
    day: _Day, score: Floats, fpr_points: tuple[float, ...], served: Threshold | None
) -> ModelEvaluation:
    overall = curve(score, day.purchased, day.robotic)
    humans = (
        None
        if day.is_bot is None
        else curve(score, day.purchased, day.robotic, fpr_weight=(~day.is_bot).astype(np.float64))
    )
    return ModelEvaluation(
        auc_purchased=_auc(day.purchased, -score),
        auc_label=_auc(day.label, score),
        auc_bot=None if day.is_bot is None else _auc(day.is_bot, score),
        at_fpr=tuple(
            day.at(score, float(overall.thresholds[overall.at_fpr(p)]), p) for p in fpr_points
        ),
        at_human_fpr=()
        if humans is None
        else tuple(
            day.at(score, float(humans.thresholds[humans.at_fpr(p)]), p) for p in fpr_points
        ),
        served=None if served is None else day.at(score, served, None),
        curve=_thin(overall),
        slice_curves={
            name: _slice_curve(score[mask], day.purchased[mask], day.robotic[mask])
            for name, mask in day.slices.items()
        },
    )


def _checked_score(name: str, values: npt.ArrayLike, rows: int) -> Floats:
    score = np.asarray(values, dtype=np.float64)
    if score.shape != (rows,):
        raise EvaluationError(
            f"scores of {name!r} have shape {score.shape}; need one score per click ({rows},)"
        )
    if not np.isfinite(score).all():
        raise EvaluationError(f"scores of {name!r} contain NaN or infinite values")
    return score


def _checked_points(fpr_points: Sequence[float]) -> tuple[float, ...]:
    points = tuple(sorted({float(p) for p in fpr_points}))
    if not points or not all(0.0 < p < 1.0 for p in points):
        raise EvaluationError("FPR points must be one or more numbers in (0, 1), e.g. 0.01")
    return points


def evaluate(
    frame: pd.DataFrame,
    scores: Mapping[str, npt.ArrayLike],
    *,
    fpr_points: Sequence[float] = DEFAULT_FPR_POINTS,
    thresholds: Mapping[str, Threshold] | None = None,
    coverage_k: int | None = None,
) -> Evaluation:
    """Every model of ``scores`` (name -> P(robotic) per row of ``frame``) on the same day.

    ``thresholds`` optionally names a model's served threshold (a float, or one per slice);
    ``coverage_k`` is only recorded: the ``robotic`` column already carries the heuristic.
    """
    if not scores:
        raise EvaluationError("no model scores to evaluate: pass at least one name -> scores")
    served = dict(thresholds or {})
    unknown = sorted(set(served) - set(scores))
    if unknown:
        raise EvaluationError(f"thresholds given for model(s) without scores: {unknown}")
    points = _checked_points(fpr_points)
    day = _Day.of(frame)
    models = {
        name: _evaluate_model(day, _checked_score(name, s, len(frame)), points, served.get(name))
        for name, s in scores.items()
    }
    return Evaluation(
        fpr_points=points,
        slices=tuple(day.slices),
        clicks=len(frame),
        purchasing=int(day.purchased.sum()),
        robotic=int(day.robotic.sum()),
        bots=None if day.is_bot is None else int(day.is_bot.sum()),
        coverage_k=coverage_k,
        models=models,
    )
