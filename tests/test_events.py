"""Untrusted upstream bytes become a typed model or a typed, routable error."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson
import pytest
from pydantic import BaseModel, field_validator

from slidr import events
from slidr.errors import InvalidEvent
from slidr.events import (
    DEAD_LETTER_EXCERPT_BYTES,
    DEAD_LETTER_MAX_BYTES,
    Click,
    DeadLetter,
    DeadLetterReason,
    Decision,
    DeviceType,
    Platform,
    Purchase,
    decode_object,
    parse_click,
    parse_click_message,
    parse_purchase,
    validate,
)
from slidr.settings import PROJECT_ROOT, EventLimits
from slidr.slices import slice_of
from tests.decisions import decision_fields

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LIMITS = EventLimits()


def click(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "click_id": "c-1",
        "event_time": "2026-11-21T11:59:00Z",
        "session_id": "s-1",
        "customer_id": "u-1",
        "logged_in": True,
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0",
        "device_type": "desktop",
        "platform": "windows",
        "marketplace": "US",
        "ad_id": "a-1",
        "campaign_id": "k-1",
        "advertiser_id": "v-1",
    }
    event.update(overrides)
    return event


def reason(payload: bytes) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_click(payload, LIMITS, now=NOW)
    return info.value.reason


def test_a_valid_click_round_trips() -> None:
    parsed = parse_click(orjson.dumps(click()), LIMITS, now=NOW)
    assert parsed.event_time == datetime(2026, 11, 21, 11, 59, tzinfo=UTC)
    assert parse_click(parsed.to_json(), LIMITS, now=NOW) == parsed


def test_offsets_are_normalised_to_utc() -> None:
    parsed = parse_click(orjson.dumps(click(event_time="2026-11-21T12:59:00+01:00")), LIMITS, NOW)
    assert parsed.event_time.tzinfo == UTC and parsed.event_time.hour == 11


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", DeadLetterReason.MALFORMED_JSON),
        (b"[1, 2]", DeadLetterReason.NOT_AN_OBJECT),
        (b"x" * (LIMITS.max_event_bytes + 1), DeadLetterReason.OVERSIZED),
        (orjson.dumps(click(schema_version=2)), DeadLetterReason.UNSUPPORTED_VERSION),
        (orjson.dumps({k: v for k, v in click().items() if k != "ip"}), "missing_field"),
        (orjson.dumps(click(logged_in="maybe")), DeadLetterReason.WRONG_TYPE),
        (orjson.dumps(click(event_time="yesterday")), DeadLetterReason.WRONG_TYPE),
        (orjson.dumps(click(device_type="fridge")), DeadLetterReason.UNKNOWN_ENUM),
        (orjson.dumps(click(ip="999.1.1.1")), DeadLetterReason.INVALID_VALUE),
        (orjson.dumps(click(customer_id=None)), DeadLetterReason.INVALID_VALUE),
        (orjson.dumps(click(is_bot=True)), DeadLetterReason.INVALID_VALUE),
        (orjson.dumps(click(event_time="2026-11-21T11:59:00")), DeadLetterReason.INVALID_VALUE),
        (orjson.dumps(click(event_time="2026-11-21T13:00:00Z")), "too_far_in_future"),
        (orjson.dumps(click(event_time="2026-11-01T12:00:00Z")), DeadLetterReason.TOO_OLD),
    ],
)
def test_bad_clicks_get_a_stable_reason(payload: bytes, expected: str) -> None:
    assert reason(payload) == expected


def without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


def first(*pairs: tuple[str, Any]) -> bytes:
    """The click with these fields written first, in this order (JSON keeps the order)."""
    return orjson.dumps({**dict(pairs), **click()} | dict(pairs))


GOOD = orjson.dumps(click())


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # Several errors: the first in the contract's field order names the reason, wherever
        # each sits in the document, and unknown fields come after the contract's own.
        (orjson.dumps(without(click(ip="x"), "click_id")), "missing_field"),
        (orjson.dumps(click(ip="x", device_type="tv")), "invalid_value"),
        (first(("device_type", "tv"), ("ip", "x")), "invalid_value"),
        (orjson.dumps({"is_bot": True, **without(click(), "ip")}), "missing_field"),
        (first(("is_bot", True), ("device_type", "tv")), "unknown_enum"),
        (
            orjson.dumps({**without(click(event_time="x"), "schema_version"), "schema_version": 2}),
            "unsupported_version",
        ),
        (
            orjson.dumps(click(event_time="0001-01-01T00:00:00+01:00", device_type="tv")),
            "invalid_value",
        ),
        (orjson.dumps(click(customer_id=None, ip="x")), "invalid_value"),
        (b"{}", "missing_field"),
        # The whole document must be JSON, even after a field the decoder refuses first.
        (b'{"device_type": "fridge", "click_id": ', "malformed_json"),
        (b'{"is_bot": true, "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", "malformed_json"),
        (b"[" * 4000 + b"]" * 4000, "malformed_json"),
        (GOOD.replace(b'"c-1"', b'"c-\xff"'), "malformed_json"),
        (GOOD.replace(b'"c-1"', b'"c-\\ud800"'), "malformed_json"),
        (b"\xef\xbb\xbf" + GOOD, "malformed_json"),
        (GOOD[:-1] + b',"placement":NaN}', "malformed_json"),
        (GOOD.replace(b'"schema_version":1', b'"schema_version":1e400'), "malformed_json"),
        (
            GOOD.replace(b'"schema_version":1', b'"schema_version":' + b"9" * 30),
            "unsupported_version",
        ),
        (GOOD + GOOD, "malformed_json"),
        (b"null", "not_an_object"),
        # A key twice is refused as such, whatever else is wrong in the object.
        (GOOD[:-1] + b',"device_type":"fridge"}', "duplicate_key"),
        (b'{"ip": "x", "ip": "y"}', "duplicate_key"),
        (b'{"is_bot": 1, "is_bot": 2, "x": [' + b"[" * 500 + b"]" * 500 + b"]}", "duplicate_key"),
        # A date, or a time without offset, is a time missing its offset.
        (orjson.dumps(click(event_time="2026-11-21")), "invalid_value"),
        (orjson.dumps(click(event_time="2026-11-21T11:59")), "invalid_value"),
        (orjson.dumps(click(event_time="2026-11-21T11:59:60Z")), "wrong_type"),
        # No coercion: what the JSON Schema refuses, the parser refuses.
        (orjson.dumps(click(logged_in=1)), "wrong_type"),
        (orjson.dumps(click(logged_in="true")), "wrong_type"),
        (orjson.dumps(click(event_time=1763726340)), "wrong_type"),
        (orjson.dumps(click(schema_version=True)), "unsupported_version"),
        (orjson.dumps(click(schema_version=1.0)), "unsupported_version"),
        (orjson.dumps(click(device_type=5)), "unknown_enum"),
        (orjson.dumps(click(click_id=5)), "wrong_type"),
    ],
)
def test_a_reason_depends_on_the_error_not_on_the_decoder(payload: bytes, expected: str) -> None:
    assert reason(payload) == expected


# Each way to write a key twice; the last value is always valid, so only the duplicate is wrong.
DUPLICATES = {
    "same value, at the end": GOOD[:-1] + b',"ad_id":"a-1"}',
    "another value, first": b'{"click_id":"c-0",' + GOOD[1:],
    "a boolean": GOOD[:-1] + b',"logged_in":true}',
    "schema_version absent, a key twice": orjson.dumps(without(click(), "schema_version"))[:-1]
    + b',"ad_id":"a-1"}',
    "placement null twice": GOOD[:-1] + b',"placement":null,"placement":null}',
    "placement null then text": GOOD[:-1] + b',"placement":null,"placement":"x"}',
    "escaped key": b'{"ad\\u005fid":"a-0",' + GOOD[1:],
    "spaces around the colon": GOOD.replace(b'"ad_id":', b'"ad_id" : "a-0", "ad_id" :'),
    "an escaped quote elsewhere": GOOD.replace(b'"Mozilla/5.0"', b'"Mozilla \\"5\\""')[:-1]
    + b',"ad_id":"a-1"}',
}


@pytest.mark.parametrize("payload", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_a_key_twice_is_refused(payload: bytes) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_click(payload, LIMITS, now=NOW)
    assert info.value.reason == DeadLetterReason.DUPLICATE_KEY
    assert "is there twice" in info.value.detail


def test_a_purchase_with_a_key_twice_is_refused() -> None:
    purchase = orjson.dumps(PURCHASE)
    assert parse_purchase(purchase, LIMITS, NOW).purchase_id == "p-1"
    with pytest.raises(InvalidEvent) as info:
        parse_purchase(purchase[:-1] + b',"amount":1.0}', LIMITS, NOW)
    assert info.value.reason == DeadLetterReason.DUPLICATE_KEY


def test_nested_keys_may_repeat_only_top_level_ones_count() -> None:
    # An unknown field holding an object with a key twice is an unknown field, not a duplicate.
    payload = GOOD[:-1] + b',"extra":{"a":1,"a":2,"b":[{"a":3}]}}'
    assert reason(payload) == DeadLetterReason.INVALID_VALUE
    assert events._duplicate_key(b'{"a":{"a":{"a":1}},"b":"a"}') is None


def spelt(key: str, rng: random.Random) -> str:
    """``key`` as JSON, now and then with escapes (``"ad\\u005fid"`` is ``"ad_id"``)."""
    if rng.random() < 0.9:
        return orjson.dumps(key).decode()
    return '"' + "".join(f"\\u{ord(c):04x}" if rng.random() < 0.3 else c for c in key) + '"'


def _random_object(rng: random.Random, model: str) -> tuple[bytes, bool]:
    """A valid event's JSON written in one of several styles, maybe with a key twice: its
    bytes and whether a key is there twice."""
    event: dict[str, Any] = click() if model == "click" else dict(PURCHASE)
    if model == "click":
        if rng.random() < 0.5:
            event["placement"] = rng.choice([None, "shoes", 'say "hi"', "a:b"])
        if rng.random() < 0.3:
            event["customer_id"], event["logged_in"] = None, False
    else:
        event["click_id"] = rng.choice([None, "c-1"])
    if rng.random() < 0.3:
        del event["schema_version"]
    pairs = list(event.items())
    rng.shuffle(pairs)
    twice = rng.random() < 0.5
    if twice:
        pairs.insert(rng.randrange(len(pairs) + 1), rng.choice(pairs))
    colon, comma = rng.choice([(":", ","), (": ", ", "), (" : ", " , "), (":\n", ",\n")])
    body = comma.join(spelt(k, rng) + colon + orjson.dumps(v).decode() for k, v in pairs)
    return ("{" + body + "}").encode(), twice


@pytest.mark.parametrize("model", ["click", "purchase"])
def test_the_cheap_duplicate_test_misses_none_and_rarely_calls_the_exact_one(model: str) -> None:
    rng = random.Random(17)
    struct = Click if model == "click" else Purchase
    decoder = msgspec.json.Decoder(struct)
    shape = events._key_shape(struct)
    slow = 0
    for _ in range(3000):
        payload, twice = _random_object(rng, model)
        event = decoder.decode(payload)
        suspect = events._may_hold_duplicate(shape, event, payload)
        if isinstance(event, Click):
            assert events._click_may_hold_duplicate(event, payload) == suspect, payload
        assert (events._duplicate_key(payload) is not None) == twice, payload
        assert suspect or not twice, payload
        # Without a key twice, JSON with no space before a colon and no escape never takes
        # the slow parse: what slidr's encoders and most others write.
        if not twice and b'" :' not in payload and b"\\" not in payload:
            assert not suspect, payload
        slow += suspect and not twice
    assert slow < 1000


def test_each_refused_field_is_named() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_click(orjson.dumps(without(click(ip="x", is_bot=1), "ad_id")), LIMITS, now=NOW)
    named = [part.split()[0] for part in info.value.detail.split("; ")]
    assert named == ["ip:", "ad_id:", "is_bot:"]


PURCHASE: dict[str, Any] = {
    "schema_version": 1,
    "purchase_id": "p-1",
    "click_id": "c-1",
    "session_id": "s-1",
    "customer_id": None,
    "amount": 12.5,
    "currency": "USD",
    "event_time": "2026-11-21T11:55:00Z",
}


def test_a_purchase_refuses_an_amount_in_a_string() -> None:
    purchase = {
        "purchase_id": "p-1",
        "click_id": None,
        "session_id": "s-1",
        "customer_id": None,
        "amount": "12.5",
        "currency": "USD",
        "event_time": "2026-11-21T11:55:00Z",
    }
    with pytest.raises(InvalidEvent) as info:
        parse_purchase(orjson.dumps(purchase), LIMITS, NOW)
    assert info.value.reason == "wrong_type" and "amount" in info.value.detail


def reference_ip(text: str) -> str | None:
    """What the contract makes of an IP, by ipaddress alone: no zone id, an IPv4-mapped IPv6
    as its IPv4, else as ipaddress writes it."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


@pytest.mark.parametrize(
    "text",
    [
        "198.51.100.7",
        "0.0.0.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.1.1.1",
        "1.1.1",
        "1.1.1.1\n",
        " 1.1.1.1",
        "\u0663.1.1.1",
        "2001:DB8::1",
        "::ffff:1.2.3.4",
        "::FFFF:102:304",
        "::ffff:0:1",
        "::ffff:01.2.3.4",
        "::ffff:1.2.3.4.5",
        "::1.2.3.4",
        "fe80::1%eth0",
        "::ffff:1.2.3.4%1",
        "",
        "x",
    ],
)
def test_the_ip_short_cut_agrees_with_the_contract(text: str) -> None:
    assert ip_or_none(events._ip, text) == reference_ip(text)


def ip_or_none(normalise: Callable[[str], object], text: str) -> str | None:
    try:
        return str(normalise(text))
    except ValueError:
        return None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:C000:0201", "192.0.2.1"),
        ("0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "invalid_value"),
        ("fe80::1%25eth0", "invalid_value"),
        ("2001:DB8::1", "2001:db8::1"),
    ],
)
def test_an_ip_has_one_text_and_no_zone(text: str, expected: str) -> None:
    try:
        got = parse_click(orjson.dumps(click(ip=text)), LIMITS, now=NOW).ip
    except InvalidEvent as exc:
        got = exc.reason
    assert got == expected


def test_the_ipv6_short_cut_agrees_with_ipaddress() -> None:
    # The short cut relies on inet_ntop writing what ipaddress writes: random addresses with
    # runs of zero groups (ties, ends, all zero, IPv4-mapped), each written several ways.
    rng = random.Random(7)
    for _ in range(2000):
        groups = [rng.choice([0, 0, 1, 0xFFFF, rng.randrange(0x10000)]) for _ in range(8)]
        address = ipaddress.IPv6Address(sum(g << 16 * (7 - i) for i, g in enumerate(groups)))
        full = address.exploded
        for text in (
            str(address),
            full,
            full.upper(),
            ":".join(g.lstrip("0") or "0" for g in full.split(":")),
        ):
            assert ip_or_none(events._ip, text) == reference_ip(str(address)), text


def test_a_click_built_in_code_is_normalised_and_checked_as_a_parsed_one() -> None:
    plus_one = timezone(timedelta(hours=1))
    built = Click(
        **{**orjson.loads(GOOD), "event_time": datetime(2026, 11, 21, 12, 59, tzinfo=plus_one)}
        | {"ip": "2001:DB8::1", "device_type": DeviceType.DESKTOP, "platform": Platform.WINDOWS}
    )
    assert built.ip == "2001:db8::1" and built.event_time.tzinfo is UTC
    assert built.event_time == datetime(2026, 11, 21, 11, 59, tzinfo=UTC)
    with pytest.raises(ValueError, match="logged_in"):
        msgspec.structs.replace(built, customer_id=None)
    with pytest.raises(ValueError, match="UTC offset"):
        msgspec.structs.replace(built, event_time=datetime(2026, 11, 21))


def test_a_bug_in_a_field_rule_is_a_refusal_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(value: str) -> str:
        raise RuntimeError("a bug in a rule")

    monkeypatch.setattr(events, "_ip", boom)
    with pytest.raises(InvalidEvent) as info:
        parse_click(GOOD, LIMITS, now=NOW)
    assert info.value.reason == DeadLetterReason.PARSE_FAILED
    assert info.value.detail == "RuntimeError: a bug in a rule"


def test_error_detail_names_the_field() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_click(orjson.dumps(click(device_type="fridge")), LIMITS, now=NOW)
    assert "device_type" in info.value.detail


def test_purchase_validates_amount() -> None:
    purchase = {**PURCHASE, "event_time": (NOW - timedelta(minutes=5)).isoformat()}
    assert isinstance(parse_purchase(orjson.dumps(purchase), LIMITS, NOW), Purchase)
    with pytest.raises(InvalidEvent):
        parse_purchase(orjson.dumps({**purchase, "amount": -1}), LIMITS, NOW)


def test_slices_cover_device_and_login() -> None:
    assert slice_of("app", True) == "app/in"
    all_slices = [slice_of(d, li) for d in DeviceType for li in (False, True)]
    assert len(all_slices) == 6 and len(set(all_slices)) == 6
    assert set(Click.__struct_fields__).isdisjoint({"is_bot", "bot_kind"})


# A time at either end of the calendar that no UTC datetime holds: astimezone() overflows.
OVERFLOWING_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


def message_reason(value: bytes | None, key: bytes | None = b"c-1") -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_click_message(value, key, LIMITS, now=NOW)
    return info.value.reason


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        (None, b"c-1", DeadLetterReason.TOMBSTONE),
        (None, None, DeadLetterReason.TOMBSTONE),
        (orjson.dumps(click(event_time=OVERFLOWING_TIMES[0])), b"c-1", "invalid_value"),
        (orjson.dumps(click(event_time=OVERFLOWING_TIMES[1])), b"c-1", "invalid_value"),
        (b"{" + b" " * 900_000 + b"}", b"c-1", DeadLetterReason.OVERSIZED),
        (orjson.dumps(click()), b"\xff\xfe", DeadLetterReason.BAD_KEY),
        (orjson.dumps(click()), b"c" * (LIMITS.max_key_bytes + 1), DeadLetterReason.BAD_KEY),
    ],
    ids=[
        "tombstone",
        "tombstone-no-key",
        "year-1",
        "year-9999",
        "900kb",
        "key-not-utf8",
        "long-key",
    ],
)
def test_every_bad_message_is_refused_with_a_reason(
    value: bytes | None, key: bytes | None, expected: str
) -> None:
    assert message_reason(value, key) == expected


def test_a_click_keyed_by_its_click_id_or_not_keyed_is_accepted() -> None:
    payload = orjson.dumps(click(click_id="clé-1"))
    assert parse_click_message(payload, "clé-1".encode(), LIMITS, now=NOW).click_id == "clé-1"
    assert parse_click_message(payload, None, LIMITS, now=NOW).click_id == "clé-1"


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        (orjson.dumps(click()), b"c-2", DeadLetterReason.KEY_MISMATCH),
        (orjson.dumps(click()), b"", DeadLetterReason.KEY_MISMATCH),
        (orjson.dumps(click()), b"c-1 ", DeadLetterReason.KEY_MISMATCH),
        (orjson.dumps(click(click_id="clé")), "cle\u0301".encode(), DeadLetterReason.KEY_MISMATCH),
        # The value is judged before the key is compared with it; a broken key before both.
        (orjson.dumps(click(device_type="tv")), b"c-2", DeadLetterReason.UNKNOWN_ENUM),
        (None, b"c-2", DeadLetterReason.TOMBSTONE),
        (orjson.dumps(click()) + b"x", b"c-2", DeadLetterReason.MALFORMED_JSON),
        (None, b"\xff", DeadLetterReason.BAD_KEY),
    ],
    ids=[
        "other",
        "empty",
        "trailing-space",
        "unnormalised",
        "bad-value",
        "tombstone",
        "json",
        "bad-key",
    ],
)
def test_a_key_that_is_not_the_click_id_is_refused(
    value: bytes | None, key: bytes, expected: str
) -> None:
    assert message_reason(value, key) == expected


def test_a_key_mismatch_names_both() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_click_message(orjson.dumps(click()), b"c-2", LIMITS, now=NOW)
    assert "'c-2'" in info.value.detail and "'c-1'" in info.value.detail


CLICK_IDS = ["click_id", "session_id", "customer_id", "ad_id", "campaign_id", "advertiser_id"]
BAD_IDS = [
    "c\x00",
    "\x00",
    "c\n1",
    "\t",
    "c\x7f",
    "c\x85",
    " ",
    "   ",
    "\u00a0",
    "\u3000 ",
    "\ufeff",
]


@pytest.mark.parametrize("field", CLICK_IDS)
@pytest.mark.parametrize("text", BAD_IDS, ids=ascii)
def test_an_id_with_a_control_character_or_only_whitespace_is_refused(
    field: str, text: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_click(orjson.dumps(click(**{field: text})), LIMITS, now=NOW)
    assert info.value.reason == DeadLetterReason.INVALID_VALUE
    assert info.value.detail.startswith(f"{field}: ")


@pytest.mark.parametrize("field", ["purchase_id", "click_id", "session_id", "customer_id"])
def test_a_purchase_id_with_a_control_character_is_refused(field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_purchase(orjson.dumps({**PURCHASE, field: "p\x00"}), LIMITS, NOW)
    assert info.value.reason == DeadLetterReason.INVALID_VALUE
    assert info.value.detail.startswith(f"{field}: ")


@pytest.mark.parametrize(
    "text", ["a b", " c-1", "clé-1", "\u00a0x", "日本-1", "c\u200d1"], ids=ascii
)
def test_ids_with_spaces_inside_or_any_printable_letter_are_accepted(text: str) -> None:
    parsed = parse_click(orjson.dumps(click(click_id=text, session_id=text)), LIMITS, now=NOW)
    assert parsed.click_id == parsed.session_id == text


def test_a_click_built_in_code_checks_its_ids() -> None:
    built = parse_click(GOOD, LIMITS, now=NOW)
    with pytest.raises(ValueError, match=r"ad_id: .* control character"):
        msgspec.structs.replace(built, ad_id="a\x00")


def test_an_overflowing_time_names_the_field() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_click(orjson.dumps(click(event_time=OVERFLOWING_TIMES[0])), LIMITS, now=NOW)
    assert "event_time" in info.value.detail and "1 to 9999" in info.value.detail


def reason_at(payload: bytes, now: datetime) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_click(payload, LIMITS, now=now)
    return info.value.reason


def test_a_clock_at_the_end_of_time_refuses_instead_of_overflowing() -> None:
    # A replay judges a click by its message timestamp, which a producer can set to anything.
    end = datetime.max.replace(tzinfo=UTC)
    assert reason_at(orjson.dumps(click()), end) == DeadLetterReason.TOO_OLD
    start = datetime.min.replace(tzinfo=UTC)
    assert reason_at(orjson.dumps(click()), start) == DeadLetterReason.TOO_FAR_IN_FUTURE


def test_a_decision_with_an_overflowing_time_is_refused_not_raised() -> None:
    # The archiver reads decisions with the same decoder and validator.
    decision = decision_fields("c-1")
    assert validate(Decision, decode_object(orjson.dumps(decision))).click_id == "c-1"
    late = orjson.dumps({**decision, "decided_at": OVERFLOWING_TIMES[1]})
    with pytest.raises(InvalidEvent) as info:
        validate(Decision, decode_object(late))
    assert info.value.reason == DeadLetterReason.INVALID_VALUE
    assert "decided_at" in info.value.detail


class _Buggy(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def _boom(cls, value: int) -> int:
        raise RuntimeError("a bug in a validator")


def test_an_unforeseen_validator_error_is_a_refusal_naming_it() -> None:
    with pytest.raises(InvalidEvent) as info:
        validate(_Buggy, {"n": 1})
    assert info.value.reason == DeadLetterReason.PARSE_FAILED
    assert "RuntimeError: a bug in a validator" in info.value.detail


def letter(value: bytes | None, key: bytes | None = b"c-1", detail: str = "why") -> DeadLetter:
    return DeadLetter.of(
        DeadLetterReason.OVERSIZED,
        detail,
        source_topic="slidr.clicks",
        source_partition=1,
        source_offset=42,
        key=key,
        value=value,
        received_at=NOW,
    )


def test_a_small_value_is_kept_whole_in_its_dead_letter() -> None:
    value = b"{oops"
    dead = letter(value)
    assert base64.b64decode(dead.original_b64) == value and not dead.truncated
    assert dead.original_size == 5 and dead.original_sha256 == hashlib.sha256(value).hexdigest()
    # Every value the default size limit lets through is kept whole.
    assert LIMITS.max_event_bytes <= DEAD_LETTER_EXCERPT_BYTES


def test_a_900kb_value_gives_a_small_dead_letter_with_its_size_and_hash() -> None:
    value = b"x" * 900_000
    dead = letter(value)
    assert dead.truncated and dead.original_size == 900_000
    assert dead.original_sha256 == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(dead.original_b64) == value[:DEAD_LETTER_EXCERPT_BYTES]
    assert len(dead.to_json()) <= DEAD_LETTER_MAX_BYTES


def test_no_dead_letter_exceeds_the_bound() -> None:
    # The worst case: a huge value, a huge undecodable key, a detail of characters that JSON
    # escapes six bytes each.
    dead = letter(b"\xff" * 5_000_000, key=b"\xff" * 1_000_000, detail="\x00" * 100_000)
    assert len(dead.to_json()) <= DEAD_LETTER_MAX_BYTES
    assert dead.original_key is not None and len(dead.original_key) == 256


def test_a_tombstone_dead_letter_is_empty_and_says_so() -> None:
    dead = letter(None, key=None)
    assert dead.original_b64 == "" and dead.original_size == 0 and dead.original_key is None
    assert not dead.truncated


def test_dead_letters_written_before_the_size_and_hash_still_parse() -> None:
    old = {
        "reason": "malformed_json",
        "detail": "unexpected character",
        "source_topic": "slidr.clicks",
        "source_partition": 0,
        "source_offset": 7,
        "original_key": "bad",
        "original_b64": base64.b64encode(b"{oops").decode(),
        "received_at": "2026-11-21T12:00:00Z",
    }
    dead = DeadLetter.model_validate(old)
    assert dead.original_size is None and not dead.truncated


def test_every_dead_letter_reason_is_documented() -> None:
    table = (PROJECT_ROOT / "docs" / "dead-letters.md").read_text()
    assert [r for r in DeadLetterReason if f"| `{r}` |" not in table] == []
