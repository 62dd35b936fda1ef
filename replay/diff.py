"""Dry run: the replay's verdicts against the original decisions, per slice.

Flips in each direction, and IVR and FPR before and after (FPR: share of purchasing clicks
invalidated; a click is purchasing when the purchases topic holds a purchase of it within
``learn.attribution_window_h``, the weak label of training).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import orjson
from confluent_kafka import TopicPartition

from replay.features import Step
from replay.ranges import TopicOffsets, reader_consumer
from slidr.metrics import rates
from slidr.replay_messages import DiffRow
from slidr.settings import Settings

_ALL = "all"


@dataclass
class DiffCollector:
    slices: list[str] = field(default_factory=list)
    click_ids: list[str] = field(default_factory=list)
    event_ms: list[int] = field(default_factory=list)
    before: list[bool] = field(default_factory=list)
    after: list[bool] = field(default_factory=list)
    degraded: list[bool] = field(default_factory=list)

    def add(self, step: Step, invalid: npt.NDArray[np.bool_]) -> None:
        """Clicks without an original decision cannot be compared and are left out."""
        clicks = step.clicks
        for k, original in enumerate(step.originals):
            if original is None:
                continue
            self.slices.append(clicks.slices[k])
            self.click_ids.append(clicks.click_ids[k])
            self.event_ms.append(int(clicks.event_times[k].timestamp() * 1000))
            self.before.append(original.invalid)
            self.after.append(bool(invalid[k]))
            self.degraded.append(original.degraded)

    def result(self, settings: Settings) -> list[DiffRow]:
        window_ms = timedelta(hours=settings.learn.attribution_window_h) // timedelta(
            milliseconds=1
        )
        bought = purchase_times(settings, set(self.click_ids), min(self.event_ms, default=0))
        purchased = np.array(
            [
                any(0 <= at - t <= window_ms for at in bought.get(c, ()))
                for c, t in zip(self.click_ids, self.event_ms, strict=True)
            ],
            dtype=bool,
        )
        slices = np.array(self.slices, dtype=object)
        before, after = np.array(self.before, bool), np.array(self.after, bool)
        degraded = np.array(self.degraded, bool)
        rows = []
        for name in [*sorted(set(self.slices)), _ALL]:
            m = slices == name if name != _ALL else np.ones(len(slices), dtype=bool)
            rows.append(_row(name, before[m], after[m], degraded[m], purchased[m]))
        return rows


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else value


Flags = npt.NDArray[np.bool_]


def _row(name: str, before: Flags, after: Flags, degraded: Flags, purchased: Flags) -> DiffRow:
    no_flags = np.zeros_like(before)
    was, now = rates(before, purchased, no_flags), rates(after, purchased, no_flags)
    return DiffRow(
        slice=name,
        clicks=int(before.size),
        to_invalid=int((~before & after).sum()),
        to_valid=int((before & ~after).sum()),
        degraded_before=int(degraded.sum()),
        purchasing=was.purchasing,
        ivr_before=0.0 if math.isnan(was.ivr) else was.ivr,
        ivr_after=0.0 if math.isnan(now.ivr) else now.ivr,
        fpr_before=_optional(was.fpr),
        fpr_after=_optional(now.fpr),
    )


def purchase_times(settings: Settings, click_ids: set[str], from_ms: int) -> dict[str, list[int]]:
    """Purchase times (ms) of each of ``click_ids`` on the purchases topic, read to its end."""
    consumer = reader_consumer(settings, "purchases")
    topic = settings.topics.purchases
    out: dict[str, list[int]] = defaultdict(list)
    try:
        view = TopicOffsets(consumer, topic)
        partitions = view.partitions()
        starts = view.offsets_at(from_ms, partitions)
        ends = {p: view.watermarks(p)[1] for p in partitions}
        reading = {p for p in partitions if starts[p] < ends[p]}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in reading])
        while reading:
            for msg in consumer.consume(10_000, 0.5):
                p, offset, value = msg.partition(), msg.offset(), msg.value()
                if p is None or offset is None or msg.error() is not None or offset + 1 >= ends[p]:
                    reading.discard(p)
                if msg.error() is None and value is not None:
                    _add_purchase(out, click_ids, value)
    finally:
        consumer.close()
    return out


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _add_purchase(out: dict[str, list[int]], click_ids: set[str], value: bytes) -> None:
    try:
        purchase = orjson.loads(value)
        click_id = purchase["click_id"]
        at = _ms(str(purchase["event_time"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return  # not a purchase; the archive and training skip it too
    if click_id in click_ids:
        out[click_id].append(at)
