"""Decisions as the contract reads them: each JSON payload validated as a Decision."""

from __future__ import annotations

from collections.abc import Iterable

from slidr.events import Decision
from streams.decide import DecidedBatch


def validated(decided: DecidedBatch | Iterable[bytes]) -> list[Decision]:
    payloads = decided.payloads if isinstance(decided, DecidedBatch) else decided
    return [Decision.model_validate_json(p) for p in payloads]
