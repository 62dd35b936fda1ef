"""The online monitor: watches the decisions topic and rolls a deviating model back.

A consumer group of its own reads every decision; each model version gets a sliding window
(:mod:`streams.monitor.window`). Every ``evaluate_every_s`` the serving version's window is
judged (:mod:`streams.monitor.rules`) against the figures expected of that version, or, when
none were recorded, against the figures observed for the previous (stable) version. On a sharp
deviation it logs an ERROR alert, counts it in Prometheus and rolls back to the stable version
through the registry; workers follow the pointer within ``worker.reload_every_s``.

Every other version that still gets decisions (a worker that did not follow the pointer) is
watched too: its fail-open shares are exported per version, and an ERROR alert flags one that
Triton fails to score; it is not rolled back (it does not serve), its workers must follow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer
from prometheus_client import CollectorRegistry

from slidr.errors import SlidrError
from slidr.kafka_config import client_config
from slidr.registry import Registry
from slidr.serving_figures import ServingFigures
from slidr.settings import Settings
from streams.metrics import Metrics
from streams.monitor import rules
from streams.monitor.budget_metrics import BudgetMetrics
from streams.monitor.rules import Deviation
from streams.monitor.window import Observation, SlidingWindow, WindowFigures

if TYPE_CHECKING:
    from streams.monitor.budget import BudgetKeeper

log = logging.getLogger(__name__)


class MonitorMetrics(Metrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        counter, gauge = self.counter, self.gauge
        self.decisions = counter("slidr_monitor_decisions", "Decisions read", "version")
        self.serving_version = gauge("slidr_monitor_serving_version", "Version the pointer names")
        self.invalidation_rate = gauge(
            "slidr_monitor_invalidation_rate", "Serving version's IVR over the window", "slice"
        )
        self.expected_invalidation_rate = gauge(
            "slidr_monitor_expected_invalidation_rate",
            "IVR the serving version is judged against",
            "slice",
        )
        self.model_error_share = gauge(
            "slidr_monitor_model_error_share", "Share of decisions Triton failed to score"
        )
        self.score_mean = gauge("slidr_monitor_score_mean", "Mean score over the window")
        self.deviations = counter("slidr_monitor_deviations", "Sharp deviations found", "rule")
        self.alert = gauge("slidr_monitor_alert", "1 while the serving version deviates")
        self.rollbacks = counter("slidr_monitor_rollbacks", "Automatic rollbacks")
        # Every version with decisions in the window, the serving one included.
        self.version_decisions = gauge(
            "slidr_monitor_version_decisions", "Decisions of the version over the window", "version"
        )
        self.version_degraded_share = gauge(
            "slidr_monitor_version_degraded_share",
            "Share of the version's decisions made fail-open over the window (Redis or Triton)",
            "version",
        )
        self.version_model_error_share = gauge(
            "slidr_monitor_version_model_error_share",
            "Share of the version's decisions Triton failed to score over the window",
            "version",
        )
        self.version_alert = gauge(
            "slidr_monitor_version_alert",
            "1 while Triton fails to score most of the version's decisions",
            "version",
        )
        self.rollback_seconds = gauge(
            "slidr_monitor_rollback_seconds",
            "Last automatic rollback: seconds from the bad version's first decision to the "
            "pointer switch",
        )
        #: The intraday re-solve's (streams/monitor/budget.py), exported even when it is off.
        self.budget = BudgetMetrics(self)


class Monitor:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.limits = settings.monitor
        self.registry = registry
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.windows: dict[int, SlidingWindow] = {}
        #: When each version last alerted: a version still serving re-alerts once a window.
        self._alerted: dict[int, float] = {}
        self._recorded: dict[int, float] = {}
        #: When each version other than the serving one was last flagged (once a window).
        self._flagged: dict[int, float] = {}
        self._unload_at: float | None = None
        self.budget: BudgetKeeper | None = None
        if settings.intraday.enabled:
            # Imported only when on: it brings calibration/ (cvxpy, pandas) into the monitor.
            from streams.monitor.budget import BudgetKeeper

            self.budget = BudgetKeeper(settings, registry.name, self.metrics.budget)

    def observe(self, o: Observation) -> None:
        window = self.windows.get(o.version)
        if window is None:
            window = self.windows[o.version] = SlidingWindow(self.limits.window_s)
        window.add(o)
        self.metrics.decisions.labels(str(o.version)).inc()
        if self.budget is not None and not o.degraded and o.click_id:
            at = o.at if o.event_at is None else o.event_at
            self.budget.decision(o.click_id, o.version, o.slice, o.score, at)
            if self.budget.behind():  # a backlog's hours are judged as they are read
                self._keep_budget(self.clock())

    def baseline(self, version: int) -> ServingFigures | None:
        """Expected figures of ``version``, else those observed for the stable version."""
        expected = self.registry.expected(version)
        if expected is not None:
            return expected
        stable = self.registry.stable()
        if stable is None or stable.observed is None:
            return None
        # A different model is expected to score differently: only its IVR carries over.
        return ServingFigures(ivr=stable.observed.ivr, slices=stable.observed.slices)

    def evaluate(self) -> list[Deviation]:
        """Judge the serving version's window; roll back on a sharp deviation."""
        now = self.clock()
        self._unload_if_due(now)
        serving = self.registry.serving().version
        self.metrics.serving_version.set(serving)
        self.watch_versions(serving, now)
        if self.budget is not None and self.budget.due(now):
            self._keep_budget(now, serving)
        window = self.windows.get(serving)
        if window is None:
            return []
        figures = window.figures(now)
        baseline = self.baseline(serving)
        self._export(figures, baseline)
        found = rules.deviations(figures, baseline, self.limits)
        if not found:
            if figures.total.scored >= self.limits.min_decisions:
                self.metrics.alert.set(0)
                if now - self._recorded.get(serving, 0.0) >= self.limits.window_s:
                    self.registry.record_observed(serving, rules.observed(figures, self.limits))
                    self._recorded[serving] = now
            return []
        if now - self._alerted.get(serving, -float("inf")) >= self.limits.window_s:
            self._alerted[serving] = now
            self._alert(serving, found, window, now)
        return found

    def _keep_budget(self, now: float, serving: int | None = None) -> None:
        assert self.budget is not None
        if serving is None:
            try:
                serving = self.registry.serving().version
            except SlidrError:
                self.budget.postpone(now)  # evaluate() reports the registry once a second
                return
        try:
            self.budget.evaluate(serving, now)
        except (SlidrError, OSError, ValueError) as exc:  # keep watching the version
            log.exception("intraday re-solve of version %d failed: %s", serving, exc)

    def watch_versions(self, serving: int, now: float) -> dict[int, Deviation]:
        """Fail-open shares of every version with decisions in the window; flags (never rolls
        back) a version other than ``serving`` that Triton fails to score. Returns the versions
        over the limit; forgets versions without decisions for a whole window."""
        m = self.metrics
        over: dict[int, Deviation] = {}
        for version, window in sorted(self.windows.items()):
            total = window.figures(now).total
            label = str(version)
            if total.decisions == 0 and version != serving:
                del self.windows[version]
                for gauge in (m.version_decisions, m.version_degraded_share,
                              m.version_model_error_share, m.version_alert):  # fmt: skip
                    gauge.remove(label)  # a no-op for a label never exported
                continue
            minimum = self.limits.min_version_decisions
            if version == serving:
                minimum = max(minimum, self.limits.min_decisions)
            found = rules.model_errors(total, self.limits, minimum)
            m.version_decisions.labels(label).set(total.decisions)
            m.version_degraded_share.labels(label).set(total.degraded_share)
            m.version_model_error_share.labels(label).set(total.model_error_share)
            m.version_alert.labels(label).set(found is not None)
            if found is None:
                continue
            over[version] = found
            if version == serving:
                continue  # judged with every rule, and rolled back, by evaluate()
            if now - self._flagged.get(version, -float("inf")) >= self.limits.window_s:
                self._flagged[version] = now
                log.error(
                    "ALERT: model %s version %d does not serve (version %d does) but still "
                    "decides clicks, and %s: the workers on it fail open; they should follow "
                    "the serving pointer (compare slidr_model_version with "
                    "slidr_model_pointer_version, read their logs)",
                    self.registry.name, version, serving, found,
                )  # fmt: skip
        return over

    def _alert(
        self, version: int, found: list[Deviation], window: SlidingWindow, now: float
    ) -> None:
        self.metrics.alert.set(1)
        for d in found:
            self.metrics.deviations.labels(d.rule).inc()
        what = "; ".join(str(d) for d in found)
        log.error("ALERT: model %s version %d deviates: %s", self.registry.name, version, what)
        if not self.limits.auto_rollback:
            return
        try:
            _, restored = self.registry.rollback(why=f"monitor: {what}", expect=version)
        except SlidrError as exc:
            log.error("ALERT: automatic rollback of version %d failed: %s", version, exc)
            return
        took = self.clock() - (window.first_at or now)
        self.metrics.rollbacks.inc()
        self.metrics.rollback_seconds.set(took)
        self._unload_at = now + self.settings.registry.unload_after_s
        log.error(
            "ALERT: rolled model %s back from version %d to %d, %.1f s after version %d's "
            "first decision", self.registry.name, version, restored.version, took, version,
        )  # fmt: skip

    def _export(self, figures: WindowFigures, baseline: ServingFigures | None) -> None:
        m = self.metrics
        m.invalidation_rate.labels("all").set(figures.total.ivr)
        for name, tally in figures.slices.items():
            m.invalidation_rate.labels(name).set(tally.ivr)
        if baseline is not None:
            m.expected_invalidation_rate.labels("all").set(baseline.ivr)
            for name, ivr in baseline.slices.items():
                m.expected_invalidation_rate.labels(name).set(ivr)
        m.model_error_share.set(figures.total.model_error_share)
        m.score_mean.set(figures.total.score_mean)

    def _unload_if_due(self, now: float) -> None:
        """Unload a rolled-back version once workers had time to follow the pointer."""
        if self._unload_at is None or now < self._unload_at:
            return
        try:
            kept = self.registry.sync_triton()
        except SlidrError as exc:
            log.warning("Triton did not unload the rolled-back version yet: %s", exc)
            return
        self._unload_at = None
        log.info("Triton keeps versions %s of model %s", sorted(kept), self.registry.name)

    def run(self, stop: threading.Event) -> None:
        """Consume decisions until ``stop`` is set."""
        consumer = Consumer(
            client_config(
                self.settings.kafka,
                {
                    "group.id": self.limits.consumer_group,
                    "auto.offset.reset": "earliest" if self.limits.from_beginning else "latest",
                    "enable.auto.commit": True,
                },
            )
        )
        topics = self.settings.topics
        purchases = topics.purchases if self.budget is not None else None
        consumer.subscribe([topics.decisions] + ([purchases] if purchases else []))
        log.info(
            "monitoring %s on %s (window %.0f s, at least %d decisions)",
            self.registry.name, self.settings.topics.decisions, self.limits.window_s,
            self.limits.min_decisions,
        )  # fmt: skip
        next_evaluation = 0.0
        try:
            while not stop.is_set():
                for msg in consumer.consume(1000, timeout=0.2):
                    value = msg.value()
                    if msg.error() is not None or value is None:
                        continue
                    if purchases is not None and msg.topic() == purchases:
                        assert self.budget is not None
                        self.budget.purchase(value)
                        continue
                    kind, stamp_ms = msg.timestamp()
                    at = self.clock() if kind == TIMESTAMP_NOT_AVAILABLE else stamp_ms / 1000
                    if (o := Observation.from_json(value, at)) is not None:
                        self.observe(o)
                if self.clock() >= next_evaluation:
                    next_evaluation = self.clock() + self.limits.evaluate_every_s
                    try:
                        self.evaluate()
                    except SlidrError as exc:  # e.g. a registry being repaired: keep watching
                        log.error("cannot judge the serving version: %s", exc)
        finally:
            consumer.close()
