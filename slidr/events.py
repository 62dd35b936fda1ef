"""Versioned JSON contracts of the events slidr reads and writes.

Upstream events are untrusted: :func:`parse_click_message`, :func:`parse_click` and
:func:`parse_purchase` turn any bytes (or a null value) into an event or raise
:class:`~slidr.errors.InvalidEvent` with a stable ``reason`` code, and never another error: one
bad message must cost that message (a dead letter), never the partition it sits in.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import operator
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache, lru_cache, partial
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect
import orjson
from msgspec import Meta, Struct
from msgspec.structs import force_setattr
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
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


#: Every fail-open reason code starts with this.
DEGRADED_PREFIX = "degraded:"


class DegradedReason(StrEnum):
    """Why a batch was decided fail-open: the metric label, the logged range, and (prefixed
    with DEGRADED_PREFIX) the reason code of each of its decisions."""

    REDIS_UNAVAILABLE = "redis_unavailable"
    TRITON_UNAVAILABLE = "triton_unavailable"

    @property
    def code(self) -> str:
        """The reason code a fail-open decision carries, e.g. ``degraded:redis_unavailable``."""
        return f"{DEGRADED_PREFIX}{self.value}"


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
    #: The JSON object holds a key twice: parsers disagree on which value counts (first, last,
    #: an error), so the event it holds is ambiguous.
    DUPLICATE_KEY = "duplicate_key"
    #: The click is valid but the message's key is not its ``click_id``.
    KEY_MISMATCH = "key_mismatch"
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


# A dotted quad without leading zeros: exactly the IPv4 strings ip_address() gives back unchanged.
_CANONICAL_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)


def _canonical_ipv6(value: str) -> bool:
    """True when ``value`` is an IPv6 address as :func:`_ip` writes it.

    inet_ntop writes the RFC 5952 form ip_address writes too (lowercase, no leading zeros, the
    first longest run of two or more zero groups as "::"), except for an embedded IPv4 (a "."),
    a scope ("%") and an IPv4-mapped address (written as its IPv4), which are left to
    ipaddress; a test checks the two agree."""
    if "." in value or "%" in value or value.startswith("::ffff:"):
        return False
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, value)) == value
    except (OSError, ValueError):
        return False


@lru_cache(maxsize=1 << 14)
def _normalised_ip(value: str) -> str | None:
    # Cached, refusals too (a bad click is checked twice), and short-cut for addresses already
    # written as ipaddress writes them: ip_address costs 4 µs for an IPv4 and 11 for an IPv6,
    # more than the rest of a click's parsing.
    if _CANONICAL_IPV4.fullmatch(value) or (":" in value and _canonical_ipv6(value)):
        return value
    if value.startswith("::ffff:") and _CANONICAL_IPV4.fullmatch(value, 7):
        return value[7:]  # IPv4-mapped, as most dual-stack servers log one: its IPv4
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # One address, one identity in the counters: a zone id ("%eth0") names a link of the
        # sender's host, not another address, so it is refused rather than kept or dropped;
        # an IPv4-mapped address is the IPv4 it carries.
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


def _ip(value: str) -> str:
    """The address as ipaddress writes it, an IPv4-mapped IPv6 as its IPv4; ValueError if
    none, or if it has an IPv6 zone id."""
    normalised = _normalised_ip(value)
    if normalised is None:
        if "%" in value:
            raise ValueError(f"{value!r}: no zone id (%...) allowed; send the address alone")
        raise ValueError(f"{value!r} does not appear to be an IPv4 or IPv6 address")
    return normalised


# Ids: no control character (Unicode Cc: C0, DEL, C1) and at least one that is not whitespace
# (U+FEFF counts as whitespace, as in JavaScript). Written as JSON Schema too (on EventId); the
# regexes mean the same in Python and ECMA 262, the dialect of JSON Schema's "pattern".
_ID_CONTROL = r"[\x00-\x1f\x7f-\x9f]"
_ID_VISIBLE = r"[^\s\ufeff]"
_ID_CONTROL_RE = re.compile(_ID_CONTROL)
_ID_VISIBLE_RE = re.compile(_ID_VISIBLE)


def _id_text(value: str | None) -> str | None:
    """``value`` if it is an acceptable id (or None); ValueError naming what is wrong."""
    if value is None:
        return None
    if bad := _ID_CONTROL_RE.search(value):
        raise ValueError(f"{value[:40]!r} holds a control character (U+{ord(bad[0]):04X})")
    if not _ID_VISIBLE_RE.search(value):
        raise ValueError(f"{value[:40]!r} is only whitespace")
    return value


def _check_ids(event: object, names: Sequence[str]) -> None:
    """Each id of ``event`` by :func:`_id_text`; ValueError naming the first bad one.

    The structs call it only when their ids joined are not printable (a Cc or a whitespace
    other than " ") or hold a space: never for ids a logger writes. That test costs 0.3 µs a
    click (the 2-core test machine); this one two regex searches an id."""
    for name in names:
        try:
            _id_text(getattr(event, name))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None


UtcTime = Annotated[datetime, AfterValidator(_utc)]
Id = Annotated[str, Field(min_length=1, max_length=128)]

# The same rules for the msgspec event structs (a timezone is required; UTC is set after).
EventId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        extra_json_schema={"pattern": _ID_VISIBLE, "not": {"pattern": _ID_CONTROL}},
    ),
]
EventTime = Annotated[datetime, Meta(tz=True)]
IpText = Annotated[
    str,
    Meta(
        max_length=45,
        # No zone id ("%eth0"): some validators' ipv6 format (Python's) accepts one.
        extra_json_schema={
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
            "not": {"pattern": "%"},
        },
    ),
]


_ENCODER = msgspec.json.Encoder()


class _Event(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, gc=False):
    """An upstream event, a msgspec struct: its decoder checks types (strictly: no coercion)
    and the ``Meta`` constraints; ``__post_init__`` the rules in code. An event built in code
    (``Click(...)``, ``msgspec.structs.replace``) gets the latter only. Subclasses inherit the
    options (``frozen`` is restated for mypy); ``gc=False``: scalar fields make no reference
    cycles for the collector to track."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_time: EventTime

    def __post_init__(self) -> None:
        # Runs after decoding and after Click(...)/replace(); msgspec turns a ValueError here
        # into a ValidationError. A decoded "Z" time already has the UTC singleton.
        if self.event_time.tzinfo is not UTC:
            force_setattr(self, "event_time", _utc(self.event_time))

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)


class Click(_Event, frozen=True, kw_only=True):
    """One ad click, as published by the click loggers to the clicks topic (key: click_id)."""

    click_id: EventId
    session_id: EventId
    customer_id: EventId | None
    logged_in: bool
    ip: IpText
    user_agent: Annotated[str, Meta(max_length=1024)]
    device_type: DeviceType
    platform: Platform
    marketplace: Annotated[str, Meta(min_length=2, max_length=8)]
    ad_id: EventId
    campaign_id: EventId
    advertiser_id: EventId
    #: Query or placement the ad was shown for; free text, optional.
    placement: Annotated[str, Meta(max_length=256)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        ip = _ip(self.ip)
        if ip != self.ip:
            force_setattr(self, "ip", ip)
        ids = (
            f"{self.click_id}{self.session_id}{self.customer_id or ''}"
            f"{self.ad_id}{self.campaign_id}{self.advertiser_id}"
        )
        if not ids.isprintable() or " " in ids:
            _check_ids(self, _CLICK_IDS)
        if self.logged_in != (self.customer_id is not None):
            raise ValueError("logged_in must be true exactly when customer_id is set")


_CLICK_IDS = ("click_id", "session_id", "customer_id", "ad_id", "campaign_id", "advertiser_id")


class Purchase(_Event, frozen=True, kw_only=True):
    """A purchase, linked to the click that led to it when the logger knows it."""

    purchase_id: EventId
    click_id: EventId | None
    session_id: EventId
    customer_id: EventId | None
    amount: Annotated[float, Meta(gt=0, lt=1e7)]
    currency: Annotated[str, Meta(min_length=3, max_length=3)]

    def __post_init__(self) -> None:
        super().__post_init__()
        ids = f"{self.purchase_id}{self.click_id or ''}{self.session_id}{self.customer_id or ''}"
        if not ids.isprintable() or " " in ids:
            _check_ids(self, _PURCHASE_IDS)


_PURCHASE_IDS = ("purchase_id", "click_id", "session_id", "customer_id")


class Decision(BaseModel):
    """The verdict on one click, published to the decisions topic (key: click_id); a replay's
    go to the replayed-decisions topic.

    A click can have several decisions (a redelivery, a replay); exactly one is **final**, the
    one :func:`final_order` ranks highest (docs/contracts.md). A redelivered click gets its first
    decision back byte for byte within the redelivery horizon (the worker's decision cache), so
    live duplicates are identical; a replay has a higher ``revision`` and supersedes them.
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
    #: 0 for the live worker; a replay's: when the run was first planned (ms since the epoch),
    #: so a later replay supersedes an earlier one and every replay supersedes the live decision.
    revision: int = Field(default=0, ge=0)
    #: Set on decisions published by a replay: where the click was read and by which run.
    replay_run_id: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


FinalOrder = tuple[int, bool, float, bytes]


def final_order(decision: Decision, payload: bytes) -> FinalOrder:
    """Where a decision ranks among its click's decisions: the highest is final.

    By ``revision`` (a replay over the live worker, a later replay over an earlier one), then a
    judged decision over a degraded (fail-open) one, then the earliest ``decided_at`` (the
    first live decision: a redelivery repeats it), then the payload bytes, so the order is
    total and no reader depends on the order it read them in.
    """
    return (decision.revision, not decision.degraded, -decision.decided_at.timestamp(), payload)


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


def _pydantic_reason(error: ValidationError) -> DeadLetterReason:
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


E = TypeVar("E", bound=_Event)


@cache
def _decoder(model: type[E]) -> msgspec.json.Decoder[E]:
    return msgspec.json.Decoder(model)


@dataclass(frozen=True, slots=True)
class _FieldRule:
    """One field of an event struct, as the classifier of refused events checks it."""

    name: str
    required: bool
    #: A struct of this one field (``value``): msgspec caches a struct's type, not an
    #: Annotated one (a bare convert to the field's type costs 2 to 4 µs, this 0.4).
    holder: type[Any]
    #: The reason of every error of this field (schema_version, the enums), else by the error.
    reason: DeadLetterReason | None
    #: The struct's own rule for the field (``__post_init__``), checked after its type.
    rule: Callable[[Any], object] | None


#: The rules ``__post_init__`` applies to single fields, so that a refusal names the field.
_FIELD_RULES: Mapping[str, Callable[[Any], object]] = {
    "event_time": _utc,
    "ip": _ip,
    **{name: _id_text for name in (*_CLICK_IDS, *_PURCHASE_IDS)},
}
_HELD_AT = " - at `$.value`"


@cache
def _field_rules(model: type[_Event]) -> tuple[_FieldRule, ...]:
    out = []
    for field in msgspec.structs.fields(model):
        if field.name == "schema_version":
            reason: DeadLetterReason | None = DeadLetterReason.UNSUPPORTED_VERSION
        elif isinstance(field.type, type) and issubclass(field.type, StrEnum):
            reason = DeadLetterReason.UNKNOWN_ENUM
        else:
            reason = None
        holder = msgspec.defstruct(f"{model.__name__}_{field.name}", [("value", field.type)])
        rule = _FIELD_RULES.get(field.name)
        out.append(_FieldRule(field.name, field.required, holder, reason, rule))
    return tuple(out)


def _msgspec_reason(message: str) -> DeadLetterReason:
    # msgspec words a type mismatch "Expected `int`, got `str`"; any other message is a
    # broken constraint (a length, a bound, a time without offset).
    if ", got `" in message or message.startswith("Invalid RFC3339"):
        return DeadLetterReason.WRONG_TYPE
    return DeadLetterReason.INVALID_VALUE


# A date, or a date and time, with no offset: what the pydantic models read as a naive time
# and refused as INVALID_VALUE (not RFC 3339, so msgspec calls it unparsable).
_NAIVE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt _]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,][0-9]+)?)?)?"
)


def _naive_time(value: object) -> bool:
    match = _NAIVE_TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(part) for part in match.groups(default="0"))
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:  # a day or an hour no calendar holds
        return False
    return True


def _field_error(rule: _FieldRule, value: object) -> tuple[DeadLetterReason, str] | None:
    try:
        converted = msgspec.convert({"value": value}, rule.holder).value
        if rule.rule is not None:
            rule.rule(converted)
    except msgspec.ValidationError as exc:
        if rule.name == "event_time" and _naive_time(value):
            return DeadLetterReason.INVALID_VALUE, f"{value!r} needs a UTC offset"
        message = str(exc).removesuffix(_HELD_AT)
        return rule.reason or _msgspec_reason(message), message
    except ValueError as exc:
        return DeadLetterReason.INVALID_VALUE, str(exc)
    return None


def _refused(model: type[E], payload: bytes) -> E:
    """Why msgspec refused ``payload``, as an InvalidEvent.

    The decoder stops at the first error in document order, and before reading the rest of
    the document; the reason code must not depend on either. So, off the hot path: the whole
    document must be JSON (else malformed_json), an object (else not_an_object) with no key
    twice (else duplicate_key: which value would the fields be checked on?), then each field
    is checked in the model's order, unknown fields after them, the cross-field rules last;
    the first error is the reason (as the pydantic models reported it). A document msgspec
    refused for a reason no check sees is the event it holds (none is known)."""
    raw = decode_object(payload)
    if _more_keys_than(payload, sum(isinstance(v, str) for v in raw.values()), len(raw)):
        _refuse_duplicate(payload)
    errors: list[tuple[DeadLetterReason, str]] = []
    for rule in _field_rules(model):
        if rule.name not in raw:
            if rule.required:
                errors.append((DeadLetterReason.MISSING_FIELD, f"{rule.name}: field required"))
        elif error := _field_error(rule, raw[rule.name]):
            errors.append((error[0], f"{rule.name}: {error[1]}"))
    known = model.__struct_fields__
    errors += [
        (DeadLetterReason.INVALID_VALUE, f"{name}: unknown field (additionalProperties: false)")
        for name in raw
        if name not in known
    ]
    if errors:
        raise InvalidEvent(errors[0][0], "; ".join(detail for _, detail in errors[:3]))
    try:
        return msgspec.convert(raw, model)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(DeadLetterReason.INVALID_VALUE, f"event: {exc}") from None


@dataclass(frozen=True, slots=True)
class _KeyShape:
    """What a decoded event tells about the JSON object it came from, to bound its keys."""

    #: Fields decoded from a JSON string (text, a time, a text enum; null or not) plus fields
    #: every accepted document holds: a document holds count('"') / 2 - this keys more.
    base: int
    #: The values of the fields that are a string or null, as a tuple.
    nullable: Callable[[Any], tuple[object, ...]]
    #: Of each field with a default: its name; its default; its key first in the object,
    #: ``{"name":``; last with the default value, ``"name":default}``; anywhere, ``"name":``.
    optional: tuple[tuple[str, object, bytes, bytes, bytes], ...]


def _decoded_from_string(info: msgspec.inspect.Type) -> bool:
    # Only types surely read from a JSON string: one missed costs a slow check, never a miss.
    if isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.EnumType):
        return all(isinstance(member.value, str) for member in info.cls)
    return isinstance(info, msgspec.inspect.StrType | msgspec.inspect.DateTimeType)


@cache
def _key_shape(model: type[_Event]) -> _KeyShape:
    base = 0
    nullable: list[str] = []
    optional: list[tuple[str, object, bytes, bytes, bytes]] = []
    for field in msgspec.structs.fields(model):
        info = msgspec.inspect.type_info(field.type)
        if isinstance(info, msgspec.inspect.UnionType):
            others = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(others) == 1 and _decoded_from_string(others[0]):
                base += 1
                nullable.append(field.name)
        elif _decoded_from_string(info):
            base += 1
        if field.required:
            base += 1
        else:
            key = f'"{field.name}":'.encode()
            last = key + _ENCODER.encode(field.default) + b"}"
            optional.append((field.name, field.default, b"{" + key, last, key))
    # A None default first: a value other than None tells the field is there without a scan.
    optional.sort(key=lambda item: item[1] is not None)
    get = operator.attrgetter(*nullable) if nullable else lambda _: ()
    values = get if len(nullable) != 1 else lambda event: (get(event),)
    return _KeyShape(base, values, tuple(optional))


def _more_keys_than(payload: bytes, string_values: int, distinct_keys: int) -> bool:
    """False when ``payload``, a JSON object with ``distinct_keys`` keys of which
    ``string_values`` hold a string, surely has no key twice (True: it may have).

    Every '"' of a JSON document delimits a string, but an escaped one (\\") inside a string;
    so it holds at most count('"') / 2 strings, each a key or a value, and keys <= that -
    string values, exactly so when no key is there twice and nothing is escaped or nested.
    A key twice (however escaped), an escaped quote or a nested value only raise the count."""
    return (payload.count(b'"') >> 1) - string_values > distinct_keys


def _may_hold_duplicate(shape: _KeyShape, event: _Event, payload: bytes) -> bool:
    """:func:`_more_keys_than` for an event decoded from ``payload``, where the parse that
    sees every key (:func:`_duplicate_key`) costs 10 µs or more."""
    # Decoding succeeded: every required field is there and no unknown one, and a null field
    # holds no string. The keys left over must be fields with a default, each there at most
    # once: surely so when its value is not the default; else its key is looked for where
    # slidr's encoders write it (first, or last with the default), then anywhere (a scan).
    missing = (payload.count(b'"') >> 1) - shape.base + shape.nullable(event).count(None)
    if missing <= 0:
        return False
    for name, default, first, last, key in shape.optional:
        if (
            getattr(event, name) != default
            or payload.startswith(first)
            or payload.endswith(last)
            or key in payload
        ):
            missing -= 1
            if missing <= 0:
                return False
    return True


_CLICK_BASE = _key_shape(Click).base


def _click_may_hold_duplicate(click: Click, payload: bytes) -> bool:
    """:func:`_may_hold_duplicate` for a click, unrolled: 0.6 µs a click instead of 1.0 (on
    the 2-core test machine); a test checks the two agree."""
    missing = (payload.count(b'"') >> 1) - _CLICK_BASE
    if click.customer_id is None:
        missing += 1
    # A placement that is not null was there; a null one maybe.
    missing += 1 if click.placement is None else -1
    if missing <= 0:
        return False
    if payload.startswith(b'{"schema_version":') or b'"schema_version":' in payload:
        missing -= 1
    if (
        missing > 0
        and click.placement is None
        and (payload.endswith(b'"placement":null}') or b'"placement":' in payload)
    ):
        missing -= 1
    return missing > 0


@cache
def _duplicate_test(model: type[_Event]) -> Callable[[Any, bytes], bool]:
    return partial(_may_hold_duplicate, _key_shape(model))


# A JSON string (group 1), with the ":" that makes it a key (group 2), or a bracket.
_JSON_TOKEN = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")(\s*:)?|[{}\[\]]', re.DOTALL)


def _duplicate_key(payload: bytes) -> str | None:
    """The first key the top-level object of ``payload`` (valid JSON) holds twice, or None.

    The JSON parsers at hand keep one value a key; this scan sees every key, unescaped (so
    ``"click\\u005fid"`` is ``click_id``), and steps over nested values without recursion."""
    depth = 0
    seen: set[str] = set()
    for token in _JSON_TOKEN.finditer(payload):
        if token[2] is not None:
            if depth == 1:
                key: str = orjson.loads(token[1])
                if key in seen:
                    return key
                seen.add(key)
        elif token[1] is None:
            depth += 1 if token[0] in (b"{", b"[") else -1
    return None


def _refuse_duplicate(payload: bytes) -> None:
    if (key := _duplicate_key(payload)) is not None:
        raise InvalidEvent(DeadLetterReason.DUPLICATE_KEY, f"the key {key[:100]!r} is there twice")


def _check_present(payload: bytes | None, max_bytes: int | None) -> bytes:
    if payload is None:
        raise InvalidEvent(DeadLetterReason.TOMBSTONE, "the message has no value (a tombstone)")
    if max_bytes is not None and len(payload) > max_bytes:
        raise InvalidEvent(
            DeadLetterReason.OVERSIZED, f"{len(payload)} bytes, limit is {max_bytes}"
        )
    return payload


def decode_object(payload: bytes | None, max_bytes: int | None = None) -> dict[str, Any]:
    """The JSON object in ``payload``; InvalidEvent if there is none (null, too large, not
    JSON, not an object)."""
    try:
        raw: Any = orjson.loads(_check_present(payload, max_bytes))
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
        raise InvalidEvent(_pydantic_reason(exc), _describe(exc)) from None
    except Exception as exc:
        log.error("validating a %s raised; refusing the event", model.__name__, exc_info=True)
        raise InvalidEvent(DeadLetterReason.PARSE_FAILED, f"{type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=16)
def _time_bounds(max_future_skew_s: int, max_age_days: int) -> tuple[timedelta, timedelta]:
    # Built once: two timedeltas per click were a third of a valid click's parsing cost.
    return timedelta(seconds=max_future_skew_s), -timedelta(days=max_age_days)


def _check_time(event: _Event, limits: EventLimits, now: datetime) -> None:
    # Differences of two datetimes never overflow; now +/- a limit can (now is a message's
    # timestamp in a replay).
    ahead = event.event_time - now
    future, past = _time_bounds(limits.max_future_skew_s, limits.max_age_days)
    if ahead > future:
        raise InvalidEvent(
            DeadLetterReason.TOO_FAR_IN_FUTURE,
            f"event_time {event.event_time.isoformat()} is ahead of {now.isoformat()}",
        )
    if ahead < past:
        raise InvalidEvent(
            DeadLetterReason.TOO_OLD,
            f"event_time {event.event_time.isoformat()} is over {limits.max_age_days} days old",
        )


def parse_event(
    model: type[E], payload: bytes | None, limits: EventLimits, now: datetime | None = None
) -> E:
    """Validate untrusted bytes as ``model``; raise InvalidEvent with a dead-letter reason, and
    never another error: an unforeseen exception is PARSE_FAILED (logged as the bug it is)."""
    value = _check_present(payload, limits.max_event_bytes)
    event: E
    try:
        try:
            event = _decoder(model).decode(value)
        except msgspec.DecodeError:  # ValidationError included
            event = _refused(model, value)
        else:
            # The decoder keeps a key's last value; the contract refuses a key twice.
            if isinstance(event, Click):
                suspect = _click_may_hold_duplicate(event, value)  # the hot path: unrolled
            else:
                suspect = _duplicate_test(model)(event, value)
            if suspect:
                _refuse_duplicate(value)
    except InvalidEvent:
        raise
    except Exception as exc:
        log.error("parsing a %s raised; refusing the event", model.__name__, exc_info=True)
        raise InvalidEvent(DeadLetterReason.PARSE_FAILED, f"{type(exc).__name__}: {exc}") from None
    _check_time(event, limits, now or datetime.now(UTC))
    return event


def check_key(key: bytes | None, limits: EventLimits) -> str | None:
    """A message key must be UTF-8 text of at most ``max_key_bytes`` (or absent); its text."""
    if key is None:
        return None
    if len(key) > limits.max_key_bytes:
        raise InvalidEvent(
            DeadLetterReason.BAD_KEY, f"key of {len(key)} bytes, limit is {limits.max_key_bytes}"
        )
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(DeadLetterReason.BAD_KEY, f"key is not UTF-8: {exc}") from None


def parse_click(payload: bytes | None, limits: EventLimits, now: datetime | None = None) -> Click:
    return parse_event(Click, payload, limits, now)


def parse_click_message(
    value: bytes | None, key: bytes | None, limits: EventLimits, now: datetime | None = None
) -> Click:
    """One message of the clicks topic, key and value: what the worker, the archiver and a
    replay all accept, so that they agree on which clicks exist.

    The key must be absent (null) or the click's ``click_id``: the partition, compaction and
    the dead letter's ``original_key`` all go by the key, so a key naming another click (or
    empty bytes) makes one click two identities. A broken key is found first (``bad_key``),
    then a broken value (its own reason), then a key that is not the click_id
    (``key_mismatch``)."""
    text = check_key(key, limits)
    click = parse_event(Click, value, limits, now)
    if text is not None and text != click.click_id:
        raise InvalidEvent(
            DeadLetterReason.KEY_MISMATCH,
            f"key {text[:140]!r} is not the click_id {click.click_id!r}",
        )
    return click


def parse_purchase(
    payload: bytes | None, limits: EventLimits, now: datetime | None = None
) -> Purchase:
    return parse_event(Purchase, payload, limits, now)
