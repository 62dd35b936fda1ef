"""The worker's Prometheus metrics, on a registry of its own (several workers per test)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Prometheus metrics on a registry of their own (several sets per test process), each
    declared in one call: the base of the worker's, the monitor's and the replay agent's."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(name, doc, labels, registry=self.registry)

    def latency(self, name: str, doc: str) -> Histogram:
        """Seconds a step takes, in buckets from 0.5 ms to 5 s."""
        return Histogram(name, doc, registry=self.registry, buckets=_LATENCY_BUCKETS)


class WorkerMetrics(Metrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        counter, gauge, latency = self.counter, self.gauge, self.latency
        #: Clicks the model judged (and fail-open ones); GIVT clicks are counted apart below.
        self.clicks = counter("slidr_clicks", "Clicks decided", "slice", "verdict")
        self.givt_clicks = counter(
            "slidr_givt_clicks", "Clicks decided invalid by a GIVT list, before the model",
            "category",
        )  # fmt: skip
        self.givt_seconds = latency("slidr_givt_seconds", "GIVT filter per batch")
        self.dead_letters = counter(
            "slidr_dead_letters", "Events sent to the dead-letter topic", "reason"
        )
        self.degraded = counter("slidr_degraded_decisions", "Fail-open decisions", "why")
        # A click decided again (redelivered) that got its first decision back from the cache;
        # and batches whose decisions the cache did not take (a later duplicate may differ).
        self.repeated_decisions = counter(
            "slidr_repeated_decisions", "Clicks given the decision they got before"
        )
        self.decision_cache_errors = counter(
            "slidr_decision_cache_errors", "Batches the decision cache did not take"
        )
        self.invalidation_rate = gauge(
            "slidr_invalidation_rate", "Share of invalid decisions in the last batch", "slice"
        )
        self.feature_seconds = latency(
            "slidr_feature_seconds", "Redis feature round trip per batch"
        )
        self.inference_seconds = latency("slidr_inference_seconds", "Triton inference per batch")
        self.scoring_seconds = latency(
            "slidr_scoring_path_seconds", "Batch consumed to decisions produced"
        )
        self.click_to_decision_seconds = latency(
            "slidr_click_to_decision_seconds", "Kafka timestamp to decision"
        )
        self.consumer_lag = gauge(
            "slidr_consumer_lag", "Messages behind the end of the clicks topic", "partition"
        )
        # The version this worker scores with (0 while Triton no longer has it: every batch
        # fails open) beside the one the serving pointer names: an alert fires when they differ.
        self.model_version = gauge("slidr_model_version", "Model version this worker scores with")
        self.pointer_version = gauge(
            "slidr_model_pointer_version", "Model version the serving pointer (or pin) names"
        )
        self.reload_failures = counter(
            "slidr_model_reload_failures", "Failed switches to the pointer's model version"
        )
        # Redis holds every counter: watch its memory before maxmemory refuses writes.
        self.redis_used_bytes = gauge(
            "slidr_redis_used_bytes", "Redis used_memory per node", "node"
        )
        self.redis_max_bytes = gauge(
            "slidr_redis_max_bytes", "Redis maxmemory per node (0: none)", "node"
        )
        self.redis_keys = gauge("slidr_redis_keys", "Keys per Redis node", "node")


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
