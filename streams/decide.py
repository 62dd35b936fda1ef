"""Turn scores into decisions: the per-slice threshold test and the reason codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from slidr.events import Click, Decision, GivtReason, IvtCategory, Verdict, slice_name
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
#: The score a GIVT decision carries: the list decided, not the model (1.0: certainly invalid).
GIVT_SCORE = 1.0

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
    category: IvtCategory | None,
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
        ivt_category=category,
        processing_ms=ctx.processing_ms,
        decided_at=ctx.decided_at,
        source_partition=offset[0],
        source_offset=offset[1],
    )


def givt_decision(
    click: Click,
    reason: GivtReason,
    ctx: BatchContext,
    offset: tuple[int | None, int | None],
    row: npt.NDArray[np.float32] | None,
) -> Decision:
    """Invalid by a GIVT list, without the model: score GIVT_SCORE, one ``givt:*`` reason."""
    return _decision(
        click,
        offset,
        ctx,
        traffic_slice=click_slice(click, ctx.model.slice_fields),
        score=GIVT_SCORE,
        invalid=True,
        reasons=[reason.value],
        row=row,
        category=IvtCategory.GIVT,
    )


def decide(
    clicks: Sequence[Click],
    features: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    ctx: BatchContext,
    offsets: Sequence[tuple[int | None, int | None]],
    givt: Sequence[GivtReason | None] | None = None,
) -> list[Decision]:
    """One decision per click: GIVT ones (``givt[i]`` set; their score is not read) by the
    list, the others by the model's score against their slice's threshold."""
    decisions = []
    reasons = givt if givt is not None else [None] * len(clicks)
    for click, row, score, offset, why in zip(
        clicks, features, scores, offsets, reasons, strict=True
    ):
        if why is not None:
            decisions.append(givt_decision(click, why, ctx, offset, row))
            continue
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
                category=IvtCategory.SIVT,
            )
        )
    return decisions


def fail_open(
    clicks: Sequence[Click],
    features: npt.NDArray[np.float32] | None,
    why: str,
    ctx: BatchContext,
    offsets: Sequence[tuple[int | None, int | None]],
    givt: Sequence[GivtReason | None] | None = None,
) -> list[Decision]:
    """Valid decisions marked degraded (no ivt_category: nothing judged them): an outage never
    blocks billing or invalidates humans. GIVT clicks (``givt[i]`` set) need neither Redis nor
    Triton and are decided by their list as usual."""
    reasons = givt if givt is not None else [None] * len(clicks)
    return [
        givt_decision(click, listed, ctx, offset, None if features is None else features[i])
        if listed is not None
        else _decision(
            click,
            offset,
            ctx,
            traffic_slice=click_slice(click, ctx.model.slice_fields),
            score=0.0,
            invalid=False,
            reasons=[f"degraded:{why}"],
            row=None if features is None else features[i],
            category=None,
            degraded=True,
        )
        for i, (click, offset, listed) in enumerate(zip(clicks, offsets, reasons, strict=True))
    ]
