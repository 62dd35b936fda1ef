"""The worker's Prometheus metrics, on a registry of its own (several workers per test)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        #: Clicks the model judged (and fail-open ones); GIVT clicks are counted apart below.
        self.clicks = Counter("slidr_clicks", "Clicks decided", ["slice", "verdict"], registry=r)
        self.givt_clicks = Counter(
            "slidr_givt_clicks", "Clicks decided invalid by a GIVT list, before the model",
            ["category"], registry=r,
        )  # fmt: skip
        self.givt_seconds = Histogram(
            "slidr_givt_seconds", "GIVT filter per batch", registry=r, buckets=_LATENCY_BUCKETS
        )
        self.dead_letters = Counter(
            "slidr_dead_letters", "Events sent to the dead-letter topic", ["reason"], registry=r
        )
        self.degraded = Counter(
            "slidr_degraded_decisions", "Fail-open decisions", ["why"], registry=r
        )
        # A click decided again (redelivered) that got its first decision back from the cache;
        # and batches whose decisions the cache did not take (a later duplicate may differ).
        self.repeated_decisions = Counter(
            "slidr_repeated_decisions", "Clicks given the decision they got before", registry=r
        )
        self.decision_cache_errors = Counter(
            "slidr_decision_cache_errors", "Batches the decision cache did not take", registry=r
        )
        self.invalidation_rate = Gauge(
            "slidr_invalidation_rate", "Share of invalid decisions in the last batch", ["slice"],
            registry=r,
        )  # fmt: skip
        self.feature_seconds = Histogram(
            "slidr_feature_seconds", "Redis feature round trip per batch", registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "slidr_inference_seconds", "Triton inference per batch", registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.scoring_seconds = Histogram(
            "slidr_scoring_path_seconds", "Batch consumed to decisions produced", registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.click_to_decision_seconds = Histogram(
            "slidr_click_to_decision_seconds", "Kafka timestamp to decision", registry=r,
            buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "slidr_consumer_lag", "Messages behind the end of the clicks topic", ["partition"],
            registry=r,
        )  # fmt: skip
        # The version this worker scores with (0 while Triton no longer has it: every batch
        # fails open) beside the one the serving pointer names: an alert fires when they differ.
        self.model_version = Gauge(
            "slidr_model_version", "Model version this worker scores with", registry=r
        )
        self.pointer_version = Gauge(
            "slidr_model_pointer_version", "Model version the serving pointer (or pin) names",
            registry=r,
        )  # fmt: skip
        self.reload_failures = Counter(
            "slidr_model_reload_failures", "Failed switches to the pointer's model version",
            registry=r,
        )  # fmt: skip
        # Redis holds every counter: watch its memory before maxmemory refuses writes.
        self.redis_used_bytes = Gauge(
            "slidr_redis_used_bytes", "Redis used_memory per node", ["node"], registry=r
        )
        self.redis_max_bytes = Gauge(
            "slidr_redis_max_bytes", "Redis maxmemory per node (0: none)", ["node"], registry=r
        )
        self.redis_keys = Gauge("slidr_redis_keys", "Keys per Redis node", ["node"], registry=r)


def observe_many(histogram: Histogram, values: npt.NDArray[np.float64]) -> None:
    """``histogram.observe`` for each value, in one update per bucket instead of per value.

    prometheus_client has no bulk observe; this adds to the same bucket counters and sum that
    ``observe`` does (``_upper_bounds``, ``_buckets``, ``_sum``), which a test checks.
    """
    if len(values) == 0:
        return
    bounds = np.asarray(histogram._upper_bounds)
    # observe() puts a value in the first bucket whose bound is >= it.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, n in zip(histogram._buckets, counts.tolist(), strict=False):
        if n:
            bucket.inc(n)
    histogram._sum.inc(float(values.sum()))
