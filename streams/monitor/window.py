"""Sliding windows over decisions: per-slice tallies kept in time buckets, so a window of any
length costs a few counters per slice, however many decisions it holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from slidr.events import DegradedReason
from slidr.serving_figures import SCORE_BINS

#: Buckets per window; the window slides by one bucket (window_s / BUCKETS) at a time.
BUCKETS = 12
#: The fail-open reason code of a click Triton did not score.
MODEL_ERROR = DegradedReason.TRITON_UNAVAILABLE.code


@dataclass(frozen=True)
class Observation:
    """The fields of one decision the monitor reads."""

    version: int
    slice: str
    invalid: bool
    score: float
    degraded: bool
    model_error: bool
    #: When it was decided, epoch seconds.
    at: float
    #: The click's id (the intraday re-solve joins purchases with it; streams/monitor/budget.py).
    click_id: str = field(default="", compare=False)
    #: When the click happened, epoch seconds: the intraday re-solve's clock (a worker catching
    #: up a backlog decides hours of clicks in minutes).
    event_at: float | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, payload: bytes, at: float) -> Observation | None:
        """None for a message that is not a decision (the monitor skips it)."""
        try:
            d: Any = orjson.loads(payload)
            if d.get("ivt_category") == "givt":
                return None  # decided by a list, not the model: no part of its figures
            return cls(
                version=int(d["model_version"]),
                slice=str(d["slice"]),
                invalid=d["verdict"] == "invalid",
                score=float(d["score"]),
                degraded=bool(d["degraded"]),
                model_error=MODEL_ERROR in d["reason_codes"],
                at=at,
                click_id=str(d.get("click_id", "")),
                event_at=epoch_seconds(d.get("event_time")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def epoch_seconds(stamp: object) -> float | None:
    """An event's ISO 8601 time as epoch seconds; None when absent or not a time."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


@dataclass
class Tally:
    decisions: int = 0
    #: Decisions with a model score (not degraded): the IVR and the histogram count these.
    scored: int = 0
    invalid: int = 0
    #: Degraded because Triton did not score the click.
    model_errors: int = 0
    score_sum: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)

    def add(self, o: Observation) -> None:
        self.decisions += 1
        if o.degraded:
            self.model_errors += o.model_error
            return
        self.scored += 1
        self.invalid += o.invalid
        self.score_sum += o.score
        self.histogram[min(max(int(o.score * SCORE_BINS), 0), SCORE_BINS - 1)] += 1

    def merge(self, other: Tally) -> None:
        self.decisions += other.decisions
        self.scored += other.scored
        self.invalid += other.invalid
        self.model_errors += other.model_errors
        self.score_sum += other.score_sum
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]

    @property
    def ivr(self) -> float:
        return self.invalid / self.scored if self.scored else float("nan")

    @property
    def degraded_share(self) -> float:
        """Share of decisions made fail-open, whatever the dependency that failed."""
        return (self.decisions - self.scored) / self.decisions if self.decisions else 0.0

    @property
    def model_error_share(self) -> float:
        return self.model_errors / self.decisions if self.decisions else 0.0

    @property
    def score_mean(self) -> float:
        return self.score_sum / self.scored if self.scored else float("nan")

    @property
    def score_shares(self) -> list[float]:
        return [n / self.scored for n in self.histogram] if self.scored else []


@dataclass(frozen=True)
class WindowFigures:
    total: Tally
    slices: dict[str, Tally]


class SlidingWindow:
    """The decisions of one model version over the last ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.bucket_s = window_s / BUCKETS
        self.buckets: dict[int, dict[str, Tally]] = {}
        #: When this version's first decision was made (the onset of what it does).
        self.first_at: float | None = None

    def add(self, o: Observation) -> None:
        index = int(o.at // self.bucket_s)
        if index not in self.buckets:
            self._forget_before(index - BUCKETS + 1)  # bounded even if never judged
            self.buckets[index] = {}
        self.buckets[index].setdefault(o.slice, Tally()).add(o)
        self.first_at = o.at if self.first_at is None else min(self.first_at, o.at)

    def _forget_before(self, oldest: int) -> None:
        for index in [i for i in self.buckets if i < oldest]:
            del self.buckets[index]

    def figures(self, now: float) -> WindowFigures:
        """Forget buckets that slid out of the window, and sum the rest."""
        self._forget_before(int(now // self.bucket_s) - BUCKETS + 1)
        total = Tally()
        slices: dict[str, Tally] = {}
        for bucket in self.buckets.values():
            for name, tally in bucket.items():
                slices.setdefault(name, Tally()).merge(tally)
                total.merge(tally)
        return WindowFigures(total=total, slices=slices)
