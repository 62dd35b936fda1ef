"""Counting what a replay did, for its progress while it runs and its summary at the end (the
messages themselves are contracts: ``slidr/replay_messages.py``)."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from slidr.replay_messages import DiffRow, ReplayProgress, ReplaySummary, SliceCounts

if TYPE_CHECKING:
    from replay.features import Step
    from replay.plan import ReplayPlan


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
