"""Issue 17, "Found 1", on a real worker: every message that used to stop a partition (a
tombstone, event times no UTC datetime holds, a 900 KB value, a key that is not UTF-8) is now a
dead letter, the worker keeps running and the valid clicks around them are decided."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from slidr.events import DEAD_LETTER_MAX_BYTES, Click, DeadLetter
from slidr.settings import Settings
from tests.factories import make_click
from tests.worker_harness import DecisionReader, WorkerProcess, isolated, produce_messages, read_raw

pytestmark = pytest.mark.integration

BIG = b'{"click_id": "' + b"x" * 900_000 + b'"}'


def valid(i: int) -> Click:
    at = datetime.now(UTC) - timedelta(minutes=10) + timedelta(seconds=i)
    return make_click(i, prefix="poison-ok", at=at, session=f"s-{i}", ip=f"192.0.2.{i}")


def with_time(n: int, event_time: str) -> bytes:
    click = orjson.loads(make_click(n, prefix="poison-bad").to_json())
    return orjson.dumps({**click, "event_time": event_time})


#: (key, value, the reason expected); the key names the message in its dead letter.
BAD: list[tuple[bytes, bytes | None, str]] = [
    (b"tombstone", None, "tombstone"),
    (b"year-1", with_time(1, "0001-01-01T00:00:00+01:00"), "invalid_value"),
    (b"year-9999", with_time(2, "9999-12-31T23:59:59-01:00"), "invalid_value"),
    (b"big", BIG, "oversized"),
    (b"\xff\xfe", make_click(3, prefix="poison-bad").to_json(), "bad_key"),
]


def test_each_found_message_is_a_dead_letter_and_the_worker_keeps_deciding(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(stack_settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    reader = DecisionReader(settings)
    try:
        good = [valid(i) for i in range(len(BAD) + 1)]
        # One partition, each bad message between valid clicks: a click after it is decided
        # only if the partition goes on past it.
        sequence: list[tuple[bytes | None, bytes | None]] = [
            (good[0].click_id.encode(), good[0].to_json())
        ]
        for (key, value, _), click in zip(BAD, good[1:], strict=True):
            sequence += [(key, value), (click.click_id.encode(), click.to_json())]
        produce_messages(settings, sequence)

        decided = reader.wait_for(c.click_id for c in good)
        letters = read_raw(settings, settings.topics.dead_letters, len(BAD))
        time.sleep(2)  # a worker that was about to die on one of them would be gone by now
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    finally:
        reader.close()
        worker.stop()

    assert decided.keys() == {c.click_id for c in good}, worker.log()
    assert not any(d["click_id"].startswith("poison-bad") for d in reader.seen.values())
    assert all(len(raw) <= DEAD_LETTER_MAX_BYTES for raw in letters)
    dead = {d.original_key: d for d in (DeadLetter.model_validate_json(r) for r in letters)}
    expected = {key.decode(errors="replace"): reason for key, _, reason in BAD}
    assert {k: d.reason for k, d in dead.items()} == expected, worker.log()
    big = dead["big"]
    assert big.original_size == len(BIG) and big.truncated
    assert big.original_sha256 == hashlib.sha256(BIG).hexdigest()
