"""Replay logic without a broker: requests, range checks, run ids, checkpoints, the pinned
version's refusals, the timestamp merge of partitions, and the decisions' content."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError

from models.day_zero import ensure_day_zero_version
from replay.checkpoint import Checkpoint, checkpoint_path, resumable, save_checkpoint
from replay.errors import ReplayRefused
from replay.plan import counters_namespace, pinned_record
from replay.ranges import PartitionRange, check_offsets, check_size
from replay.reader import MergedReader, Span
from replay.request import derive_run_id, parse_partition_offsets, parse_request
from slidr.events import DeviceType
from slidr.features import N_FEATURES
from slidr.registry import Registry
from slidr.replay_messages import FeatureMode
from slidr.settings import PROJECT_ROOT, RedisSettings, ReplaySettings, Settings, TritonSettings
from streams.decide import DecisionColumns, Stamp, decide
from tests.decisions import network_record, validated
from tests.factories import make_click

# --- requests ---


def test_a_request_is_offsets_or_times_and_says_what_is_wrong() -> None:
    ok = parse_request({"from_offsets": {0: 5}, "to_offsets": {0: 9}, "model_version": 2})
    assert ok.features is FeatureMode.LOGGED and not ok.dry_run
    same = parse_request(ok.to_json())
    assert same == ok
    bad = [
        ({"from_offsets": {0: 5}, "to_offsets": {1: 9}, "model_version": 2}, "same partitions"),
        ({"from_offsets": {0: 9}, "to_offsets": {0: 5}, "model_version": 2}, "is after"),
        ({"from_time": "2026-11-21T10:00:00Z", "model_version": 2}, "both from_time and to_time"),
        ({"model_version": 2}, "give from_offsets"),
        ({"from_offsets": {0: 1}, "to_offsets": {0: 2}, "model_version": 0}, "model_version"),
        (
            {"from_offsets": {0: 1}, "to_offsets": {0: 2}, "model_version": 1, "run_id": "a{b}"},
            "run_id",
        ),
    ]
    for payload, fragment in bad:
        with pytest.raises(ReplayRefused, match="bad replay request") as caught:
            parse_request(payload)  # type: ignore[arg-type]
        assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_partition_offsets_are_parsed_with_the_option_named_in_errors() -> None:
    assert parse_partition_offsets(["0:1200", "3:7"], "--from-offset") == {0: 1200, 3: 7}
    for wrong in (["1200"], ["0:-1"], ["a:1"], ["0:1", "0:2"]):
        with pytest.raises(ValueError, match="--from-offset"):
            parse_partition_offsets(wrong, "--from-offset")


def test_the_run_id_is_a_function_of_range_model_and_mode() -> None:
    ranges = [PartitionRange(0, 10, 20), PartitionRange(1, 5, 9)]
    run = derive_run_id("slidr", 2, FeatureMode.LOGGED, "clicks", ranges)
    assert run == derive_run_id("slidr", 2, FeatureMode.LOGGED, "clicks", list(ranges))
    assert run.startswith("slidr-v2-logged-")
    others = {
        derive_run_id("slidr", 3, FeatureMode.LOGGED, "clicks", ranges),
        derive_run_id("slidr", 2, FeatureMode.RECOMPUTE, "clicks", ranges),
        derive_run_id("slidr", 2, FeatureMode.LOGGED, "clicks", ranges[:1]),
    }
    assert run not in others and len(others) == 3


# --- ranges ---


def test_ranges_outside_the_topic_are_refused_with_what_it_holds() -> None:
    marks = {0: (100, 200), 1: (0, 50)}
    check_offsets([PartitionRange(0, 100, 199), PartitionRange(1, 0, 49)], marks, "clicks")
    with pytest.raises(ReplayRefused, match=r"out of retention \(it holds offsets 100-199\)"):
        check_offsets([PartitionRange(0, 99, 150)], marks, "clicks")
    with pytest.raises(ReplayRefused, match="not written yet"):
        check_offsets([PartitionRange(1, 10, 50)], marks, "clicks")
    with pytest.raises(ReplayRefused, match=r"no partition 7 \(it has \[0, 1\]\)"):
        check_offsets([PartitionRange(7, 0, 1)], marks, "clicks")


def test_empty_and_oversized_ranges_are_refused_unless_forced() -> None:
    ranges = [PartitionRange(0, 0, 99), PartitionRange(1, 0, 49)]
    assert check_size(ranges, 150, force=False, what="r") == 150
    with pytest.raises(ReplayRefused, match=r"150 clicks, over the limit of 100.*--force"):
        check_size(ranges, 100, force=False, what="r")
    assert check_size(ranges, 100, force=True, what="r") == 150
    with pytest.raises(ReplayRefused, match="holds no clicks"):
        check_size([], 100, force=True, what="r")


# --- checkpoints ---


def test_a_checkpoint_resumes_only_an_interrupted_run_of_the_same_ranges(tmp_path: Path) -> None:
    ranges = [PartitionRange(0, 0, 99)]
    path = checkpoint_path(tmp_path, "run-1")
    assert resumable(path, ranges) is None
    checkpoint = Checkpoint(run_id="run-1", ranges=["0:0-99"], next_offsets={0: 40}, published=40)
    save_checkpoint(path, checkpoint)
    resumed = resumable(path, ranges)
    assert resumed is not None and resumed.next_offsets == {0: 40} and resumed.published == 40
    assert resumable(path, [PartitionRange(0, 0, 98)]) is None
    save_checkpoint(path, resumed.model_copy(update={"complete": True}))
    assert resumable(path, ranges) is None  # a completed run is replayed again from the start


# --- the pinned version and the counters namespace ---


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "slidr").mkdir()
    shutil.copy(PROJECT_ROOT / "triton_repo/slidr/model.py", tmp_path / "slidr/model.py")
    triton = TritonSettings(model_repository=tmp_path)
    ensure_day_zero_version(triton)
    return Settings(state_dir=tmp_path / "state", triton=triton)


def _add_version(settings: Settings, version: int, feature_hash: str | None = None) -> None:
    root = Path(settings.triton.model_repository) / "slidr"
    shutil.copytree(root / "1", root / str(version))
    if feature_hash is not None:
        meta = json.loads((root / str(version) / "metadata.json").read_text())
        (root / str(version) / "metadata.json").write_text(
            json.dumps({**meta, "feature_hash": feature_hash})
        )


def test_only_registered_servable_versions_can_be_pinned(settings: Settings) -> None:
    registry = Registry(settings)
    assert registry.serving().version == 1
    assert pinned_record(settings, 1).version == 1
    with pytest.raises(ReplayRefused, match=r"no version 9 \(on disk: 1\)"):
        pinned_record(settings, 9)
    _add_version(settings, 2)
    with pytest.raises(ReplayRefused, match="has no version 2 \\(registered: 1\\)"):
        pinned_record(settings, 2)
    registry.register(2)
    assert pinned_record(settings, 2).version == 2  # a candidate may be replayed (dry run)
    registry.refuse(2, "guardrail: FPR too high")
    with pytest.raises(ReplayRefused, match="is refused \\(guardrail: FPR too high\\)"):
        pinned_record(settings, 2)
    _add_version(settings, 3, feature_hash="0123456789abcdef")
    registry.register(3)
    with pytest.raises(ReplayRefused, match="trained on features"):
        pinned_record(settings, 3)


def test_recomputed_counters_never_share_the_live_prefix() -> None:
    ok = Settings(redis=RedisSettings(key_prefix="slidr:"))
    assert counters_namespace(ok, "run-1").key_prefix == "slidr-replay:run-1:"
    clash = Settings(
        redis=RedisSettings(key_prefix="slidr:"), replay=ReplaySettings(redis_prefix="slidr:r:")
    )
    with pytest.raises(ReplayRefused, match="overlaps the live prefix"):
        counters_namespace(clash, "run-1")


# --- the merge of partitions by timestamp ---


class _Msg:
    def __init__(self, partition: int, offset: int, ts: int, eof: bool = False) -> None:
        self._p, self._o, self._ts, self._eof = partition, offset, ts, eof

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> Any:
        if not self._eof:
            return None
        return KafkaError(KafkaError._PARTITION_EOF)

    def value(self) -> bytes:
        return b""


class _FakeConsumer:
    """Hands out each partition's messages a few at a time, then EOF."""

    def __init__(self, logs: dict[int, list[int]], per_fetch: int = 3) -> None:
        self.logs = logs
        self.per_fetch = per_fetch
        self.next: dict[int, int] = {}
        self.paused: set[int] = set()

    def assign(self, partitions: Sequence[Any]) -> None:
        self.next = {tp.partition: tp.offset for tp in partitions}

    def unassign(self) -> None:
        self.next = {}

    def pause(self, partitions: Sequence[Any]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: Sequence[Any]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def consume(self, num: int, timeout: float) -> list[_Msg]:
        out = []
        for p, offset in self.next.items():
            if p in self.paused:
                continue
            stamps = self.logs[p]
            stop = min(offset + self.per_fetch, len(stamps))
            out += [_Msg(p, o, stamps[o]) for o in range(offset, stop)]
            if stop == len(stamps) and offset < stop:
                out.append(_Msg(p, stop, 0, eof=True))
            self.next[p] = stop
        return out


async def _collect(chunks: AsyncIterator[list[Any]]) -> list[list[tuple[int, int]]]:
    return [[(m.partition(), m.offset()) for m in chunk] async for chunk in chunks]


async def test_partitions_are_merged_by_timestamp_within_their_spans() -> None:
    logs = {0: [10, 20, 30, 40, 50, 60], 1: [15, 25, 35, 45], 2: [5, 55]}
    spans = [Span(0, 1, 4, 2), Span(1, 0, 3, 0), Span(2, 0, 1, 2)]  # partition 2: context only
    consumer = _FakeConsumer(logs)
    reader = MergedReader(consumer, "t", spans, chunk_size=4, buffer_limit=2)  # type: ignore[arg-type]
    chunks = await _collect(reader.chunks())
    flat = [m for chunk in chunks for m in chunk]
    assert [len(c) for c in chunks[:-1]] == [4] * (len(chunks) - 1)
    assert flat == [(2, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3), (0, 4)]
    stamps = [logs[p][o] for p, o in flat]
    assert stamps == sorted(stamps)


async def test_a_span_whose_end_holds_no_message_still_finishes() -> None:
    # Offset 3 of partition 0 is past the log's end (e.g. a transaction marker): EOF ends it.
    reader = MergedReader(_FakeConsumer({0: [1, 2, 3]}), "t", [Span(0, 0, 3, 0)])  # type: ignore[arg-type]
    assert await _collect(reader.chunks()) == [[(0, 0), (0, 1), (0, 2)]]


# --- replayed decisions: the live worker's content, built by columns ---


def test_replayed_decisions_are_the_live_decisions_marked_as_a_replay() -> None:
    rng = np.random.default_rng(3)
    start = datetime(2026, 11, 20, 22, 30, 0, 250_000, tzinfo=UTC)  # crosses night hours
    clicks = [
        make_click(
            i,
            at=start + timedelta(minutes=7 * i),
            device=list(DeviceType)[i % 3],
            customer=f"u-{i}" if i % 2 else None,
        )
        for i in range(80)
    ]
    features = rng.poisson(4, size=(80, N_FEATURES)).astype(np.float32) * rng.choice(
        [1, 8], size=(80, 1)
    ).astype(np.float32)
    scores = rng.random(80).astype(np.float32)
    scores[:10] = np.float32(0.3)  # exactly at a threshold that float32 cannot hold
    record = network_record(4, {"desktop/in": 0.3, "app": 0.7, "all": 0.6})
    offsets: list[tuple[int | None, int | None]] = [(i % 2, 100 + i) for i in range(80)]
    columns = DecisionColumns.of(clicks, record.slice_fields, offsets, features)
    live = decide(columns, scores, Stamp(record, datetime.now(UTC), 5.0))
    replayed = decide(columns, scores, Stamp(record, None, replay_run_id="run-7"))
    assert 0 < replayed.invalid.sum() < 80
    thresholds = np.asarray([record.threshold(s) for s in columns.slices])
    # float32 0.3 is above 0.3 itself: compared in float64, it is invalid at threshold 0.3.
    assert (replayed.invalid == (scores.astype(np.float64) >= thresholds)).all()
    for decision, payload in zip(validated(live), replayed.payloads, strict=True):
        expected = decision.model_copy(
            update={
                "replay_run_id": "run-7",
                "decided_at": decision.event_time,
                "processing_ms": 0.0,
            }
        )
        assert orjson.loads(payload) == expected.model_dump(mode="json")
        assert payload == expected.to_json()  # same bytes, same field order as the contract
