"""Issue 17, "Measures: Fuzz": 10,000 malformed clicks (mutations of valid ones: types,
encodings, extremes, duplicate keys, huge values, control characters, tombstones, bad keys)
mixed with valid clicks, through a real ``slidr worker``. The worker never exits, every
malformed message is one dead letter with the reason its mutation calls for, and every valid
click is decided exactly once.

    .venv/bin/pytest -m integration -s tests/test_fuzz_worker.py   # -s prints the summary

The generator is seeded (FUZZ_SEED): a failure names the mutation and reproduces. A unit test
(no network) checks first that the parser gives every generated message its expected reason,
so the integration test measures the worker, not the generator.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer

from slidr.errors import InvalidEvent
from slidr.events import DeadLetter, DeadLetterReason, parse_click_message
from slidr.settings import EventLimits, Settings
from tests.factories import make_click
from tests.worker_harness import WorkerProcess, consume

FUZZ_SEED = 20261121
N_MALFORMED = 10_000
N_VALID = 2_000
LIMITS = EventLimits()

R = DeadLetterReason


@dataclass(frozen=True)
class Fuzzed:
    """One message to produce: what the worker must make of it."""

    kind: str
    key: bytes | None
    value: bytes | None
    #: The dead-letter reason the mutation calls for; None for a valid click.
    reason: DeadLetterReason | None
    #: The click_id of a valid click.
    click_id: str | None = None


Event = dict[str, Any]
#: A mutation: (the event to break, the random source) -> (kind, key change, value, reason).
Mutation = Callable[[Event, random.Random], tuple[str, bytes | None, bytes | None, R]]

KEEP = b"\0keep"  # the mutation keeps the click_id as the key

#: Fields and what a value of another JSON type gives (schema_version: its own code).
FIELD_REASONS = {
    "schema_version": R.UNSUPPORTED_VERSION,
    "device_type": R.UNKNOWN_ENUM,
    "platform": R.UNKNOWN_ENUM,
}
STRING_FIELDS = [
    "event_time",
    "click_id",
    "session_id",
    "customer_id",
    "ip",
    "user_agent",
    "device_type",
    "platform",
    "marketplace",
    "ad_id",
    "campaign_id",
    "advertiser_id",
    "placement",
]
ID_FIELDS = ["click_id", "session_id", "customer_id", "ad_id", "campaign_id", "advertiser_id"]
NON_STRINGS: list[object] = [0, -7, 1.5, True, False, [], {}, [1, "a"], {"a": 1}, 10**30]


def dumps(event: Event) -> bytes:
    # Compact UTF-8 as orjson writes it, but with integers of any size.
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def wrong_type(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    field = rng.choice([*STRING_FIELDS, "logged_in", "schema_version"])
    if field in STRING_FIELDS:
        # null is a value for the nullable fields, and a customer_id the logged_in rule needs.
        pool = NON_STRINGS if field in ("customer_id", "placement") else [*NON_STRINGS, None]
    elif field == "logged_in":
        pool = [None, 0, 1, "true", "yes", "", [], 1.0]
    else:
        pool = [None, "1", True, 1.0, 2, 0, -1, 10**30, [1], {"v": 1}]
    event[field] = rng.choice(pool)
    return f"wrong type: {field}", KEEP, dumps(event), FIELD_REASONS.get(field, R.WRONG_TYPE)


def encoding(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    good = dumps(event)
    ua = event["user_agent"].encode()
    changes: dict[str, tuple[bytes, R]] = {
        "not UTF-8": (good.replace(ua, ua + b"\xff\xfe"), R.MALFORMED_JSON),
        "Latin-1": (good.replace(ua, ua + "é".encode("latin-1")), R.MALFORMED_JSON),
        "overlong UTF-8": (good.replace(ua, ua + b"\xc0\xaf"), R.MALFORMED_JSON),
        "UTF-8 surrogate": (good.replace(ua, ua + b"\xed\xa0\x80"), R.MALFORMED_JSON),
        "escaped lone surrogate": (good.replace(ua, ua + b"\\udc00"), R.MALFORMED_JSON),
        "BOM": (b"\xef\xbb\xbf" + good, R.MALFORMED_JSON),
        "UTF-16": (good.decode().encode("utf-16"), R.MALFORMED_JSON),
        "cut": (good[: rng.randrange(1, len(good) - 1)], R.MALFORMED_JSON),
        "empty": (b"", R.MALFORMED_JSON),
        "NaN": (good[:-1] + b',"placement":NaN}', R.MALFORMED_JSON),
        "trailing comma": (good[:-1] + b",}", R.MALFORMED_JSON),
        "two objects": (good + good, R.MALFORMED_JSON),
        "an array": (b"[" + good + b"]", R.NOT_AN_OBJECT),
        "a string": (orjson.dumps(good.decode()), R.NOT_AN_OBJECT),
        "a number": (b"42", R.NOT_AN_OBJECT),
        "null": (b"null", R.NOT_AN_OBJECT),
    }
    name = rng.choice(list(changes))
    value, reason = changes[name]
    return f"encoding: {name}", KEEP, value, reason


def extreme(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    good = dumps(event)
    year = rng.randrange(2100, 10_000)

    def at(event_time: object) -> bytes:
        return dumps({**event, "event_time": event_time})

    changes: dict[str, tuple[bytes, R]] = {
        "schema_version 9**30": (
            good.replace(b'"schema_version":1', b'"schema_version":' + b"9" * 30),
            R.UNSUPPORTED_VERSION,
        ),
        "schema_version 1e400": (
            good.replace(b'"schema_version":1', b'"schema_version":1e400'),
            R.MALFORMED_JSON,
        ),
        "logged_in -1e400": (
            dumps({**event, "logged_in": 0}).replace(b'"logged_in":0', b'"logged_in":-1e400'),
            R.MALFORMED_JSON,
        ),
        "a huge int id": (dumps({**event, "ad_id": -(10**40)}), R.WRONG_TYPE),
        "year 1 +01:00": (at("0001-01-01T00:00:00+01:00"), R.INVALID_VALUE),
        "year 9999 -01:00": (at("9999-12-31T23:59:59-01:00"), R.INVALID_VALUE),
        "far future": (at(f"{year}-06-01T00:00:00Z"), R.TOO_FAR_IN_FUTURE),
        "end of time": (at("9999-12-31T23:59:59.999999Z"), R.TOO_FAR_IN_FUTURE),
        "far past": (at("1970-01-01T00:00:00Z"), R.TOO_OLD),
        "year 1": (at("0001-01-01T00:00:00Z"), R.TOO_OLD),
        "nanoseconds": (at("1999-12-31T23:59:59.999999999Z"), R.TOO_OLD),
        "year 10000": (at("10000-01-01T00:00:00Z"), R.WRONG_TYPE),
        "month 13": (at("2026-13-01T00:00:00Z"), R.WRONG_TYPE),
        "no offset": (at("2026-11-21T10:00:00"), R.INVALID_VALUE),
        "a unix time": (at(1763726340), R.WRONG_TYPE),
        "an empty ad_id": (dumps({**event, "ad_id": ""}), R.INVALID_VALUE),
        "a 129-char id": (dumps({**event, "session_id": "s" * 129}), R.INVALID_VALUE),
        "a 9-char marketplace": (dumps({**event, "marketplace": "X" * 9}), R.INVALID_VALUE),
        "a 2,000-char user agent": (dumps({**event, "user_agent": "M" * 2000}), R.INVALID_VALUE),
    }
    name = rng.choice(list(changes))
    value, reason = changes[name]
    return f"extreme: {name}", KEEP, value, reason


def duplicate(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    good = dumps(event)
    field = rng.choice(list(event))
    again = orjson.dumps(field) + b":" + orjson.dumps(event[field])
    style = rng.choice(["last", "first", "escaped", "spaced", "other value"])
    if style == "last":
        value = good[:-1] + b"," + again + b"}"
    elif style == "first":
        value = b"{" + again + b"," + good[1:]
    elif style == "escaped":
        name = "".join(f"\\u{ord(c):04x}" if c == "_" or rng.random() < 0.2 else c for c in field)
        value = good[:-1] + b',"' + name.encode() + b'":' + orjson.dumps(event[field]) + b"}"
    elif style == "spaced":
        value = good[:-1] + b' , "' + field.encode() + b'" :\n' + orjson.dumps(event[field]) + b"}"
    else:
        value = good[:-1] + b"," + orjson.dumps(field) + b':"x"}'
    return f"duplicate key: {style}", KEEP, value, R.DUPLICATE_KEY


def huge(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    size = rng.choice([LIMITS.max_event_bytes + 1, 9_000, 16_000, 64_000])
    padded = dumps({**event, "placement": "p" * size})
    return f"huge: {size // 1000} KB", KEEP, padded, R.OVERSIZED


def control(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    field = rng.choice([f for f in ID_FIELDS if event[f] is not None])
    bad = rng.choice(["\x00", "\n", "\t", "\x1b", "\x7f", "\x85", "\x9f"])
    if rng.random() < 0.3:
        text, what = rng.choice([" ", "   ", "\u00a0", "\u3000", "\ufeff", "\t "]), "whitespace"
    else:
        at = rng.randrange(len(event[field]) + 1)
        text, what = event[field][:at] + bad + event[field][at:], f"U+{ord(bad):04X}"
    event[field] = text
    return f"control: {what} in an id", KEEP, dumps(event), R.INVALID_VALUE


def contract(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    name = rng.choice(["missing", "unknown field", "enum", "ip", "zone id", "logged_in", "v2"])
    if name == "missing":
        del event[rng.choice([f for f in event if f not in ("schema_version", "placement")])]
        return "contract: a missing field", KEEP, dumps(event), R.MISSING_FIELD
    if name == "unknown field":
        event[rng.choice(["is_bot", "extra", "Click_ID"])] = rng.choice([True, 1, "x", None])
        return "contract: an unknown field", KEEP, dumps(event), R.INVALID_VALUE
    if name == "enum":
        event[rng.choice(["device_type", "platform"])] = rng.choice(["tv", "Desktop", ""])
        return "contract: an unknown enum", KEEP, dumps(event), R.UNKNOWN_ENUM
    if name == "ip":
        event["ip"] = rng.choice(["999.1.1.1", "1.2.3", "::g", "", "01.2.3.4", "1.2.3.4 "])
        return "contract: an IP that is not one", KEEP, dumps(event), R.INVALID_VALUE
    if name == "zone id":
        event["ip"] = rng.choice(["fe80::1%eth0", "fe80::1%1", "::ffff:192.0.2.1%x"])
        return "contract: an IPv6 zone id", KEEP, dumps(event), R.INVALID_VALUE
    if name == "logged_in":
        event["logged_in"] = not event["logged_in"]
        return "contract: logged_in without a customer", KEEP, dumps(event), R.INVALID_VALUE
    event["schema_version"] = 2
    return "contract: schema_version 2", KEEP, dumps(event), R.UNSUPPORTED_VERSION


def message(event: Event, rng: random.Random) -> tuple[str, bytes | None, bytes | None, R]:
    good, click_id = dumps(event), event["click_id"].encode()
    out: dict[str, tuple[bytes | None, bytes | None, R]] = {
        "tombstone": (click_id, None, R.TOMBSTONE),
        "keyless tombstone": (None, None, R.TOMBSTONE),
        "key not UTF-8": (click_id + b"\xff", good, R.BAD_KEY),
        "key too long": (b"k" * (LIMITS.max_key_bytes + 1), good, R.BAD_KEY),
        "tombstone, bad key": (b"\xc3\x28", None, R.BAD_KEY),
        "other click's key": (b"fz-other-" + click_id, good, R.KEY_MISMATCH),
        "key with a NUL": (click_id + b"\x00", good, R.KEY_MISMATCH),
        "empty key": (b"", good, R.KEY_MISMATCH),
    }
    name = rng.choice(list(out))
    key, value, reason = out[name]
    return f"message: {name}", key, value, reason


#: Each mutation and how often it is drawn.
MUTATIONS: dict[Mutation, int] = {
    wrong_type: 3,
    encoding: 2,
    extreme: 2,
    duplicate: 2,
    huge: 1,
    control: 2,
    contract: 2,
    message: 2,
}


def base_event(i: int, now: datetime, rng: random.Random, prefix: str) -> Event:
    customer = f"u-{i % 97}" if rng.random() < 0.4 else None
    at = now - timedelta(minutes=5, seconds=rng.randrange(600))
    click = make_click(i, prefix=prefix, at=at, session=f"s-{i % 313}", customer=customer)
    event: Event = orjson.loads(click.to_json())
    event["ip"] = f"198.51.{i % 7}.{i % 251}"
    event["placement"] = rng.choice([None, "shoes", "usb c cable"])
    return event


def valid(i: int, now: datetime, rng: random.Random) -> Fuzzed:
    """A valid click, written in one of the ways the contract allows."""
    event = base_event(i, now, rng, "fz-ok")
    click_id = event["click_id"]
    style = rng.choice(["plain", "mapped IP", "no schema_version", "spaced", "no key", "ipv6"])
    if style == "mapped IP":
        event["ip"] = f"::ffff:198.51.{i % 7}.{i % 251}"
    elif style == "no schema_version":
        del event["schema_version"]
    elif style == "ipv6":
        event["ip"] = f"2001:DB8::{i:x}"
    # json.dumps writes ", " and ": " between items.
    value = json.dumps(event).encode() if style == "spaced" else orjson.dumps(event)
    key = None if style == "no key" else click_id.encode()
    return Fuzzed(f"valid: {style}", key, value, None, click_id)


def generate(seed: int, now: datetime) -> list[Fuzzed]:
    """N_MALFORMED malformed and N_VALID valid messages, shuffled, and one near 1 MB."""
    rng = random.Random(seed)
    mutations = list(MUTATIONS)
    weights = list(MUTATIONS.values())
    out = [valid(i, now, rng) for i in range(N_VALID)]
    for i in range(N_MALFORMED - 1):
        event = base_event(i, now, rng, "fz-bad")
        click_id = event["click_id"].encode()
        mutation = rng.choices(mutations, weights)[0]
        kind, key, value, reason = mutation(event, rng)
        out.append(Fuzzed(kind, click_id if key == KEEP else key, value, reason))
    near_1mb = orjson.dumps({**base_event(N_MALFORMED, now, rng, "fz-bad"), "x": "y" * 990_000})
    out.append(Fuzzed("huge: 990 KB", b"fz-bad-1mb", near_1mb, R.OVERSIZED))
    rng.shuffle(out)
    return out


def test_the_parser_gives_each_generated_message_its_expected_reason() -> None:
    """No network: the generator's expectations are the contract's, so the integration test
    below measures the worker."""
    now = datetime.now(UTC)
    wrong = []
    for fuzzed in generate(FUZZ_SEED, now):
        try:
            parse_click_message(fuzzed.value, fuzzed.key, LIMITS, now)
            got: str | None = None
        except InvalidEvent as exc:
            got = exc.reason
        if got != fuzzed.reason:
            wrong.append((fuzzed.kind, got, fuzzed.reason, fuzzed.key, (fuzzed.value or b"")[:300]))
    assert wrong == []


def produce_all(settings: Settings, messages: list[Fuzzed]) -> dict[tuple[int, int], Fuzzed]:
    """Produce in bulk; each message by the (partition, offset) Kafka gave it."""
    placed: dict[tuple[int, int], Fuzzed] = {}
    failed: list[str] = []

    def delivered(fuzzed: Fuzzed, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(f"{fuzzed.kind}: {err}")
        else:
            placed[(msg.partition(), msg.offset())] = fuzzed  # type: ignore[index]

    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap, "linger.ms": 20, "acks": "all"}
    )
    for fuzzed in messages:
        while True:
            try:
                producer.produce(
                    settings.topics.clicks,
                    fuzzed.value,
                    fuzzed.key,
                    on_delivery=partial(delivered, fuzzed),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failed == []
    assert len(placed) == len(messages)
    return placed


@pytest.mark.integration
def test_a_worker_survives_10000_malformed_clicks_and_decides_every_valid_one(
    worker_settings: Settings, worker: WorkerProcess
) -> None:
    started = time.monotonic()
    messages = generate(FUZZ_SEED, datetime.now(UTC))
    placed = produce_all(worker_settings, messages)
    produced_s = time.monotonic() - started
    malformed = {at: f for at, f in placed.items() if f.reason is not None}
    good = {f.click_id for f in placed.values() if f.click_id is not None}

    letters = consume(
        worker_settings, worker_settings.topics.dead_letters, len(malformed), 170, settle_s=2
    )
    decisions = consume(worker_settings, worker_settings.topics.decisions, len(good), 60, 3)
    elapsed_s = time.monotonic() - started
    exit_code = worker.proc.poll() if worker.proc is not None else "gone"

    dead = [DeadLetter.model_validate(d) for d in letters]
    by_offset = Counter((d.source_partition, d.source_offset) for d in dead)
    decided = Counter(d["click_id"] for d in decisions)
    mismatched = [
        (malformed[at].kind, d.reason, malformed[at].reason, d.detail)
        for d in dead
        if (at := (d.source_partition or 0, d.source_offset or 0)) in malformed
        and d.reason != malformed[at].reason
    ]
    summary(malformed, dead, decided, good, exit_code, produced_s, elapsed_s)

    assert exit_code is None, worker.log()
    assert set(by_offset) == set(malformed), "a malformed message without a dead letter"
    assert max(by_offset.values()) == 1, "a malformed message with two dead letters"
    assert all(d.reason in DeadLetterReason for d in dead)
    assert mismatched == [], mismatched[:20]
    assert set(decided) == good, f"{len(good - set(decided))} valid clicks undecided"
    assert max(decided.values()) == 1, "a valid click decided twice"


def summary(
    malformed: dict[tuple[int, int], Fuzzed],
    dead: list[DeadLetter],
    decided: Counter[str],
    good: set[str],
    exit_code: object,
    produced_s: float,
    elapsed_s: float,
) -> None:
    """The table docs/dead-letters.md quotes (pytest -s shows it)."""
    expected = Counter(str(f.reason) for f in malformed.values())
    got = Counter(str(d.reason) for d in dead)
    print(f"\nfuzz: seed {FUZZ_SEED}, {len(malformed):,} malformed + {len(good):,} valid clicks")
    print(f"{'reason':<20} {'expected':>9} {'dead letters':>13}")
    for reason in sorted(expected | got, key=lambda r: -expected[r]):
        print(f"{reason:<20} {expected[reason]:>9,} {got[reason]:>13,}")
    print(f"{'total':<20} {sum(expected.values()):>9,} {sum(got.values()):>13,}")
    print(f"worker exit code: {exit_code} (None: still running)")
    print(
        f"valid clicks decided: {len(set(decided) & good):,} of {len(good):,}, "
        f"decided twice: {sum(1 for n in decided.values() if n > 1)}"
    )
    print(f"produced in {produced_s:.1f} s, all read back {elapsed_s:.1f} s after the start")
