"""Replayed decisions, built for a whole step at once as JSON.

The content is the live worker's (:func:`streams.decide.decide`: the record's per-slice
threshold, its slice fields, the same reason codes), marked as a replay. It is built from
columns with numpy and orjson instead of one pydantic model per click, which is what lets a
replay of logged features run several times faster than the live path; a contract test
checks that both give the same decision for the same click, features and score.

Nothing here depends on when the replay runs: ``decided_at`` is the click's event time and
``processing_ms`` 0, so the same replay publishes byte-identical messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import orjson

from slidr.events import SCHEMA_VERSION, GivtReason, IvtCategory, Verdict
from slidr.features import FEATURE_HASH, INDEX
from slidr.model_record import ModelRecord
from streams.decide import ENTITY_SIGNALS, GIVT_SCORE, NIGHT_HOURS_UTC, VELOCITY_SIGNALS

_VELOCITY = [(INDEX[name], limit) for name, limit in VELOCITY_SIGNALS.items()]
_ENTITY = [(INDEX[name], limit) for name, limit in ENTITY_SIGNALS.items()]
_NIGHT = frozenset(NIGHT_HOURS_UTC)


@dataclass(frozen=True)
class ReplayedClicks:
    """The clicks one step decides, as columns."""

    click_ids: list[str]
    #: UTC, written as the Decision contract writes times ("2026-11-21T10:00:00Z").
    event_times: list[str]
    #: Each click's slice under the pinned record's slice fields.
    slices: list[str]
    offsets: list[tuple[int, int]]
    features: npt.NDArray[np.float32]
    #: Each click's GIVT reason (None: the model judges it), as the worker's filter gives it;
    #: empty when no filter was asked.
    givt: list[GivtReason | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.click_ids)


def _reasons(clicks: ReplayedClicks, invalid: npt.NDArray[np.bool_]) -> list[list[str]]:
    f = clicks.features
    velocity = np.zeros(len(clicks), dtype=bool)
    for i, limit in _VELOCITY:
        velocity |= f[:, i] >= limit
    entity = np.zeros(len(clicks), dtype=bool)
    for i, limit in _ENTITY:
        entity |= f[:, i] >= limit
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
        if int(clicks.event_times[k][11:13]) in _NIGHT:
            codes.append("time")
        out.append(codes)
    return out


def replayed_decisions(
    clicks: ReplayedClicks, scores: npt.NDArray[np.float32], record: ModelRecord, run_id: str
) -> tuple[list[bytes], npt.NDArray[np.bool_]]:
    """Each click's decision as JSON (in the Decision model's field order), and the verdicts."""
    by_slice = {name: record.threshold(name) for name in set(clicks.slices)}
    thresholds = [by_slice[name] for name in clicks.slices]
    # As decide(): the float32 score against the float threshold, compared in float64.
    invalid = scores.astype(np.float64) >= np.asarray(thresholds, dtype=np.float64)
    givt = clicks.givt or [None] * len(clicks)
    invalid |= np.asarray([why is not None for why in givt], dtype=bool)
    reasons = _reasons(clicks, invalid)
    payloads = []
    for k, (score, row) in enumerate(
        zip(scores.astype(np.float64).tolist(), clicks.features.tolist(), strict=True)
    ):
        partition, offset = clicks.offsets[k]
        why = givt[k]
        category = IvtCategory.SIVT
        if why is not None:  # as streams.decide.givt_decision: the list decided
            score, reasons[k], category = GIVT_SCORE, [why.value], IvtCategory.GIVT
        payloads.append(
            orjson.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "click_id": clicks.click_ids[k],
                    "event_time": clicks.event_times[k],
                    "verdict": Verdict.INVALID.value if invalid[k] else Verdict.VALID.value,
                    "score": score,
                    "threshold": thresholds[k],
                    "slice": clicks.slices[k],
                    "model_name": record.name,
                    "model_version": record.version,
                    "reason_codes": reasons[k],
                    "feature_hash": FEATURE_HASH,
                    "features": row,
                    "degraded": False,
                    "ivt_category": category.value,
                    "processing_ms": 0.0,
                    "decided_at": clicks.event_times[k],
                    "replay_run_id": run_id,
                    "source_partition": partition,
                    "source_offset": offset,
                }
            )
        )
    return payloads, invalid
