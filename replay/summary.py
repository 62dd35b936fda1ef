"""What a replay reports: progress while it runs, a summary at the end (also sent as JSON on
the progress topic by the replay agent)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from replay.features import Step
    from replay.plan import ReplayPlan


class SliceCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    slice: str
    clicks: int
    invalid: int
    #: Of these clicks, how many the original decision had marked degraded (fail-open).
    degraded_before: int

    @property
    def ivr(self) -> float:
        return self.invalid / self.clicks if self.clicks else 0.0


class DiffRow(BaseModel):
    """Original decisions vs the replay on the same clicks (dry run)."""

    model_config = ConfigDict(frozen=True)

    slice: str
    clicks: int
    to_invalid: int
    to_valid: int
    degraded_before: int
    purchasing: int
    ivr_before: float
    ivr_after: float
    #: NaN (null in JSON) when the slice has no purchasing click.
    fpr_before: float | None
    fpr_after: float | None


class ReplaySummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    model_name: str
    model_version: int
    features: str
    dry_run: bool
    ranges: list[str]
    resumed: bool
    #: Clicks of the range decided in this pass (published unless dry run).
    decided: int
    #: Decisions published by the run, over all its passes.
    published: int
    #: Messages of the range that are not valid clicks (the live worker dead-lettered them).
    unreadable: int
    #: Clicks without a logged feature vector (degraded by Redis, or no decision found):
    #: replay them with recompute.
    missing_features: int
    #: Clicks read only to rebuild the counters (warm-up and other partitions).
    context_clicks: int
    elapsed_s: float
    clicks_per_s: float
    slices: list[SliceCounts]
    diff: list[DiffRow] | None = None
    notes: list[str] = Field(default_factory=list)


class ReplayState(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    DONE = "done"
    REFUSED = "refused"
    FAILED = "failed"


class ReplayProgress(BaseModel):
    """One message on the progress topic (key: the request's key), and the CLI's bar."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = None
    run_id: str | None = None
    state: ReplayState = ReplayState.RUNNING
    done: int = 0
    total: int = 0
    #: Clicks read so far only to rebuild the counters (recompute).
    context: int = 0
    clicks_per_s: float = 0.0
    eta_s: float | None = None
    summary: ReplaySummary | None = None
    error: str | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class SummaryBuilder:
    """Counts as the runner goes."""

    def __init__(self, plan: ReplayPlan) -> None:
        self.plan = plan
        self.started = time.monotonic()
        self.total = plan.to_publish
        self.done = 0
        self.decided = 0
        self.unreadable = 0
        self.missing = 0
        self.context = 0
        self.clicks: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.degraded: Counter[str] = Counter()

    def add(self, step: Step, invalid: npt.NDArray[np.bool_]) -> None:
        for name, bad, before in zip(
            step.clicks.slices, invalid.tolist(), step.originals, strict=True
        ):
            self.clicks[name] += 1
            self.invalid[name] += bad
            self.degraded[name] += before is not None and before.degraded
        self.decided += len(step.clicks)
        self.unreadable += step.unreadable
        self.missing += step.missing
        self.context += step.context
        self.done += len(step.clicks) + step.unreadable + step.missing

    def _rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def progress(self) -> ReplayProgress:
        rate = self._rate()
        left = max(self.total - self.done, 0)
        return ReplayProgress(
            run_id=self.plan.run_id,
            done=self.done,
            total=self.total,
            context=self.context,
            clicks_per_s=rate,
            eta_s=left / rate if rate > 0 else None,
        )

    def finish(self, published: int, diff: list[DiffRow] | None) -> ReplaySummary:
        plan = self.plan
        return ReplaySummary(
            run_id=plan.run_id,
            model_name=plan.record.name,
            model_version=plan.record.version,
            features=plan.mode.value,
            dry_run=plan.request.dry_run,
            ranges=[str(r) for r in plan.ranges],
            resumed=plan.resumed is not None,
            decided=self.decided,
            published=published,
            unreadable=self.unreadable,
            missing_features=self.missing,
            context_clicks=self.context,
            elapsed_s=time.monotonic() - self.started,
            clicks_per_s=self._rate(),
            slices=[
                SliceCounts(
                    slice=s, clicks=n, invalid=self.invalid[s], degraded_before=self.degraded[s]
                )
                for s, n in sorted(self.clicks.items())
            ],
            diff=diff,
            notes=list(plan.notes),
        )
