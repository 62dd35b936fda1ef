"""Versioned JSON contracts of the events slidr reads and writes.

Upstream events are untrusted: :func:`parse_click_message`, :func:`parse_click` and
:func:`parse_purchase` turn any bytes (or a null value) into a model or raise
:class:`~slidr.errors.InvalidEvent` with a stable ``reason`` code, and never another error: one
bad message must cost that message (a dead letter), never the partition it sits in.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
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

log = logging.getLogger(__name__)


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


class IvtCategory(StrEnum):
    """Which stage judged a click (MRC's split of invalid traffic).

    ``givt``: general invalid traffic, decided by lists before the model (declared bots and
    crawlers, known data-centre ranges); always invalid. ``sivt``: the model judged the click
    (valid or invalid). Fail-open (degraded) decisions carry none: nothing judged them.
    """

    GIVT = "givt"
    SIVT = "sivt"


#: Every GIVT reason code starts with this.
GIVT_PREFIX = "givt:"


class GivtReason(StrEnum):
    """The reason code of a GIVT decision (its only one)."""

    DECLARED_BOT = "givt:declared_bot"
    DATACENTER = "givt:datacenter"


class DeadLetterReason(StrEnum):
    """Stable codes: dashboards and the dead-letter counter are keyed by these."""

    #: The value is larger than ``events.max_event_bytes``; it is not parsed.
    OVERSIZED = "oversized"
    #: The value is not JSON (or not UTF-8).
    MALFORMED_JSON = "malformed_json"
    #: The value is JSON but not an object.
    NOT_AN_OBJECT = "not_an_object"
    #: ``schema_version`` is not one this code reads.
    UNSUPPORTED_VERSION = "unsupported_version"
    #: A required field is absent.
    MISSING_FIELD = "missing_field"
    #: A field has the wrong JSON type (or a time that is not a time).
    WRONG_TYPE = "wrong_type"
    #: An enum field holds a value outside its list.
    UNKNOWN_ENUM = "unknown_enum"
    #: A field breaks a rule of the contract (length, IP, offset, a time no calendar holds...).
    INVALID_VALUE = "invalid_value"
    #: ``event_time`` is ahead of the processing clock by more than the allowed skew.
    TOO_FAR_IN_FUTURE = "too_far_in_future"
    #: ``event_time`` is older than ``events.max_age_days``.
    TOO_OLD = "too_old"
    #: The message has no value at all (null: a Kafka tombstone).
    TOMBSTONE = "tombstone"
    #: The Kafka key is not UTF-8 text of at most ``events.max_key_bytes`` bytes.
    BAD_KEY = "bad_key"
    #: Parsing raised an error no rule of the contract names: a bug; the detail names it.
    PARSE_FAILED = "parse_failed"
    #: The click is valid but building its decision raised; the detail names the error.
    DECISION_FAILED = "decision_failed"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("event_time needs a UTC offset, e.g. 2026-11-21T10:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+01:00: a ValueError makes it a validation error of the field.
        raise ValueError("the time in UTC is outside the years 1 to 9999") from None


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
    #: The stage that judged the click: ``givt`` (lists, before the model; always invalid),
    #: ``sivt`` (the model), or null for a fail-open decision (see IvtCategory).
    ivt_category: IvtCategory | None = None
    processing_ms: float
    decided_at: UtcTime
    #: Set on decisions published by a replay: where the click was read and by which run.
    replay_run_id: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


#: A dead letter keeps at most this many bytes of the original value (base64 in
#: ``original_b64``): every value within the default ``max_event_bytes`` whole. Larger ones are
#: cut, so a dead letter always fits the producer's request limit (1 MB); the size, the hash
#: and the source offset find the whole message.
DEAD_LETTER_EXCERPT_BYTES = 8192
#: Characters kept of ``detail`` and of the original key.
DEAD_LETTER_DETAIL_CHARS = 1000
DEAD_LETTER_KEY_CHARS = 256
#: No dead letter's JSON is larger (the test of the bound checks the worst case).
DEAD_LETTER_MAX_BYTES = 32 * 1024


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    # Cut the bytes first: decoding a 1 MB key only to keep 256 characters is waste.
    text = key[: DEAD_LETTER_KEY_CHARS * 4].decode("utf-8", errors="replace")
    return text[:DEAD_LETTER_KEY_CHARS]


class DeadLetter(BaseModel):
    """What the dead-letter topic carries: why a message was refused, where it was read, and
    its bytes (whole up to DEAD_LETTER_EXCERPT_BYTES, else the first ones) with size and hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: DeadLetterReason
    detail: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    #: The Kafka key decoded as UTF-8 with replacement, cut to DEAD_LETTER_KEY_CHARS.
    original_key: str | None
    #: The original value's bytes, base64: all of them, or the first DEAD_LETTER_EXCERPT_BYTES
    #: when ``truncated``; empty for a tombstone.
    original_b64: str
    received_at: UtcTime
    #: Size of the original value in bytes (0 for a tombstone). None on letters written before
    #: the field existed, as are the two below.
    original_size: int | None = None
    #: sha256 (hex) of the whole original value, to match a letter with its source message.
    original_sha256: str | None = None
    #: True when ``original_b64`` holds only the start of the value.
    truncated: bool = False

    @classmethod
    def of(
        cls,
        reason: DeadLetterReason,
        detail: str,
        *,
        source_topic: str,
        source_partition: int | None,
        source_offset: int | None,
        key: bytes | None,
        value: bytes | None,
        received_at: datetime,
    ) -> DeadLetter:
        """A bounded dead letter of one message, whatever its size (see DEAD_LETTER_MAX_BYTES)."""
        payload = value or b""
        excerpt = payload[:DEAD_LETTER_EXCERPT_BYTES]
        return cls(
            reason=reason,
            detail=detail[:DEAD_LETTER_DETAIL_CHARS],
            source_topic=source_topic,
            source_partition=source_partition,
            source_offset=source_offset,
            original_key=_key_text(key),
            original_b64=base64.b64encode(excerpt).decode(),
            received_at=received_at,
            original_size=len(payload),
            original_sha256=hashlib.sha256(payload).hexdigest(),
            truncated=len(excerpt) < len(payload),
        )

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


def decode_object(payload: bytes | None, max_bytes: int | None = None) -> dict[str, Any]:
    """The JSON object in ``payload``; InvalidEvent if there is none (null, too large, not
    JSON, not an object)."""
    if payload is None:
        raise InvalidEvent(DeadLetterReason.TOMBSTONE, "the message has no value (a tombstone)")
    if max_bytes is not None and len(payload) > max_bytes:
        raise InvalidEvent(
            DeadLetterReason.OVERSIZED, f"{len(payload)} bytes, limit is {max_bytes}"
        )
    try:
        raw: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(DeadLetterReason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(raw, dict):
        raise InvalidEvent(DeadLetterReason.NOT_AN_OBJECT, f"got JSON {type(raw).__name__}")
    return raw


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], raw: dict[str, Any]) -> M:
    """``raw`` as ``model``; InvalidEvent with the reason of the first error, and never
    another error: a validator's unforeseen exception is PARSE_FAILED (logged as the bug it is)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(_reason_of(exc), _describe(exc)) from None
    except Exception as exc:
        log.error("validating a %s raised; refusing the event", model.__name__, exc_info=True)
        raise InvalidEvent(DeadLetterReason.PARSE_FAILED, f"{type(exc).__name__}: {exc}") from None


def _check_time(event: _Event, limits: EventLimits, now: datetime) -> None:
    # Differences of two datetimes never overflow; now +/- a limit can (now is a message's
    # timestamp in a replay).
    ahead = event.event_time - now
    if ahead > timedelta(seconds=limits.max_future_skew_s):
        raise InvalidEvent(
            DeadLetterReason.TOO_FAR_IN_FUTURE,
            f"event_time {event.event_time.isoformat()} is ahead of {now.isoformat()}",
        )
    if -ahead > timedelta(days=limits.max_age_days):
        raise InvalidEvent(
            DeadLetterReason.TOO_OLD,
            f"event_time {event.event_time.isoformat()} is over {limits.max_age_days} days old",
        )


def parse_event(
    model: type[E], payload: bytes | None, limits: EventLimits, now: datetime | None = None
) -> E:
    """Validate untrusted bytes as ``model``; raise InvalidEvent with a dead-letter reason."""
    event = validate(model, decode_object(payload, limits.max_event_bytes))
    _check_time(event, limits, now or datetime.now(UTC))
    return event


def check_key(key: bytes | None, limits: EventLimits) -> None:
    """A message key must be UTF-8 text of at most ``max_key_bytes`` (or absent)."""
    if key is None:
        return
    if len(key) > limits.max_key_bytes:
        raise InvalidEvent(
            DeadLetterReason.BAD_KEY, f"key of {len(key)} bytes, limit is {limits.max_key_bytes}"
        )
    try:
        key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(DeadLetterReason.BAD_KEY, f"key is not UTF-8: {exc}") from None


def parse_click(payload: bytes | None, limits: EventLimits, now: datetime | None = None) -> Click:
    return parse_event(Click, payload, limits, now)


def parse_click_message(
    value: bytes | None, key: bytes | None, limits: EventLimits, now: datetime | None = None
) -> Click:
    """One message of the clicks topic, key and value: what the worker, the archiver and a
    replay all accept, so that they agree on which clicks exist."""
    check_key(key, limits)
    return parse_click(value, limits, now)


def parse_purchase(
    payload: bytes | None, limits: EventLimits, now: datetime | None = None
) -> Purchase:
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
