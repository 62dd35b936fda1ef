"""One bad message costs one dead letter (the worker) or one skipped message (the archiver, a
replay), never the batch or the process. No network: a fake feature store and scorer behind the
real pipeline and serving model, fake Kafka messages for the archiver and the replay."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from replay.errors import ReplayRefused
from replay.features import recomputed_step
from replay.request import parse_request
from slidr.events import DEAD_LETTER_MAX_BYTES, Click, DeadLetter, DeadLetterReason
from slidr.features import FEATURE_HASH, N_FEATURES
from slidr.model_record import ModelRecord
from slidr.settings import ArchiveSettings, Settings, TritonSettings
from streams.archive.consumer import Archiver, _Pending
from streams.feature_store import FeatureStoreUnavailable
from streams.metrics import WorkerMetrics
from streams.pipeline import FAILED_IN_A_ROW_LIMIT, ClickPipeline, DecidingFails, RawClick
from streams.serving_model import ServingModel
from tests.decisions import validated
from tests.factories import make_click


class FakeStore:
    """Zero features; raises ``error`` for the click_ids in ``poison`` (or for all with "*")."""

    def __init__(self, poison: Collection[str] = (), error: Exception | None = None) -> None:
        self.poison = poison
        self.error = error or ValueError("cannot count this click")

    async def features(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        if "*" in self.poison or any(c.click_id in self.poison for c in clicks):
            raise self.error
        return np.zeros((len(clicks), N_FEATURES), dtype=np.float32)

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class FakeScorer:
    async def score(
        self, features: npt.NDArray[np.float32], version: int
    ) -> npt.NDArray[np.float32]:
        return np.full(len(features), 0.1, dtype=np.float32)

    async def check(self, version: int, batch_size: int) -> None: ...

    async def aclose(self) -> None: ...


def pipeline(repo: Path, store: FakeStore) -> ClickPipeline:
    settings = Settings(triton=TritonSettings(model_repository=repo))
    return ClickPipeline(settings, store, ServingModel(settings, FakeScorer()), WorkerMetrics())


def raw(click: Click, offset: int) -> RawClick:
    return RawClick(click.to_json(), click.click_id.encode(), partition=0, offset=offset)


def reasons(letters: Sequence[DeadLetter]) -> dict[int | None, str]:
    return {d.source_offset: d.reason for d in letters}


def with_time(click: Click, event_time: str) -> bytes:
    return orjson.dumps({**orjson.loads(click.to_json()), "event_time": event_time})


def with_field(click: Click, **values: object) -> bytes:
    return orjson.dumps({**orjson.loads(click.to_json()), **values})


def bad_messages(good: Click) -> list[RawClick]:
    """Each message of issue 17's "Found 1", offsets 101..105, and what its strict contract
    refuses, 106.. (see BAD_REASONS)."""
    key = good.click_id.encode()
    return [
        RawClick(None, b"c-tomb", partition=0, offset=101),
        RawClick(with_time(good, "0001-01-01T00:00:00+01:00"), b"c-y1", partition=0, offset=102),
        RawClick(with_time(good, "9999-12-31T23:59:59-01:00"), b"c-y9", partition=0, offset=103),
        RawClick(b"x" * 900_000, b"c-big", partition=0, offset=104),
        RawClick(good.to_json(), b"\xff\xfe", partition=0, offset=105),
        RawClick(good.to_json(), b"c-other", partition=0, offset=106),
        RawClick(good.to_json()[:-1] + b',"ad_id":"x"}', key, partition=0, offset=107),
        RawClick(with_field(good, session_id="s\x00"), key, partition=0, offset=108),
        RawClick(with_field(good, ip="fe80::1%eth0"), key, partition=0, offset=109),
    ]


BAD_REASONS = {
    101: "tombstone",
    102: "invalid_value",
    103: "invalid_value",
    104: "oversized",
    105: "bad_key",
    106: "key_mismatch",
    107: "duplicate_key",
    108: "invalid_value",
    109: "invalid_value",
}


async def test_each_bad_message_is_a_dead_letter_and_the_clicks_around_it_are_decided(
    repo: Path,
) -> None:
    good = [make_click(i) for i in range(len(BAD_REASONS) + 1)]
    bad = bad_messages(good[0])
    batch = [raw(good[0], 0), *[m for i, b in enumerate(bad) for m in (b, raw(good[i + 1], i + 1))]]

    outcome = await pipeline(repo, FakeStore()).process(batch)

    assert [d.click_id for d in validated(outcome.decisions)] == [c.click_id for c in good]
    assert reasons(outcome.dead_letters) == BAD_REASONS
    assert all(len(d.to_json()) <= DEAD_LETTER_MAX_BYTES for d in outcome.dead_letters)
    big = next(d for d in outcome.dead_letters if d.source_offset == 104)
    assert big.original_size == 900_000 and big.truncated
    assert big.original_sha256 == hashlib.sha256(b"x" * 900_000).hexdigest()


async def test_a_click_whose_decision_raises_is_a_dead_letter_the_others_are_decided(
    repo: Path,
) -> None:
    clicks = [make_click(i) for i in range(5)]
    store = FakeStore(poison={"c-2"})

    outcome = await pipeline(repo, store).process([raw(c, i) for i, c in enumerate(clicks)])

    assert [d.click_id for d in validated(outcome.decisions)] == ["c-0", "c-1", "c-3", "c-4"]
    [dead] = outcome.dead_letters
    assert dead.reason == DeadLetterReason.DECISION_FAILED and dead.source_offset == 2
    assert dead.detail == "ValueError: cannot count this click"
    assert base64.b64decode(dead.original_b64) == clicks[2].to_json()


async def test_a_lone_click_that_cannot_be_decided_does_not_stop_the_worker(repo: Path) -> None:
    # A batch of one poisoned click, redelivered alone, must not exit the worker again and again.
    p = pipeline(repo, FakeStore(poison={"c-0"}))
    outcome = await p.process([raw(make_click(0), 0)])
    assert outcome.decisions == [] and reasons(outcome.dead_letters) == {0: "decision_failed"}
    # A decided click resets the count of failures in a row.
    assert len((await p.process([raw(make_click(1), 1)])).decisions) == 1
    assert p.failed_in_a_row == 0


async def test_when_no_click_can_be_decided_the_worker_stops_instead(repo: Path) -> None:
    clicks = [make_click(i) for i in range(FAILED_IN_A_ROW_LIMIT + 5)]
    p = pipeline(repo, FakeStore(poison={"*"}, error=RuntimeError("script missing")))
    with pytest.raises(DecidingFails, match="script missing"):
        await p.process([raw(c, i) for i, c in enumerate(clicks)])


async def test_an_unavailable_store_still_fails_open_for_the_whole_batch(repo: Path) -> None:
    clicks = [make_click(i) for i in range(3)]
    p = pipeline(repo, FakeStore(poison={"*"}, error=FeatureStoreUnavailable("down")))
    outcome = await p.process([raw(c, i) for i, c in enumerate(clicks)])
    assert [d.degraded for d in validated(outcome.decisions)] == [True] * 3
    assert outcome.dead_letters == [] and outcome.degraded_why == "redis_unavailable"


class FakeMessage:
    """What the archiver and a replay read of a confluent_kafka Message."""

    def __init__(self, raw: RawClick, timestamp_ms: int) -> None:
        self.raw, self.timestamp_ms = raw, timestamp_ms

    def topic(self) -> str:
        return "slidr.clicks"

    def partition(self) -> int | None:
        return self.raw.partition

    def offset(self) -> int | None:
        return self.raw.offset

    def value(self) -> bytes | None:
        return self.raw.value

    def key(self) -> bytes | None:
        return self.raw.key

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)


def messages(good: Sequence[Click]) -> list[FakeMessage]:
    now_ms = int(time.time() * 1000)
    out = [FakeMessage(raw(c, i), now_ms) for i, c in enumerate(good)]
    out += [FakeMessage(m, now_ms) for m in bad_messages(good[0])]
    # A producer may stamp a message with a time no datetime holds: judged by the clock instead.
    out.append(FakeMessage(raw(make_click(99), 99), 2**62))
    return out


def test_the_archiver_skips_each_bad_click_and_archives_the_others(tmp_path: Path) -> None:
    settings = Settings(archive=ArchiveSettings(root=tmp_path / "archive"))
    archiver = Archiver(settings, datasets=["clicks"])
    archiver._pending[("slidr.clicks", 0)] = _Pending("clicks", 0, 0)
    good = [make_click(i) for i in range(3)]
    for msg in sorted(messages(good), key=lambda m: m.raw.offset or 0):
        archiver._take(msg)  # type: ignore[arg-type]
    archived = archiver._pending[("slidr.clicks", 0)].events
    assert [e.click_id for e in archived] == ["c-0", "c-1", "c-2", "c-99"]
    assert archiver.stats["clicks"].skipped == len(BAD_REASONS)


async def test_a_replay_counts_each_bad_click_as_unreadable_and_decides_the_others() -> None:
    good = [make_click(i) for i in range(3)]
    record = ModelRecord("slidr", 1, FEATURE_HASH, "test", default_threshold=0.5)
    step = await recomputed_step(
        messages(good),  # type: ignore[arg-type]
        {0: 0},
        FakeStore(),
        None,
        record,
        Settings().events,
    )
    assert step.clicks.click_ids == ["c-0", "c-1", "c-2", "c-99"]
    assert step.unreadable == len(BAD_REASONS)


def test_a_replay_request_with_a_time_no_calendar_holds_is_refused() -> None:
    # The replay agent would otherwise crash on it, and on its redelivery, for good.
    request = {"from_time": "0001-01-01T00:00:00+01:00", "to_time": "2026-11-21T00:00:00Z"}
    with pytest.raises(ReplayRefused, match="from_time"):
        parse_request(orjson.dumps({**request, "model_version": 1}))
