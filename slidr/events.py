"""Versioned JSON contracts of the events slidr reads and writes.

Upstream events are untrusted: :func:`parse_click` and :func:`parse_purchase` turn any bytes
into a model or raise :class:`~slidr.errors.InvalidEvent` with a stable ``reason`` code, which
the pipeline uses to route the original bytes to the dead-letter topic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from slidr.errors import InvalidEvent
from slidr.settings import EventLimits

SCHEMA_VERSION: Literal[1] = 1


class DeviceType(StrEnum):
    DESKTOP = "desktop"
    MOBILE_WEB = "mobile_web"
    APP = "app"


class Platform(StrEnum):
    WINDOWS = "windows"
    MACOS = "macos"
    LINUX = "linux"
    IOS = "ios"
    ANDROID = "android"
    OTHER = "other"


class Verdict(StrEnum):
    VALID = "valid"
    INVALID = "invalid"


class DeadLetterReason(StrEnum):
    """Stable codes: dashboards and the dead-letter counter are keyed by these."""

    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_ENUM = "unknown_enum"
    INVALID_VALUE = "invalid_value"
    TOO_FAR_IN_FUTURE = "too_far_in_future"
    TOO_OLD = "too_old"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("event_time needs a UTC offset, e.g. 2026-11-21T10:00:00Z")
    return value.astimezone(UTC)


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


UtcTime = Annotated[datetime, AfterValidator(_utc)]
Id = Annotated[str, Field(min_length=1, max_length=128)]
IpAddress = Annotated[str, Field(max_length=45), AfterValidator(_ip)]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_time: UtcTime

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class Click(_Event):
    """One ad click, as published by the click loggers to the clicks topic (key: click_id)."""

    click_id: Id
    session_id: Id
    customer_id: Id | None
    logged_in: bool
    ip: IpAddress
    user_agent: Annotated[str, Field(max_length=1024)]
    device_type: DeviceType
    platform: Platform
    marketplace: Annotated[str, Field(min_length=2, max_length=8)]
    ad_id: Id
    campaign_id: Id
    advertiser_id: Id
    #: Query or placement the ad was shown for; free text, optional.
    placement: Annotated[str, Field(max_length=256)] | None = None

    @model_validator(mode="after")
    def _login_matches_customer(self) -> Click:
        if self.logged_in != (self.customer_id is not None):
            raise ValueError("logged_in must be true exactly when customer_id is set")
        return self


class Purchase(_Event):
    """A purchase, linked to the click that led to it when the logger knows it."""

    purchase_id: Id
    click_id: Id | None
    session_id: Id
    customer_id: Id | None
    amount: Annotated[float, Field(gt=0, lt=1e7)]
    currency: Annotated[str, Field(min_length=3, max_length=3)]


class Decision(BaseModel):
    """The verdict on one click, published to the decisions topic (key: click_id).

    Billing relies on exactly one final decision per click_id; a redelivered click produces the
    same decision again, so deduplicating by click_id is always safe.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    click_id: Id
    event_time: UtcTime
    verdict: Verdict
    score: float
    threshold: float
    slice: str
    model_name: str
    model_version: int
    reason_codes: list[str]
    feature_hash: str
    features: list[float]
    #: True when Redis or Triton was unreachable and the click was passed as valid (fail-open).
    degraded: bool = False
    processing_ms: float
    decided_at: UtcTime
    #: Set on decisions published by a replay: where the click was read and by which run.
    replay_run_id: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class DeadLetter(BaseModel):
    """What the dead-letter topic carries: the untouched bytes and why they were refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: DeadLetterReason
    detail: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    original_key: str | None
    #: The original payload, decoded as UTF-8 with replacement; exact bytes go in ``original_b64``.
    original_b64: str
    received_at: UtcTime

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


_ERROR_REASONS = {
    "missing": DeadLetterReason.MISSING_FIELD,
    "literal_error": DeadLetterReason.UNSUPPORTED_VERSION,
    "enum": DeadLetterReason.UNKNOWN_ENUM,
    "extra_forbidden": DeadLetterReason.INVALID_VALUE,
}
_TYPE_ERRORS = ("_type", "_parsing")

E = TypeVar("E", bound=_Event)


def _reason_of(error: ValidationError) -> DeadLetterReason:
    first = error.errors()[0]
    kind = str(first["type"])
    if kind in _ERROR_REASONS:
        return _ERROR_REASONS[kind]
    if kind.endswith(_TYPE_ERRORS) or kind in ("datetime_from_date_parsing",):
        return DeadLetterReason.WRONG_TYPE
    return DeadLetterReason.INVALID_VALUE


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_event(
    model: type[E], payload: bytes, limits: EventLimits, now: datetime | None = None
) -> E:
    """Validate untrusted bytes as ``model``; raise InvalidEvent with a dead-letter reason."""
    if len(payload) > limits.max_event_bytes:
        raise InvalidEvent(
            DeadLetterReason.OVERSIZED,
            f"{len(payload)} bytes, limit is {limits.max_event_bytes}",
        )
    try:
        raw: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(DeadLetterReason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(raw, dict):
        raise InvalidEvent(DeadLetterReason.NOT_AN_OBJECT, f"got JSON {type(raw).__name__}")
    try:
        event = model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(_reason_of(exc), _describe(exc)) from None
    now = now or datetime.now(UTC)
    if event.event_time > now + timedelta(seconds=limits.max_future_skew_s):
        raise InvalidEvent(
            DeadLetterReason.TOO_FAR_IN_FUTURE,
            f"event_time {event.event_time.isoformat()} is ahead of {now.isoformat()}",
        )
    if event.event_time < now - timedelta(days=limits.max_age_days):
        raise InvalidEvent(
            DeadLetterReason.TOO_OLD,
            f"event_time {event.event_time.isoformat()} is over {limits.max_age_days} days old",
        )
    return event


def parse_click(payload: bytes, limits: EventLimits, now: datetime | None = None) -> Click:
    return parse_event(Click, payload, limits, now)


def parse_purchase(payload: bytes, limits: EventLimits, now: datetime | None = None) -> Purchase:
    return parse_event(Purchase, payload, limits, now)


#: Click fields a traffic slice may be defined by (``CalibrationSettings.slice_fields``).
SLICE_FIELDS: tuple[str, ...] = ("device_type", "logged_in", "platform", "marketplace")
DEFAULT_SLICE_FIELDS: tuple[str, ...] = ("device_type", "logged_in")


def slice_name(values: Mapping[str, object], fields: Sequence[str] = DEFAULT_SLICE_FIELDS) -> str:
    """A slice's name: the values of ``fields`` joined by "/" (logged_in reads "in" or "out")."""
    parts = []
    for name in fields:
        if name not in SLICE_FIELDS:
            raise ValueError(f"cannot slice by {name!r}; choose from {', '.join(SLICE_FIELDS)}")
        value = values[name]
        if name == "logged_in":
            parts.append("in" if value else "out")
        else:
            parts.append(str(value.value if isinstance(value, StrEnum) else value))
    return "/".join(parts)


def slice_of(device_type: DeviceType | str, logged_in: bool) -> str:
    """The default traffic slice of a click: device type x logged-in status."""
    return slice_name({"device_type": DeviceType(device_type), "logged_in": logged_in})


ALL_SLICES: tuple[str, ...] = tuple(
    slice_of(device, logged_in) for device in DeviceType for logged_in in (False, True)
)
