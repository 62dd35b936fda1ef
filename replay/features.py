"""The two feature modes: one step of click messages in, the clicks to decide (with their
vectors) out.

- logged: the vector logged with each click's original decision, found by its offset. Clicks
  without one (dead-lettered, decided fail-open without Redis, or never decided) are counted
  as missing. A click that has a decision was validated by the live worker, so its message is
  only decoded, not validated again.
- recompute: every click read (warm-up, context and range, in time order) goes through the
  live feature code in the run's own Redis namespace; only those in the range are decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Message

from replay.originals import Original, OriginalDecisions
from slidr.errors import InvalidEvent
from slidr.events import Click, GivtReason, parse_click_message
from slidr.features import N_FEATURES
from slidr.model_record import ModelRecord
from slidr.settings import EventLimits
from slidr.slices import slice_name
from streams.decide import DecisionColumns
from streams.feature_store import FeatureStore, featurize
from streams.givt import GivtFilter

#: Clicks per feature-store call in recompute mode, as the worker's batches.
FEATURE_BATCH = 1000


@dataclass(frozen=True)
class Step:
    clicks: DecisionColumns
    #: The original decision of each click to decide, where known.
    originals: Sequence[Original | None]
    #: Messages of the range that are not valid clicks.
    unreadable: int
    #: Clicks of the range without a logged vector (logged mode).
    missing: int
    #: Clicks read only to feed the counters (recompute mode).
    context: int


def _where(msg: Message) -> tuple[int, int]:
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return partition, offset


def _utc(value: Any) -> datetime:
    return datetime.fromisoformat(str(value)).astimezone(UTC)


async def logged_step(
    messages: Sequence[Message],
    index: OriginalDecisions,
    record: ModelRecord,
    givt: GivtFilter | None = None,
) -> Step:
    keys = [_where(msg) for msg in messages]
    found = await index.lookup(keys)
    ids, times, slices, offsets, rows, kept = [], [], [], [], [], []
    reasons: list[GivtReason | None] = []
    unreadable = missing = 0
    for msg, key, original in zip(messages, keys, found, strict=True):
        if original is None or original.features is None:
            missing += 1
            continue
        try:
            click = orjson.loads(msg.value() or b"")
            event_time = _utc(click["event_time"])
            traffic_slice = slice_name(click, record.slice_fields)
            why = None if givt is None else givt.reason_of(click["user_agent"], click["ip"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            unreadable += 1
            continue
        if click.get("click_id") != original.click_id:
            missing += 1  # the offset holds another click than the logged decision names
            continue
        ids.append(original.click_id)
        times.append(event_time)
        slices.append(traffic_slice)
        offsets.append(key)
        rows.append(original.features)
        kept.append(original)
        reasons.append(why)
    features = np.asarray(rows, dtype=np.float32).reshape(-1, N_FEATURES)
    clicks = DecisionColumns(ids, times, slices, offsets, features, reasons)
    return Step(clicks, kept, unreadable, missing, context=0)


def _message_time(msg: Message) -> datetime | None:
    """The message's timestamp; None when it has none or one no datetime holds."""
    stamp = msg.timestamp()[1]
    if stamp < 0:
        return None
    try:
        return datetime.fromtimestamp(stamp / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _parse(msg: Message, limits: EventLimits) -> Click | None:
    # Time limits are judged as of the click's own (logger) timestamp: a replay accepts what
    # the live pipeline accepted then, whenever it runs.
    try:
        return parse_click_message(msg.value(), msg.key(), limits, now=_message_time(msg))
    except InvalidEvent:
        return None


async def recomputed_step(
    messages: Sequence[Message],
    publish_from: dict[int, int],
    store: FeatureStore,
    index: OriginalDecisions | None,
    record: ModelRecord,
    limits: EventLimits,
    givt: GivtFilter | None = None,
) -> Step:
    parsed: list[Click] = []
    replayed: list[int] = []
    keys: list[tuple[int, int]] = []
    unreadable = 0
    for msg in messages:
        partition, offset = _where(msg)
        in_range = offset >= publish_from.get(partition, offset + 1)
        click = _parse(msg, limits)
        if click is None:
            unreadable += in_range
            continue
        if in_range:
            replayed.append(len(parsed))
            keys.append((partition, offset))
        parsed.append(click)
    rows = await featurize(parsed, store, FEATURE_BATCH)
    chosen = [parsed[i] for i in replayed]
    clicks = DecisionColumns.of(
        chosen,
        record.slice_fields,
        keys,
        rows[replayed].reshape(-1, N_FEATURES),
        givt.reasons(chosen) if givt is not None else [],
    )
    originals: list[Original | None] = [None] * len(keys)
    if index is not None:
        originals = await index.lookup(keys)
    return Step(clicks, originals, unreadable, missing=0, context=len(parsed) - len(replayed))
