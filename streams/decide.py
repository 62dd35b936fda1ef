"""Turn scores into decisions: the per-slice threshold test and the reason codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from slidr.events import Click, Decision, Verdict, slice_name
from slidr.features import FEATURE_HASH, INDEX
from slidr.model_record import ModelRecord

#: A signal "drove" an invalid decision when its feature reaches this level. They explain a
#: decision to people reading it; the verdict itself is the model's score against the threshold.
VELOCITY_SIGNALS: dict[str, float] = {
    "session_clicks_1m": 6.0,
    "session_clicks_1h": 40.0,
    "customer_clicks_1h": 60.0,
    "ip_clicks_1m": 30.0,
}
ENTITY_SIGNALS: dict[str, float] = {
    "ip_distinct_user_agents": 10.0,
    "customer_distinct_ips": 5.0,
    "ip_distinct_customers": 20.0,
}
NIGHT_HOURS_UTC = range(0, 6)

_VELOCITY = [(INDEX[name], limit) for name, limit in VELOCITY_SIGNALS.items()]
_ENTITY = [(INDEX[name], limit) for name, limit in ENTITY_SIGNALS.items()]


def click_slice(click: Click, fields: Sequence[str]) -> str:
    """The click's traffic slice under the serving record's slice fields."""
    return slice_name({name: getattr(click, name) for name in fields}, fields)


def reason_codes(features: npt.NDArray[np.float32], click: Click, invalid: bool) -> list[str]:
    if not invalid:
        return []
    codes = ["model"]
    if any(features[i] >= limit for i, limit in _VELOCITY):
        codes.append("velocity")
    if any(features[i] >= limit for i, limit in _ENTITY):
        codes.append("entity")
    if click.event_time.hour in NIGHT_HOURS_UTC:
        codes.append("time")
    return codes


@dataclass(frozen=True)
class BatchContext:
    """What every decision of one micro-batch shares."""

    model: ModelRecord
    decided_at: datetime
    processing_ms: float


def _decision(
    click: Click,
    offset: tuple[int | None, int | None],
    ctx: BatchContext,
    *,
    traffic_slice: str,
    score: float,
    invalid: bool,
    reasons: list[str],
    row: npt.NDArray[np.float32] | None,
    degraded: bool = False,
) -> Decision:
    # Built from trusted values: skip re-validation on the hot path.
    return Decision.model_construct(
        click_id=click.click_id,
        event_time=click.event_time,
        verdict=Verdict.INVALID if invalid else Verdict.VALID,
        score=score,
        threshold=ctx.model.threshold(traffic_slice),
        slice=traffic_slice,
        model_name=ctx.model.name,
        model_version=ctx.model.version,
        reason_codes=reasons,
        feature_hash=FEATURE_HASH,
        features=[] if row is None else row.tolist(),
        degraded=degraded,
        processing_ms=ctx.processing_ms,
        decided_at=ctx.decided_at,
        source_partition=offset[0],
        source_offset=offset[1],
    )


def decide(
    clicks: Sequence[Click],
    features: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    ctx: BatchContext,
    offsets: Sequence[tuple[int | None, int | None]],
) -> list[Decision]:
    decisions = []
    for click, row, score, offset in zip(clicks, features, scores, offsets, strict=True):
        traffic_slice = click_slice(click, ctx.model.slice_fields)
        invalid = bool(score >= ctx.model.threshold(traffic_slice))
        decisions.append(
            _decision(
                click,
                offset,
                ctx,
                traffic_slice=traffic_slice,
                score=float(score),
                invalid=invalid,
                reasons=reason_codes(row, click, invalid),
                row=row,
            )
        )
    return decisions


def fail_open(
    clicks: Sequence[Click],
    features: npt.NDArray[np.float32] | None,
    why: str,
    ctx: BatchContext,
    offsets: Sequence[tuple[int | None, int | None]],
) -> list[Decision]:
    """Valid decisions marked degraded: an outage never blocks billing or invalidates humans."""
    return [
        _decision(
            click,
            offset,
            ctx,
            traffic_slice=click_slice(click, ctx.model.slice_fields),
            score=0.0,
            invalid=False,
            reasons=[f"degraded:{why}"],
            row=None if features is None else features[i],
            degraded=True,
        )
        for i, (click, offset) in enumerate(zip(clicks, offsets, strict=True))
    ]
