"""Turn scores into decisions: the per-slice threshold test and the reason codes.

The one decision builder of slidr: the live worker and a replay both call it. It works on a
batch's columns with numpy and writes each decision straight to JSON with orjson (in the
Decision model's field order), instead of validating one pydantic model per click; a contract
test checks the bytes against :class:`~slidr.events.Decision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
import orjson

from slidr.events import (
    SCHEMA_VERSION,
    Click,
    DegradedReason,
    GivtReason,
    IvtCategory,
    Verdict,
)
from slidr.features import FEATURE_HASH, INDEX
from slidr.model_record import ModelRecord
from slidr.slices import click_slice

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
_NIGHT = frozenset(NIGHT_HOURS_UTC)
# Times as the Decision contract writes them: UTC with a "Z", as pydantic does.
_DUMPS_OPTIONS = orjson.OPT_UTC_Z

Offset = tuple[int | None, int | None]


@dataclass(frozen=True)
class DecisionColumns:
    """The clicks one batch decides, as columns."""

    click_ids: list[str]
    #: Aware UTC times.
    event_times: list[datetime]
    #: Each click's slice under the deciding record's slice fields.
    slices: list[str]
    offsets: Sequence[Offset]
    #: One row per click; None when the features could not be read (written as []).
    features: npt.NDArray[np.float32] | None
    #: Each click's GIVT reason (None: the model judges it); empty when no filter was asked.
    givt: Sequence[GivtReason | None] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        clicks: Sequence[Click],
        slice_fields: Sequence[str],
        offsets: Sequence[Offset],
        features: npt.NDArray[np.float32] | None,
        givt: Sequence[GivtReason | None] = (),
    ) -> DecisionColumns:
        return cls(
            click_ids=[c.click_id for c in clicks],
            event_times=[c.event_time for c in clicks],
            slices=[click_slice(c, slice_fields) for c in clicks],
            offsets=offsets,
            features=features,
            givt=givt,
        )

    def __len__(self) -> int:
        return len(self.click_ids)


@dataclass(frozen=True)
class Stamp:
    """What every decision of one batch shares."""

    record: ModelRecord
    #: None: each decision carries its click's event time (a replay: reruns are byte-identical).
    decided_at: datetime | None
    processing_ms: float = 0.0
    replay_run_id: str | None = None
    #: 0 live; a replay's revision supersedes earlier decisions (``slidr.events.final_order``).
    revision: int = 0


@dataclass(frozen=True)
class DecidedBatch:
    """A batch's decisions as JSON, with the columns the caller counts and routes by."""

    payloads: list[bytes]
    click_ids: list[str]
    #: Aware UTC times (the decision cache keys a click by its event minute).
    event_times: list[datetime]
    slices: list[str]
    invalid: npt.NDArray[np.bool_]
    #: Per click: the stage that judged it (None: fail-open), and the reason codes.
    categories: list[IvtCategory | None]
    reasons: list[list[str]]

    def __len__(self) -> int:
        return len(self.payloads)


def _signal(features: npt.NDArray[np.float32], signals: list[tuple[int, float]]) -> list[bool]:
    hit = np.zeros(len(features), dtype=bool)
    for i, limit in signals:
        hit |= features[:, i] >= limit
    return hit.tolist()  # type: ignore[no-any-return]


def _model_reasons(columns: DecisionColumns, invalid: npt.NDArray[np.bool_]) -> list[list[str]]:
    assert columns.features is not None
    velocity = _signal(columns.features, _VELOCITY)
    entity = _signal(columns.features, _ENTITY)
    out: list[list[str]] = []
    for k, bad in enumerate(invalid.tolist()):
        if not bad:
            out.append([])
            continue
        codes = ["model"]
        if velocity[k]:
            codes.append("velocity")
        if entity[k]:
            codes.append("entity")
        if columns.event_times[k].hour in _NIGHT:
            codes.append("time")
        out.append(codes)
    return out


def _thresholds(columns: DecisionColumns, record: ModelRecord) -> list[float]:
    by_slice = {name: record.threshold(name) for name in set(columns.slices)}
    return [by_slice[name] for name in columns.slices]


def decide(columns: DecisionColumns, scores: npt.NDArray[np.float32], stamp: Stamp) -> DecidedBatch:
    """One decision per click: GIVT ones (their score is not read) by the list, the others by
    the model's score against their slice's threshold."""
    thresholds = _thresholds(columns, stamp.record)
    # The float32 score against the float threshold, compared in float64.
    invalid = scores.astype(np.float64) >= np.asarray(thresholds, dtype=np.float64)
    givt = list(columns.givt) or [None] * len(columns)
    invalid |= np.asarray([why is not None for why in givt], dtype=bool)
    reasons = _model_reasons(columns, invalid)
    categories: list[IvtCategory | None] = [IvtCategory.SIVT] * len(columns)
    score_list: list[float] = scores.astype(np.float64).tolist()
    for k, why in enumerate(givt):
        if why is not None:  # the list decided, not the model
            score_list[k], reasons[k], categories[k] = GIVT_SCORE, [why.value], IvtCategory.GIVT
    return _build(columns, stamp, thresholds, score_list, invalid, reasons, categories)


def fail_open(columns: DecisionColumns, why: DegradedReason, stamp: Stamp) -> DecidedBatch:
    """Valid decisions marked degraded (no ivt_category: nothing judged them): an outage never
    blocks billing or invalidates humans. GIVT clicks need neither Redis nor Triton and are
    decided by their list as usual."""
    thresholds = _thresholds(columns, stamp.record)
    givt = list(columns.givt) or [None] * len(columns)
    invalid = np.asarray([listed is not None for listed in givt], dtype=bool)
    scores = [GIVT_SCORE if listed is not None else 0.0 for listed in givt]
    reasons = [[listed.value] if listed is not None else [why.code] for listed in givt]
    categories = [IvtCategory.GIVT if listed is not None else None for listed in givt]
    return _build(columns, stamp, thresholds, scores, invalid, reasons, categories)


def _build(
    columns: DecisionColumns,
    stamp: Stamp,
    thresholds: list[float],
    scores: list[float],
    invalid: npt.NDArray[np.bool_],
    reasons: list[list[str]],
    categories: list[IvtCategory | None],
) -> DecidedBatch:
    record = stamp.record
    rows: list[list[float]] = (
        columns.features.tolist() if columns.features is not None else [[]] * len(columns)
    )
    payloads = []
    for k, bad in enumerate(invalid.tolist()):
        partition, offset = columns.offsets[k]
        category = categories[k]
        payloads.append(
            orjson.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "click_id": columns.click_ids[k],
                    "event_time": columns.event_times[k],
                    "verdict": Verdict.INVALID.value if bad else Verdict.VALID.value,
                    "score": scores[k],
                    "threshold": thresholds[k],
                    "slice": columns.slices[k],
                    "model_name": record.name,
                    "model_version": record.version,
                    "reason_codes": reasons[k],
                    "feature_hash": FEATURE_HASH,
                    "features": rows[k],
                    "degraded": category is None,
                    "ivt_category": None if category is None else category.value,
                    "processing_ms": stamp.processing_ms,
                    "decided_at": stamp.decided_at or columns.event_times[k],
                    "revision": stamp.revision,
                    "replay_run_id": stamp.replay_run_id,
                    "source_partition": partition,
                    "source_offset": offset,
                },
                option=_DUMPS_OPTIONS,
            )
        )
    return DecidedBatch(
        payloads,
        columns.click_ids,
        columns.event_times,
        columns.slices,
        invalid,
        categories,
        reasons,
    )
