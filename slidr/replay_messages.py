"""The replay's messages: what on-call asks (``ReplayRequest``, on the replay requests topic or
from ``slidr replay``) and what the replay answers (``ReplayProgress`` on the progress topic,
carrying a ``ReplaySummary`` at the end).

They are contracts like the events of ``slidr/events.py`` (``slidr contracts`` writes their JSON
Schema), so they live in ``slidr/`` and the replay package imports them, never the reverse. A run
id is derived from the resolved range, the model and the mode (``replay.request``), so the same
replay asked twice is the same run: same checkpoint, same decisions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from slidr.events import UtcTime

#: Safe in a file name, a Kafka key and a Redis key prefix (no braces: hash tags).
RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,80}$")]


class FeatureMode(StrEnum):
    #: Re-score the vectors logged with the original decisions (exact, another model).
    LOGGED = "logged"
    #: Rebuild counters in a private Redis namespace from a warm-up window (corrects outages).
    RECOMPUTE = "recompute"


class ReplayRequest(BaseModel):
    """Either per-partition offsets (inclusive) or a time range [from_time, to_time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_offsets: dict[int, Annotated[int, Field(ge=0)]] | None = None
    to_offsets: dict[int, Annotated[int, Field(ge=0)]] | None = None
    from_time: UtcTime | None = None
    to_time: UtcTime | None = None
    model_version: Annotated[int, Field(ge=1)]
    features: FeatureMode = FeatureMode.LOGGED
    dry_run: bool = False
    #: Allow a range larger than ``replay.max_clicks``.
    force: bool = False
    run_id: RunId | None = None

    @model_validator(mode="after")
    def _one_kind_of_range(self) -> ReplayRequest:
        offsets = (self.from_offsets, self.to_offsets)
        times = (self.from_time, self.to_time)
        if any(v is not None for v in offsets) and any(v is not None for v in times):
            raise ValueError("give offsets or times, not both")
        if self.from_time is not None or self.to_time is not None:
            if self.from_time is None or self.to_time is None:
                raise ValueError("a time range needs both from_time and to_time")
            if self.from_time >= self.to_time:
                raise ValueError("from_time must be before to_time")
            return self
        if self.from_offsets is None or self.to_offsets is None:
            raise ValueError("give from_offsets and to_offsets, or from_time and to_time")
        if set(self.from_offsets) != set(self.to_offsets):
            raise ValueError(
                f"from-offsets name partitions {sorted(self.from_offsets)}, to-offsets "
                f"{sorted(self.to_offsets)}: name the same partitions in both"
            )
        for p, first in self.from_offsets.items():
            if first > self.to_offsets[p]:
                raise ValueError(
                    f"partition {p}: from-offset {first} is after to-offset {self.to_offsets[p]}"
                )
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


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
