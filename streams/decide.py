"""Turn scores into decisions: the per-slice threshold test and the reason codes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from slidr.events import Click, Decision, Verdict, slice_of
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


def decide(
    clicks: Sequence[Click],
    features: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    model: ModelRecord,
    *,
    offsets: Sequence[tuple[int | None, int | None]],
    decided_at: datetime,
    processing_ms: float,
) -> list[Decision]:
    decisions = []
    for click, row, score, (partition, offset) in zip(
        clicks, features, scores, offsets, strict=True
    ):
        slice_name = slice_of(click.device_type, click.logged_in)
        threshold = model.threshold(slice_name)
        invalid = bool(score >= threshold)
        decisions.append(
            # Built from trusted values: skip re-validation on the hot path.
            Decision.model_construct(
                click_id=click.click_id,
                event_time=click.event_time,
                verdict=Verdict.INVALID if invalid else Verdict.VALID,
                score=float(score),
                threshold=threshold,
                slice=slice_name,
                model_name=model.name,
                model_version=model.version,
                reason_codes=reason_codes(row, click, invalid),
                feature_hash=FEATURE_HASH,
                features=[float(v) for v in row],
                processing_ms=processing_ms,
                decided_at=decided_at,
                source_partition=partition,
                source_offset=offset,
            )
        )
    return decisions


def fail_open(
    clicks: Sequence[Click],
    features: npt.NDArray[np.float32] | None,
    model: ModelRecord,
    why: str,
    *,
    offsets: Sequence[tuple[int | None, int | None]],
    decided_at: datetime,
    processing_ms: float,
) -> list[Decision]:
    """Valid decisions marked degraded: an outage never blocks billing or invalidates humans."""
    decisions = []
    for i, (click, (partition, offset)) in enumerate(zip(clicks, offsets, strict=True)):
        slice_name = slice_of(click.device_type, click.logged_in)
        decisions.append(
            Decision.model_construct(
                click_id=click.click_id,
                event_time=click.event_time,
                verdict=Verdict.VALID,
                score=0.0,
                threshold=model.threshold(slice_name),
                slice=slice_name,
                model_name=model.name,
                model_version=model.version,
                reason_codes=[f"degraded:{why}"],
                feature_hash=FEATURE_HASH,
                features=[] if features is None else [float(v) for v in features[i]],
                degraded=True,
                processing_ms=processing_ms,
                decided_at=decided_at,
                source_partition=partition,
                source_offset=offset,
            )
        )
    return decisions
