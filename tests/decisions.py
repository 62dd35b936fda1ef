"""Decisions as the contract reads them: each JSON payload validated as a Decision."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from slidr.events import Decision
from slidr.features import FEATURE_HASH
from slidr.model_record import ModelRecord
from streams.decide import DecidedBatch


def validated(decided: DecidedBatch | Iterable[bytes]) -> list[Decision]:
    payloads = decided.payloads if isinstance(decided, DecidedBatch) else decided
    return [Decision.model_validate_json(p) for p in payloads]


#: When :func:`decision_fields`' click happened; decided a second later.
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def decision_fields(click_id: str = "c-1", **fields: object) -> dict[str, object]:
    """The fields of a valid decision: version 1 judged the click valid (SIVT checks passed),
    ``fields`` replacing any of them."""
    base: dict[str, object] = {
        "click_id": click_id,
        "event_time": AT,
        "verdict": "valid",
        "score": 0.1,
        "threshold": 0.5,
        "slice": "desktop/in",
        "model_name": "slidr",
        "model_version": 1,
        "reason_codes": [],
        "feature_hash": "f" * 16,
        "features": [],
        "ivt_category": "sivt",
        "processing_ms": 1.0,
        "decided_at": AT + timedelta(seconds=1),
    }
    return {**base, **fields}


def network_record(version: int, thresholds: dict[str, float]) -> ModelRecord:
    """A version of the network serving the current features, with ``thresholds`` for slices
    over device type and login and 0.5 elsewhere."""
    return ModelRecord(
        name="slidr",
        version=version,
        feature_hash=FEATURE_HASH,
        kind="t",
        default_threshold=0.5,
        thresholds=thresholds,
        slice_fields=("device_type", "logged_in"),
    )
