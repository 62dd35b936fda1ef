"""Budgets that hold tomorrow: the realised FPR of live decisions, and an intraday re-solve.

Purchases keep arriving after the day's calibration. Joined with the live decisions by
``click_id`` (:class:`PurchaseJoin`), each is a stand-in whose score under the serving model is
known; :class:`BudgetWindow` keeps, per slice and over a sliding window, those stand-ins' scores
and a fine histogram of every scored decision's score (state grows with slices and score bins,
not clicks, except for the stand-ins, a few per cent of clicks). :func:`judge` measures the FPR
the thresholds served now have on the window's stand-ins, overall and per slice, with an
interval, against the FPR the record expects; when one leaves its band with confidence,
:func:`resolve` rebuilds the per-slice curves from the window (FPR curves shrunk toward the
parent, calibration/shrink.py), re-solves the compiled DPP problem (calibration/problem.py)
under the record's budget expressed on the stand-ins, and bounds each threshold's move
(:func:`clip_moves`). :func:`intraday_record` is the new record, written by
:func:`calibration.record.replace_record` like any other, which the worker follows without
restart.

No Kafka, no files: the monitor (streams/monitor/budget.py) moves events and records.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from calibration.calibrate import threshold_at
from calibration.fit import fit_ivr
from calibration.problem import SliceTerms, SolveFailed, allocation_problem
from calibration.shrink import fit_shrinkage
from slidr.metrics import Curve, Floats, wilson, z_two_sided
from slidr.settings import CalibrationSettings, IntradaySettings
from slidr.slices import ROOT_SLICE, lookup_threshold

#: Decisions per score bin.
Counts = npt.NDArray[np.int64]
#: Score bins of the decisions' histograms: thresholds are re-solved to 1/1000 of a score.
SCORE_BINS = 1000
#: Time buckets per window; it slides by one bucket at a time.
BUCKETS = 12
#: The record's section an intraday re-solve adds.
INTRADAY_KEY = "intraday"


def score_bin(score: float) -> int:
    return min(max(int(score * SCORE_BINS), 0), SCORE_BINS - 1)


@dataclass(frozen=True)
class Joined:
    """A stand-in: a decided click that led to a purchase."""

    version: int
    slice: str
    score: float
    #: When the click was decided, epoch seconds (the stand-in is windowed by it).
    at: float


class PurchaseJoin:
    """Decisions waiting for a purchase, and purchases waiting for their decision, each for
    ``horizon_s``; a click joins at most once (a second purchase of it is not a second human).

    Memory: one small entry per decision of the last ``horizon_s`` (click rate x horizon)."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self._decisions: OrderedDict[str, tuple[float, Joined]] = OrderedDict()
        self._purchases: OrderedDict[str, float] = OrderedDict()
        self._joined: OrderedDict[str, float] = OrderedDict()
        self.expired_purchases = 0

    def decision(self, click_id: str, joined: Joined, now: float) -> Joined | None:
        if click_id in self._joined:
            return None
        if self._purchases.pop(click_id, None) is not None:
            self._joined[click_id] = now
            return joined
        self._decisions[click_id] = (now, joined)
        return None

    def purchase(self, click_id: str, now: float) -> Joined | None:
        if click_id in self._joined:
            return None
        found = self._decisions.pop(click_id, None)
        if found is None:
            self._purchases[click_id] = now
            return None
        self._joined[click_id] = now
        return found[1]

    def expire(self, now: float) -> None:
        oldest = now - self.horizon_s
        while self._decisions and next(iter(self._decisions.values()))[0] < oldest:
            self._decisions.popitem(last=False)
        while self._joined and next(iter(self._joined.values())) < oldest:
            self._joined.popitem(last=False)
        while self._purchases and next(iter(self._purchases.values())) < oldest:
            self._purchases.popitem(last=False)
            self.expired_purchases += 1

    def __len__(self) -> int:
        return len(self._decisions) + len(self._purchases)


@dataclass
class _Bucket:
    clicks: dict[str, Counts] = field(default_factory=dict)
    #: (slice, score, hour of the day, UTC)
    stand_ins: list[tuple[str, float, int]] = field(default_factory=list)


@dataclass(frozen=True)
class WindowData:
    """One version's window: per slice, decisions per score bin and the stand-ins' scores."""

    clicks: dict[str, Counts]
    stand_ins: dict[str, Floats]
    #: Stand-ins per hour of the day (UTC), all slices together.
    stand_in_hours: Counts = field(default_factory=lambda: np.zeros(24, dtype=np.int64))

    @property
    def total_stand_ins(self) -> int:
        return sum(len(s) for s in self.stand_ins.values())

    @property
    def total_clicks(self) -> int:
        return int(sum(int(c.sum()) for c in self.clicks.values()))

    def slices(self) -> list[str]:
        return sorted(set(self.clicks) | set(self.stand_ins))


class BudgetWindow:
    """Scored decisions and stand-ins of one model version over the last ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.bucket_s = window_s / BUCKETS
        self.buckets: dict[int, _Bucket] = {}

    def _bucket(self, at: float) -> _Bucket | None:
        index = int(at // self.bucket_s)
        if index not in self.buckets:
            newest = max(self.buckets, default=index)
            if index <= newest - BUCKETS:
                return None  # already out of the window
            self._forget_before(max(index, newest) - BUCKETS + 1)
            self.buckets[index] = _Bucket()
        return self.buckets[index]

    def add_decision(self, slice_name: str, score: float, at: float) -> None:
        bucket = self._bucket(at)
        if bucket is not None:
            counts = bucket.clicks.get(slice_name)
            if counts is None:
                counts = bucket.clicks[slice_name] = np.zeros(SCORE_BINS, dtype=np.int64)
            counts[score_bin(score)] += 1

    def add_stand_in(self, slice_name: str, score: float, at: float) -> None:
        bucket = self._bucket(at)
        if bucket is not None:
            bucket.stand_ins.append((slice_name, score, int(at % 86400 // 3600)))

    def _forget_before(self, oldest: int) -> None:
        for index in [i for i in self.buckets if i < oldest]:
            del self.buckets[index]

    def data(self, now: float) -> WindowData:
        self._forget_before(int(now // self.bucket_s) - BUCKETS + 1)
        clicks: dict[str, Counts] = {}
        scores: dict[str, list[float]] = {}
        hours = np.zeros(24, dtype=np.int64)
        for bucket in self.buckets.values():
            for name, counts in bucket.clicks.items():
                if name in clicks:
                    clicks[name] = clicks[name] + counts
                else:
                    clicks[name] = counts.copy()
            for name, score, hour in bucket.stand_ins:
                scores.setdefault(name, []).append(score)
                hours[hour] += 1
        stand_ins = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
        return WindowData(clicks, stand_ins, hours)


# --- what the record expects ---------------------------------------------------------------


def _figure(record: Mapping[str, Any], *path: str) -> float | None:
    node: Any = record
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and math.isfinite(node) else None


def stand_in_target(record: Mapping[str, Any]) -> float:
    """The record's budget on the stand-ins (purchasing clicks).

    A budget on the estimated human FPR is carried over by the calibration day's ratio of the
    two FPRs (calibration/human.py): within a day the stand-ins' bias is taken as constant,
    what drifts is the scores."""
    budget = float(record.get("fpr_budget", 0.02))
    target = str(record.get("fpr_target", "purchaser"))
    purchaser = _figure(record, "fpr", "calibration_day", "purchaser", "value")
    bound = _figure(record, "fpr", "calibration_day", target, "value")
    if target == "purchaser" or not purchaser or not bound:
        return budget
    return budget * purchaser / bound


def expected_fpr(
    record: Mapping[str, Any], slices: list[str], factor: float = 1.0
) -> dict[str, float]:
    """The stand-in FPR the record expects of a day, overall ("all") and of each slice it can
    say, times ``factor`` (:func:`diurnal_factor`: the window's hours against the day's).

    After an intraday re-solve: the solver's targets. Else the calibration day's purchaser FPR
    of each slice (of its unit, for a pooled slice), scaled like the budget."""
    if factor != 1.0:
        return {k: v * factor for k, v in expected_fpr(record, slices).items()}
    intraday = record.get(INTRADAY_KEY)
    if isinstance(intraday, Mapping) and isinstance(intraday.get("expected_fpr"), Mapping):
        return {str(k): float(v) for k, v in intraday["expected_fpr"].items()}
    target = stand_in_target(record)
    out = {ROOT_SLICE: target}
    overall = _figure(record, "fpr", "calibration_day", "purchaser", "value")
    scale = target / overall if overall else 1.0
    found = record.get("slices")
    units: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    unit_of = {
        str(member): str(unit)
        for unit, entry in units.items()
        for member in (entry.get("members") or [unit] if isinstance(entry, Mapping) else [])
    }
    for name in slices:
        unit = unit_of.get(name)
        if unit is None:
            continue
        figure = _figure(units, unit, "fpr", "purchaser", "value")
        if figure is None:
            figure = _figure(units, unit, "predicted", "fpr")
        if figure is not None:
            out[name] = figure * scale
    return out


#: Pseudo-purchases pulling each hour band's FPR of the profile toward the day's (a band rests
#: on ~100 purchasing clicks at 30,000 clicks a day, a few of them invalidated).
PROFILE_PRIOR = 50.0


def diurnal_factor(record: Mapping[str, Any], data: WindowData) -> float:
    """How much higher than the day's the calibration day's FPR was over the hours the window
    holds (its stand-ins' mix of hours): 1 without a profile in the record.

    Humans are invalidated far more at night (the model scores night clicks higher): a window
    of part of the day is judged, and re-solved, against the calibration day's same hours,
    not against the day's average."""
    profile = record.get("fpr_by_hour_band")
    if not isinstance(profile, Mapping) or not profile.get("purchaser"):
        return 1.0
    fpr = np.asarray(profile["purchaser"], dtype=np.float64)
    n = np.asarray(profile["purchases"], dtype=np.float64)
    bands = len(fpr)
    if n.sum() <= 0 or data.stand_in_hours.sum() == 0:
        return 1.0
    day = float((fpr * n).sum() / n.sum())
    if day <= 0:
        return 1.0
    smoothed = (fpr * n + day * PROFILE_PRIOR) / (n + PROFILE_PRIOR)
    hours = np.arange(24) * bands // 24
    in_window = np.bincount(hours, weights=data.stand_in_hours, minlength=bands)
    return float((smoothed * in_window).sum() / in_window.sum() / day)


# --- judging the window --------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """The realised stand-in FPR of the served thresholds on one scope of the window."""

    scope: str
    stand_ins: int
    invalidated: int
    fpr: float
    low: float
    high: float
    #: The FPR the record expects; NaN when it says none for this scope.
    expected: float
    band: float

    @property
    def verdict(self) -> str:
        """Above or below the band with confidence, else "inside" (or "unknown")."""
        if math.isnan(self.expected) or self.stand_ins == 0:
            return "unknown"
        if self.low > self.expected * (1 + self.band):
            return "above"
        if self.high < self.expected * (1 - self.band):
            return "below"
        return "inside"

    def as_dict(self) -> dict[str, Any]:
        return {
            "stand_ins": self.stand_ins,
            "invalidated": self.invalidated,
            "fpr": self.fpr,
            "interval": [self.low, self.high],
            "expected": None if math.isnan(self.expected) else self.expected,
            "band": [self.expected * (1 - self.band), self.expected * (1 + self.band)]
            if not math.isnan(self.expected)
            else None,
            "verdict": self.verdict,
        }

    def __str__(self) -> str:
        return (
            f"{self.scope}: FPR {self.fpr:.2%} [{self.low:.2%}, {self.high:.2%}] on "
            f"{self.stand_ins} stand-ins, expected {self.expected:.2%} +-{self.band:.0%} "
            f"({self.verdict})"
        )


def judge(
    data: WindowData,
    thresholds: Mapping[str, float],
    default: float,
    expected: Mapping[str, float],
    limits: IntradaySettings,
) -> dict[str, Evidence]:
    """Evidence overall ("all") and per slice of the window's stand-ins at ``thresholds``."""
    z = z_two_sided(limits.confidence)
    counts: dict[str, tuple[int, int]] = {}
    for name, scores in data.stand_ins.items():
        t = lookup_threshold(thresholds, name, default)
        counts[name] = (len(scores), int((scores >= t).sum()))
    counts[ROOT_SLICE] = (
        sum(n for n, _ in counts.values()),
        sum(k for _, k in counts.values()),
    )
    out = {}
    for scope, (n, k) in counts.items():
        fpr = k / n if n else float("nan")
        low, high = wilson(fpr, n, z) if n else (float("nan"), float("nan"))
        out[scope] = Evidence(
            scope, n, k, fpr, low, high, expected.get(scope, float("nan")), limits.band
        )
    return out


def out_of_band(evidence: Mapping[str, Evidence], limits: IntradaySettings) -> list[Evidence]:
    """Scopes whose realised FPR left the band with confidence (below it only with
    ``loosen``), on enough stand-ins (overall: ``min_stand_ins``; a slice:
    ``min_slice_stand_ins``)."""
    verdicts = ("above", "below") if limits.loosen else ("above",)
    return [
        e
        for e in evidence.values()
        if e.verdict in verdicts
        and e.stand_ins
        >= (limits.min_stand_ins if e.scope == ROOT_SLICE else limits.min_slice_stand_ins)
    ]


# --- the re-solve ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    before: float
    solved: float
    after: float

    @property
    def clipped(self) -> bool:
        return self.after != self.solved


def clip_moves(
    before: Mapping[str, float], solved: Mapping[str, float], max_step: float
) -> dict[str, Move]:
    """Each slice's threshold moved toward the solver's, at most ``max_step`` (score units).

    Clipped, not refused: a drift large enough to need a long move is exactly when the budget
    is broken, and refusing would leave it broken; a bounded step each re-solve moves there
    over several windows, each with its own evidence, and one noisy window moves little.

    >>> clip_moves({"app": 0.80}, {"app": 0.95}, 0.05)["app"]
    Move(before=0.8, solved=0.95, after=0.8500000000000001)
    """
    out = {}
    for name, target in solved.items():
        was = before[name]
        after = min(max(target, was - max_step), was + max_step)
        out[name] = Move(was, target, after)
    return out


def hold_loosening(moves: Mapping[str, Move]) -> dict[str, Move]:
    """The moves with no threshold lowered: without ``loosen`` a re-solve runs because an FPR
    is above its band, and the solver's re-allocation across slices must not spend that on
    loosening another slice (a part-day window under-represents the rest of the day).

    >>> hold_loosening({"app": Move(0.80, 0.70, 0.75), "web": Move(0.6, 0.7, 0.65)})["app"]
    Move(before=0.8, solved=0.7, after=0.8)
    """
    return {n: Move(m.before, m.solved, max(m.after, m.before)) for n, m in moves.items()}


def _curve(counts: Counts, fpr_at: Floats) -> Curve:
    """The slice's sweep at every bin edge, highest first (bin b: scores in [b, b+1)/BINS)."""
    edges = np.arange(SCORE_BINS - 1, -1, -1, dtype=np.float64) / SCORE_BINS
    invalid = np.cumsum(counts[::-1]).astype(np.float64)
    n = max(float(invalid[-1]), 1.0)
    thresholds = np.r_[np.inf, edges]
    fpr = np.maximum.accumulate(np.r_[0.0, fpr_at])
    return Curve(
        thresholds=thresholds,
        ivr=np.r_[0.0, invalid / n],
        fpr=fpr,
        coverage=np.zeros(len(thresholds)),
    )


@dataclass(frozen=True)
class Resolution:
    """One intraday re-solve: the evidence, the solver's thresholds and the moves served."""

    version: int
    based_on: str
    evidence: dict[str, Evidence]
    triggered_by: list[str]
    target: float
    targets: dict[str, float]
    moves: dict[str, Move]
    thresholds: dict[str, float]
    #: Window IVR per slice ("all" too) at the thresholds before and after.
    ivr_before: dict[str, float]
    ivr_after: dict[str, float]
    #: Stand-in FPR of the window at the thresholds served after (clipped).
    fpr_after: float
    solve_ms: float
    window: tuple[float, float]
    #: The window's hours against the day's (:func:`diurnal_factor`).
    factor: float = 1.0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def summary(self) -> str:
        moves = ", ".join(
            f"{s} {m.before:.3f}->{m.after:.3f}"
            + (f" (solver {m.solved:.3f}, clipped)" if m.clipped else "")
            for s, m in sorted(self.moves.items())
        )
        until = datetime.fromtimestamp(self.window[1], UTC)
        return (
            f"version {self.version}, clicks until {until:%Y-%m-%d %H:%M}Z: "
            f"{'; '.join(self.triggered_by)}; re-solved under "
            f"{self.target:.2%} stand-in FPR in {self.solve_ms:.1f} ms; thresholds {moves}; "
            f"window FPR at them {self.fpr_after:.2%}"
        )


def _ivr(data: WindowData, thresholds: Mapping[str, float], default: float) -> dict[str, float]:
    out, total, invalid = {}, 0, 0
    for name, counts in data.clicks.items():
        t = lookup_threshold(thresholds, name, default)
        # A bin edge threshold splits bins exactly; another one is rounded to its bin.
        k = int(counts[score_bin(t) + (t > score_bin(t) / SCORE_BINS + 1e-12) :].sum())
        n = int(counts.sum())
        out[name] = k / n if n else float("nan")
        total, invalid = total + n, invalid + k
    out[ROOT_SLICE] = invalid / total if total else float("nan")
    return out


def resolve(
    data: WindowData,
    record: Mapping[str, Any],
    version: int,
    default: float,
    evidence: dict[str, Evidence],
    triggered_by: list[str],
    calibration: CalibrationSettings,
    limits: IntradaySettings,
    window: tuple[float, float],
    factor: float = 1.0,
) -> Resolution:
    """Re-solve the record's problem on the window, under the record's budget on the
    stand-ins times ``factor`` (:func:`diurnal_factor`); raises SolveFailed without a
    solution. The targets kept for the next windows are the day's (divided by ``factor``)."""
    names = [n for n in data.slices() if n in data.clicks]
    if not names or data.total_stand_ins == 0:
        raise SolveFailed("no decisions or no stand-ins in the window")
    target = stand_in_target(record) * factor
    served = {str(k): float(v) for k, v in record.get("thresholds", {}).items()}
    # Stand-ins with weight 1; a slice without any still gets a node (weight 0): its FPR curve
    # is its parent's.
    slices = [n for n in names for _ in data.stand_ins.get(n, [])] + names
    scores = [float(s) for n in names for s in data.stand_ins.get(n, [])] + [0.0] * len(names)
    weight = np.r_[np.ones(len(slices) - len(names)), np.zeros(len(names))]
    frame = pd.DataFrame({"slice": slices, "score": scores})
    shrinkage = fit_shrinkage(frame, weight, target, calibration.max_prior_strength)
    total_clicks = data.total_clicks
    total_stand_ins = data.total_stand_ins
    curves, terms = [], []
    for name in names:
        edges = np.arange(SCORE_BINS - 1, -1, -1, dtype=np.float64) / SCORE_BINS
        c = _curve(data.clicks[name], shrinkage.fpr(name, edges))
        hi = max(min(calibration.max_slice_fpr, float(c.fpr[-1])), 0.0)
        fit = fit_ivr(c, 0.0, hi, calibration.max_fit_rmse, calibration.max_hull_pieces)
        # Smoothed: a slice without stand-ins in the window still counts toward the budget.
        share = (len(data.stand_ins.get(name, ())) + 1) / (total_stand_ins + len(names))
        curves.append(c)
        terms.append(SliceTerms(int(data.clicks[name].sum()) / total_clicks, share, fit))
    problem = allocation_problem(len(terms), calibration.max_hull_pieces)
    t0 = time.perf_counter()
    chosen = problem.solve(terms, target)
    solve_ms = (time.perf_counter() - t0) * 1e3
    solved = {
        n: threshold_at(c, float(f))[1] for n, c, f in zip(names, curves, chosen, strict=True)
    }
    before = {n: lookup_threshold(served, n, default) for n in names}
    moves = clip_moves(before, solved, limits.max_threshold_step)
    if not limits.loosen:
        moves = hold_loosening(moves)
    thresholds = served | {n: m.after for n, m in moves.items()}
    after_counts = [
        int((data.stand_ins.get(n, np.empty(0)) >= moves[n].after).sum()) for n in names
    ]
    return Resolution(
        version=version,
        based_on=str(record.get("id", "")),
        evidence=evidence,
        triggered_by=triggered_by,
        target=target,
        targets={ROOT_SLICE: target / factor}
        | {n: float(f) / factor for n, f in zip(names, chosen, strict=True)},
        moves=moves,
        thresholds=thresholds,
        ivr_before=_ivr(data, before, default),
        ivr_after=_ivr(data, thresholds, default),
        fpr_after=sum(after_counts) / total_stand_ins,
        solve_ms=solve_ms,
        window=window,
        factor=factor,
    )


def intraday_record(record: Mapping[str, Any], r: Resolution) -> dict[str, Any]:
    """The record to serve after ``r``: the same, with the new thresholds, the monitor's IVR
    baseline shifted by the change the window predicts, and an ``intraday`` section (the
    evidence, the moves, the targets the next window is judged against)."""
    out: dict[str, Any] = json.loads(json.dumps(record))
    digest = hashlib.sha256(json.dumps(r.thresholds, sort_keys=True).encode()).hexdigest()[:8]
    out["id"] = f"v{r.version}-{r.at:%Y%m%dT%H%M%SZ}-intraday-{digest}"
    out["thresholds"] = r.thresholds
    out["created_at"] = r.at.isoformat()
    for name, entry in (out.get("slices") or {}).items():
        if name in r.moves and isinstance(entry, dict):
            entry["threshold"] = r.moves[name].after
    expected = out.get("expected")
    if isinstance(expected, dict):
        for scope, ivr in r.ivr_after.items():
            delta = ivr - r.ivr_before.get(scope, ivr)
            if scope == ROOT_SLICE and isinstance(expected.get("ivr"), int | float):
                expected["ivr"] = min(max(expected["ivr"] + delta, 0.0), 1.0)
            elif isinstance(expected.get("slices"), dict) and scope in expected["slices"]:
                expected["slices"][scope] = min(max(expected["slices"][scope] + delta, 0.0), 1.0)
    out[INTRADAY_KEY] = {
        "based_on": r.based_on,
        "resolved_at": r.at.isoformat(),
        "window": [datetime.fromtimestamp(t, UTC).isoformat() for t in r.window],
        "triggered_by": r.triggered_by,
        # The window's budget on the stand-ins: the day's times the diurnal factor.
        "stand_in_budget": r.target,
        "diurnal_factor": r.factor,
        "expected_fpr": r.targets,
        "evidence": {scope: e.as_dict() for scope, e in sorted(r.evidence.items())},
        "moves": {
            s: {"before": m.before, "solved": m.solved, "after": m.after, "clipped": m.clipped}
            for s, m in sorted(r.moves.items())
        },
        "ivr_before": r.ivr_before,
        "ivr_after": r.ivr_after,
        "window_fpr_after": r.fpr_after,
        "solve_ms": r.solve_ms,
        "calibrated_record": (record.get(INTRADAY_KEY) or {}).get("calibrated_record")
        or record.get("id"),
        # What the daily cycle calibrated: its guardrails compare a successor with both.
        "calibrated_thresholds": calibrated_thresholds(record) or record.get("thresholds"),
    }
    return out


def judged_until(record: Mapping[str, Any]) -> datetime | None:
    """The newest click an intraday re-solve judged (its window's end); None for a daily
    record."""
    window = (record.get(INTRADAY_KEY) or {}).get("window")
    if not isinstance(window, list) or len(window) != 2:
        return None
    try:
        end = datetime.fromisoformat(str(window[1]))
    except ValueError:
        return None
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


def calibrated_thresholds(record: Mapping[str, Any]) -> dict[str, float] | None:
    """The thresholds the daily cycle calibrated, when ``record`` is an intraday re-solve's
    (None for a daily record, and for a re-solve's written before they were kept)."""
    kept = (record.get(INTRADAY_KEY) or {}).get("calibrated_thresholds")
    return {str(k): float(v) for k, v in kept.items()} if isinstance(kept, dict) else None
