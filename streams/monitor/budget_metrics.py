"""The Prometheus series of the monitor's intraday re-solve (streams/monitor/budget.py),
declared on the monitor's registry whether or not the re-solve is on (no calibration import)."""

from __future__ import annotations

from streams.metrics import Metrics


class BudgetMetrics:
    """The re-solve's series, declared on the monitor's metrics (one registry)."""

    def __init__(self, m: Metrics) -> None:
        gauge, counter = m.gauge, m.counter
        self.fpr = gauge(
            "slidr_monitor_budget_fpr",
            "Stand-in FPR of the served thresholds over the intraday window",
            "slice",
        )
        self.fpr_low = gauge("slidr_monitor_budget_fpr_low", "Its interval's low end", "slice")
        self.fpr_high = gauge("slidr_monitor_budget_fpr_high", "Its interval's high end", "slice")
        self.expected = gauge(
            "slidr_monitor_budget_expected_fpr", "Stand-in FPR the record expects", "slice"
        )
        self.stand_ins = gauge(
            "slidr_monitor_budget_stand_ins", "Purchases joined with a decision in the window",
            "slice",
        )  # fmt: skip
        self.out_of_band = gauge(
            "slidr_monitor_budget_out_of_band",
            "1 while the realised FPR is outside its band with confidence",
        )
        self.joined = counter("slidr_monitor_purchases_joined", "Purchases joined with a decision")
        self.unjoined = counter(
            "slidr_monitor_purchases_unjoined", "Purchases whose decision never came"
        )
        self.resolves = counter(
            "slidr_monitor_resolves", "Intraday re-solves (written, unchanged, failed)", "outcome"
        )
        self.clipped = counter(
            "slidr_monitor_threshold_moves_clipped", "Threshold moves clipped by the guardrail"
        )
        self.threshold = gauge(
            "slidr_monitor_threshold", "Threshold served after the last intraday re-solve",
            "slice",
        )  # fmt: skip
        self.threshold_move = gauge(
            "slidr_monitor_threshold_move", "Last intraday move of the slice's threshold", "slice"
        )
        self.solve_seconds = gauge(
            "slidr_monitor_resolve_solve_seconds", "Solver time of the last intraday re-solve"
        )
