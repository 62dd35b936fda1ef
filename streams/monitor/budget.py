"""The monitor's intraday re-solve: purchases joined with live decisions, the realised FPR per
slice, and a new calibration record when it leaves its band (the logic: calibration/intraday.py).

calibration/ is offline code (cvxpy, pandas, no torch); the monitor may import it because the
worker never imports the monitor (tests/test_intraday.py checks both).

It keeps event time: windows, the join's horizon and the spacing of re-solves run on the
clicks' and purchases' own times, up to the newest click decided (the watermark). A worker
catching up a backlog decides hours of clicks in minutes, and those hours are judged, and
re-solved, as the hours they were; the diurnal factor reads their real hours of the day.
"""

from __future__ import annotations

import logging
import math

import orjson

from calibration.intraday import (
    BudgetWindow,
    Evidence,
    Joined,
    PurchaseJoin,
    Resolution,
    diurnal_factor,
    expected_fpr,
    intraday_record,
    judge,
    out_of_band,
    resolve,
)
from calibration.problem import SolveFailed
from calibration.record import calibration_path, replace_record
from slidr.model_record import read_optional
from slidr.settings import Settings
from streams.monitor.budget_metrics import BudgetMetrics
from streams.monitor.window import epoch_seconds

log = logging.getLogger(__name__)


class BudgetKeeper:
    def __init__(self, settings: Settings, model: str, metrics: BudgetMetrics) -> None:
        self.settings = settings
        self.limits = settings.intraday
        self.model = model
        self.metrics = metrics
        self.join = PurchaseJoin(self.limits.join_horizon_s)
        self.windows: dict[int, BudgetWindow] = {}
        #: Event time: the newest click decided, epoch seconds.
        self.watermark = -math.inf
        self._resolved: dict[int, float] = {}
        #: The next evaluation: on the monitor's clock (a quiet stream is still judged) or once
        #: the watermark has moved ``evaluate_every_s`` on (a backlog is judged as it is read).
        self._next = 0.0
        self._next_event = math.inf
        self._expired = 0

    def _window(self, version: int) -> BudgetWindow:
        window = self.windows.get(version)
        if window is None:
            window = self.windows[version] = BudgetWindow(self.limits.window_s)
        return window

    def decision(
        self, click_id: str, version: int, slice_name: str, score: float, at: float
    ) -> None:
        """A scored model decision (not GIVT, not degraded) of a click made at ``at``."""
        if self.watermark == -math.inf:
            self._next_event = at + self.limits.evaluate_every_s
        self.watermark = max(self.watermark, at)
        self._window(version).add_decision(slice_name, score, at)
        joined = self.join.decision(click_id, Joined(version, slice_name, score, at), at)
        if joined is not None:
            self._stand_in(joined)

    def purchase(self, payload: bytes) -> None:
        """A purchase: it waits for its click's decision until the watermark is a join horizon
        past the purchase's own time (the watermark's time if it has none)."""
        try:
            event = orjson.loads(payload)
            click_id = event.get("click_id")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(click_id, str) and click_id:
            at = epoch_seconds(event.get("event_time"))
            joined = self.join.purchase(click_id, self.watermark if at is None else at)
            if joined is not None:
                self._stand_in(joined)

    def _stand_in(self, j: Joined) -> None:
        self.metrics.joined.inc()
        self._window(j.version).add_stand_in(j.slice, j.score, j.at)

    def due(self, wall: float) -> bool:
        """Whether to evaluate, on the monitor's clock."""
        return wall >= self._next

    def behind(self) -> bool:
        """Whether the watermark has moved a step past the last evaluation."""
        return self.watermark >= self._next_event

    def postpone(self, wall: float) -> None:
        """The next evaluation one step from now, on both clocks."""
        self._next = wall + self.limits.evaluate_every_s
        self._next_event = self.watermark + self.limits.evaluate_every_s

    def evaluate(self, serving: int, wall: float) -> Resolution | None:
        """Judge the serving version's window up to the watermark; re-solve and write a record
        when it left its band (at most once per ``min_interval_s`` of event time). ``wall``:
        the monitor's clock. Returns the re-solve written, if any."""
        self.postpone(wall)
        now = self.watermark
        if now == -math.inf:
            return None  # no decision yet
        self.join.expire(now)
        if self.join.expired_purchases > self._expired:
            self.metrics.unjoined.inc(self.join.expired_purchases - self._expired)
            self._expired = self.join.expired_purchases
        for version in [v for v in self.windows if v != serving]:
            del self.windows[version]
        window = self.windows.get(serving)
        if window is None:
            return None
        data = window.data(now)
        repository = self.settings.triton.model_repository
        path = calibration_path(repository, self.model, serving)
        record = read_optional(path)
        if not record.get("thresholds"):
            return None  # uncalibrated: nothing to re-solve
        default = self.settings.worker.global_threshold
        thresholds = {str(k): float(v) for k, v in record["thresholds"].items()}
        factor = diurnal_factor(record, data)
        expected = expected_fpr(record, data.slices(), factor)
        evidence = judge(data, thresholds, default, expected, self.limits)
        self._export(evidence)
        leaving = out_of_band(evidence, self.limits)
        self.metrics.out_of_band.set(bool(leaving))
        if not leaving or now - self._resolved.get(serving, -math.inf) < self.limits.min_interval_s:
            return None
        self._resolved[serving] = now
        try:
            r = resolve(
                data, record, serving, default, evidence, [str(e) for e in leaving],
                self.settings.calibration, self.limits, (now - self.limits.window_s, now),
                factor,
            )  # fmt: skip
        except SolveFailed as exc:
            self.metrics.resolves.labels("failed").inc()
            log.error(
                "intraday re-solve of version %d failed, keeping record %s: %s (%s)",
                serving, record.get("id"), exc, "; ".join(str(e) for e in leaving),
            )  # fmt: skip
            return None
        if all(abs(m.after - m.before) < 1e-9 for m in r.moves.values()):
            self.metrics.resolves.labels("unchanged").inc()
            log.info("intraday re-solve left every threshold as it was: %s", r.summary())
            return None
        if read_optional(path).get("id") != record.get("id"):
            self.metrics.resolves.labels("unchanged").inc()
            log.warning("a new record for version %d arrived while re-solving: kept it", serving)
            return None
        written = intraday_record(record, r)
        replace_record(path, written)
        self._report(r, str(written["id"]))
        return r

    def _export(self, evidence: dict[str, Evidence]) -> None:
        m = self.metrics
        for scope, e in evidence.items():
            m.fpr.labels(scope).set(e.fpr)
            m.fpr_low.labels(scope).set(e.low)
            m.fpr_high.labels(scope).set(e.high)
            m.expected.labels(scope).set(e.expected)
            m.stand_ins.labels(scope).set(e.stand_ins)

    def _report(self, r: Resolution, record_id: str) -> None:
        m = self.metrics
        m.resolves.labels("written").inc()
        m.solve_seconds.set(r.solve_ms / 1e3)
        for name, move in r.moves.items():
            m.threshold.labels(name).set(move.after)
            m.threshold_move.labels(name).set(move.after - move.before)
            if move.clipped:
                m.clipped.inc()
        log.warning(
            "intraday re-solve of model %s %s; evidence: %s; record %s replaces %s",
            self.model, r.summary(), "; ".join(str(e) for e in r.evidence.values()),
            record_id, r.based_on,
        )  # fmt: skip
