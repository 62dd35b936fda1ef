"""Untrusted upstream bytes become a typed model or a typed, routable error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from slidr.errors import InvalidEvent
from slidr.events import (
    ALL_SLICES,
    Click,
    DeadLetterReason,
    Purchase,
    parse_click,
    parse_purchase,
    slice_of,
)
from slidr.settings import EventLimits

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


def test_error_detail_names_the_field() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_click(orjson.dumps(click(device_type="fridge")), LIMITS, now=NOW)
    assert "device_type" in info.value.detail


def test_purchase_validates_amount() -> None:
    purchase = {
        "purchase_id": "p-1",
        "click_id": "c-1",
        "session_id": "s-1",
        "customer_id": None,
        "amount": 12.5,
        "currency": "USD",
        "event_time": (NOW - timedelta(minutes=5)).isoformat(),
    }
    assert isinstance(parse_purchase(orjson.dumps(purchase), LIMITS, NOW), Purchase)
    with pytest.raises(InvalidEvent):
        parse_purchase(orjson.dumps({**purchase, "amount": -1}), LIMITS, NOW)


def test_slices_cover_device_and_login() -> None:
    assert slice_of("app", True) == "app/in"
    assert len(ALL_SLICES) == 6 and len(set(ALL_SLICES)) == 6
    assert Click.model_fields.keys().isdisjoint({"is_bot", "bot_kind"})
