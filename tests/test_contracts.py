"""The committed JSON Schemas (contracts/) equal the models', and a standard validator
(jsonschema) accepts the events slidr produces and refuses what the models refuse (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from slidr.cli.main import _register, app
from slidr.contracts import CONTRACTS, CONTRACTS_DIR, REGENERATE, Model, render_all, stale_files
from slidr.events import (
    Click,
    DeadLetter,
    DeadLetterReason,
    DegradedReason,
    DeviceType,
    GivtReason,
    Purchase,
)
from slidr.features import N_FEATURES
from slidr.replay_messages import (
    ReplayProgress,
    ReplayRequest,
    ReplayState,
    ReplaySummary,
    SliceCounts,
)
from slidr.settings import Settings
from slidr.topics import topic_specs
from streams.decide import DecisionColumns, Stamp, decide, fail_open
from tests.decisions import network_record
from tests.factories import make_click

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
MODELS: dict[str, Model] = {c.name: c.model for c in CONTRACTS}
RECORD = network_record(3, {"desktop/out": 0.3})


def validator(name: str) -> Draft202012Validator:
    """The committed file's validator, asserting formats (date-time, ipv4, ipv6) as billing
    should."""
    schema = json.loads((CONTRACTS_DIR / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(name: str, event: dict[str, Any]) -> list[str]:
    return [e.message for e in validator(name).iter_errors(event)]


def test_the_committed_schemas_are_the_models_schemas() -> None:
    stale = stale_files()
    assert not stale, (
        f"contracts/ is out of date with the event models ({', '.join(stale)}): run "
        f"`{REGENERATE}` and commit contracts/"
    )


def test_the_command_writes_and_checks_the_files(tmp_path: Path) -> None:
    _register()
    out = tmp_path / "contracts"
    run = CliRunner().invoke
    assert run(app, ["contracts", "--out", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(render_all())
    assert run(app, ["contracts", "--out", str(out), "--check"]).exit_code == 0

    (out / "decision.schema.json").write_text("{}")
    (out / "gone.schema.json").write_text("{}")
    checked = run(app, ["contracts", "--out", str(out), "--check"])
    assert checked.exit_code == 1
    assert "decision.schema.json, gone.schema.json" in checked.output
    assert REGENERATE in checked.output

    assert run(app, ["contracts", "--out", str(out)]).exit_code == 0
    assert not (out / "gone.schema.json").exists()
    assert (out / "decision.schema.json").read_text() == render_all()["decision.schema.json"]


def test_every_schema_is_json_schema_2020_12() -> None:
    for name, text in render_all().items():
        schema = json.loads(text)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        Draft202012Validator.check_schema(schema)


def test_every_topic_slidr_writes_or_reads_has_one_contract() -> None:
    settings = Settings()
    covered = [t for c in CONTRACTS for t in c.topics(settings)]
    assert len(covered) == len(set(covered))
    # Ground truth is the simulator's, for evaluation only: not a contract anyone codes against.
    owned = {spec.name for spec in topic_specs(settings)} - {settings.topics.truth}
    assert set(covered) == owned


def test_the_validator_checks_formats() -> None:
    # Without rfc3339-validator, jsonschema skips "date-time" silently.
    assert {"date-time", "ipv4", "ipv6"} <= set(Draft202012Validator.FORMAT_CHECKER.checkers), (
        "install the dev extra (rfc3339-validator) so that date-time is checked"
    )


# --- real events, as the code builds them, validate ---


def _real_events() -> list[tuple[str, bytes]]:
    plain = make_click(0, at=NOW)
    logged_in = make_click(1, at=NOW.replace(hour=3), customer="u-1", device=DeviceType.APP)
    ipv6 = msgspec.structs.replace(make_click(2, at=NOW, ip="2001:db8::1"), placement="shoes")
    clicks = [plain, logged_in, ipv6]
    features = np.full((3, N_FEATURES), 50, dtype=np.float32)
    scores = np.array([0.9, 0.1, 0.5], dtype=np.float32)
    stamp = Stamp(RECORD, NOW, 4.2)
    offsets: list[tuple[int | None, int | None]] = [(0, 10), (1, 11), (None, None)]
    fields = RECORD.slice_fields
    live = decide(DecisionColumns.of(clicks, fields, offsets, features), scores, stamp)
    listed = DecisionColumns.of(
        clicks[:1], fields, offsets[:1], features[:1], [GivtReason.DATACENTER]
    )
    givt = decide(listed, scores[:1], stamp)
    assert givt.categories[0] == "givt" and live.categories[0] == "sivt"
    degraded = fail_open(
        DecisionColumns.of(clicks, fields, offsets, None), DegradedReason.REDIS_UNAVAILABLE, stamp
    )
    replayed = decide(
        DecisionColumns.of(clicks, fields, [(0, 10), (1, 11), (2, 12)], features),
        scores,
        Stamp(RECORD, None, replay_run_id="slidr-v3-logged-0123456789ab"),
    )
    letter = partial(
        DeadLetter.of, source_topic="slidr.clicks", source_partition=2, source_offset=7,
        received_at=NOW,
    )  # fmt: skip
    letters = [
        letter(DeadLetterReason.TOMBSTONE, "no value", key=b"c-1", value=None),
        letter(DeadLetterReason.OVERSIZED, "big", key=b"\xff" * 600, value=b"x" * 100_000),
    ]
    assert letters[1].truncated
    purchase = Purchase(
        event_time=NOW,
        purchase_id="p-1",
        click_id="c-1",
        session_id="s-1",
        customer_id=None,
        amount=19.99,
        currency="EUR",
    )
    requests = [
        ReplayRequest(from_offsets={2: 1200}, to_offsets={2: 5000}, model_version=3),
        ReplayRequest(from_time=NOW - timedelta(hours=6), to_time=NOW, model_version=7),
    ]
    summary = ReplaySummary(
        run_id="r",
        model_name="slidr",
        model_version=3,
        features="logged",
        dry_run=False,
        ranges=["0:0-9"],
        resumed=False,
        decided=10,
        published=10,
        unreadable=0,
        missing_features=0,
        context_clicks=0,
        elapsed_s=1.0,
        clicks_per_s=10.0,
        slices=[SliceCounts(slice="desktop/out", clicks=10, invalid=1, degraded_before=0)],
    )
    progress = [
        ReplayProgress(request_id="q-1", state=ReplayState.ACCEPTED),
        ReplayProgress(request_id="q-1", run_id="r", state=ReplayState.DONE, summary=summary),
    ]
    return [
        *(("click", c.to_json()) for c in clicks),
        ("purchase", purchase.to_json()),
        *(("decision", p) for b in (live, givt, degraded, replayed) for p in b.payloads),
        *(("dead-letter", d.to_json()) for d in letters),
        *(("replay-request", r.to_json()) for r in requests),
        *(("replay-progress", p.to_json()) for p in progress),
    ]


def test_events_the_code_produces_validate() -> None:
    events = _real_events()
    assert {name for name, _ in events} == set(MODELS), "a contract without a real event"
    for name, payload in events:
        event = orjson.loads(payload)
        assert errors(name, event) == [], (name, event)


# --- invalid events fail in the validator and in the model alike ---


def model_validate(model: Model, event: dict[str, Any]) -> object:
    """The event as the model reads it: an event struct by its JSON decoder, as the worker."""
    if issubclass(model, BaseModel):
        return model.model_validate(event)
    return msgspec.json.decode(orjson.dumps(event), type=model)


def _click() -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(make_click(0, at=NOW).to_json())
    return out


def _decision() -> dict[str, Any]:
    columns = DecisionColumns.of(
        [make_click(0, at=NOW)],
        RECORD.slice_fields,
        [(0, 1)],
        np.zeros((1, N_FEATURES), dtype=np.float32),
    )
    [payload] = decide(columns, np.array([0.9], dtype=np.float32), Stamp(RECORD, NOW, 1.0)).payloads
    out: dict[str, Any] = orjson.loads(payload)
    return out


def _letter() -> dict[str, Any]:
    letter = DeadLetter.of(
        DeadLetterReason.MALFORMED_JSON,
        "x",
        source_topic="slidr.clicks",
        source_partition=0,
        source_offset=1,
        key=None,
        value=b"{",
        received_at=NOW,
    )
    out: dict[str, Any] = orjson.loads(letter.to_json())
    return out


def _request() -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(
        ReplayRequest(from_offsets={0: 1}, to_offsets={0: 2}, model_version=3).to_json()
    )
    return out


def _purchase() -> dict[str, Any]:
    return {
        "event_time": "2026-11-21T12:00:00Z",
        "purchase_id": "p-1",
        "click_id": None,
        "session_id": "s-1",
        "customer_id": None,
        "amount": 5.0,
        "currency": "USD",
    }


def _without(field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda e: {k: v for k, v in e.items() if k != field}


def _with(**values: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda e: {**e, **values}


BASES: dict[str, Callable[[], dict[str, Any]]] = {
    "click": _click,
    "purchase": _purchase,
    "decision": _decision,
    "dead-letter": _letter,
    "replay-request": _request,
    "replay-progress": lambda: {"state": "running", "done": 1, "total": 2},
}

INVALID: list[tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("click", "no click_id", _without("click_id")),
    ("click", "an unknown field", _with(is_bot=True)),
    ("click", "an unknown device type", _with(device_type="tv")),
    ("click", "schema_version 2", _with(schema_version=2)),
    ("click", "a time without UTC offset", _with(event_time="2026-11-21T10:00:00")),
    ("click", "a time that is not a time", _with(event_time="yesterday")),
    ("click", "logged in without a customer", _with(logged_in=True, customer_id=None)),
    ("click", "a customer not logged in", _with(logged_in=False, customer_id="u-1")),
    ("click", "an IP that is not one", _with(ip="999.1.1.1")),
    ("click", "an empty click_id", _with(click_id="")),
    ("click", "a user agent over 1,024 characters", _with(user_agent="a" * 1025)),
    ("click", "logged_in null", _with(logged_in=None)),
    ("click", "logged_in a number", _with(logged_in=1)),
    ("click", "a time as a Unix timestamp", _with(event_time=1763726340)),
    ("click", "a NUL in click_id", _with(click_id="c-\x00")),
    ("click", "a tab in session_id", _with(session_id="s\t1")),
    ("click", "a DEL in ad_id", _with(ad_id="a\x7f")),
    ("click", "a C1 control in campaign_id", _with(campaign_id="k\x85")),
    ("click", "a whitespace-only advertiser_id", _with(advertiser_id="   ")),
    ("click", "a customer_id of U+FEFF", _with(logged_in=True, customer_id="\ufeff")),
    ("click", "an IPv6 zone id", _with(ip="fe80::1%eth0")),
    ("purchase", "a newline in purchase_id", _with(purchase_id="p-1\n")),
    ("purchase", "a no-break space for click_id", _with(click_id="\u00a0")),
    ("purchase", "amount 0", _with(amount=0)),
    ("purchase", "a 4-letter currency", _with(currency="EURO")),
    ("purchase", "an amount as a string", _with(amount="19.99")),
    ("purchase", "no purchase_id", _without("purchase_id")),
    ("decision", "an unknown verdict", _with(verdict="maybe")),
    ("decision", "a fractional model version", _with(model_version=1.5)),
    ("decision", "features that are not numbers", _with(features=["a"])),
    ("decision", "no decided_at", _without("decided_at")),
    ("decision", "an unknown ivt_category", _with(ivt_category="bot")),
    ("dead-letter", "an unknown reason", _with(reason="exploded")),
    ("dead-letter", "no source_topic", _without("source_topic")),
    ("replay-request", "model version 0", _with(model_version=0)),
    ("replay-request", "an unknown feature mode", _with(features="fast")),
    ("replay-request", "a run id with a space", _with(run_id="a b")),
    ("replay-progress", "an unknown state", _with(state="paused")),
]


@pytest.mark.parametrize(
    ("name", "mutate"), [(n, m) for n, _, m in INVALID], ids=[f"{n}: {w}" for n, w, _ in INVALID]
)
def test_invalid_events_fail_the_schema_and_the_model(
    name: str, mutate: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    base = BASES[name]()
    assert errors(name, base) == [], "the base event must be valid"
    model = MODELS[name]
    model_validate(model, base)
    event = mutate(base)
    assert errors(name, event), f"the schema accepts {event}"
    refusal = ValidationError if issubclass(model, BaseModel) else msgspec.ValidationError
    with pytest.raises(refusal):
        model_validate(model, event)


IDS = [
    ("c-1", True),
    ("a b", True),
    (" c-1 ", True),
    ("clé-1", True),
    ("\u00a0x", True),
    ("\u200b", True),  # a zero-width space is a format character, not whitespace
    ("\x00", False),
    ("x\n", False),  # where Python's "$" would match: the rule has no anchors
    ("\x1f", False),
    ("\x7f", False),
    ("\x85", False),
    ("\x9f", False),
    (" ", False),
    ("\xa0", False),
    ("\u2028", False),
    ("\u3000", False),
    ("\ufeff", False),
]


@pytest.mark.parametrize(("text", "accepted"), IDS, ids=[ascii(t) for t, _ in IDS])
def test_the_schema_and_the_model_agree_on_ids(text: str, accepted: bool) -> None:
    # The rule on ids is a pair of regexes in the schema and code in the model.
    event = _click() | {"click_id": text, "session_id": text, "advertiser_id": text}
    try:
        model_validate(MODELS["click"], event)
        model_accepts = True
    except msgspec.ValidationError:
        model_accepts = False
    assert (not errors("click", event), model_accepts) == (accepted, accepted)


def test_an_ipv4_mapped_address_is_valid_and_read_as_its_ipv4() -> None:
    event = _click() | {"ip": "::ffff:192.0.2.1"}
    assert errors("click", event) == []
    assert msgspec.json.decode(orjson.dumps(event), type=Click).ip == "192.0.2.1"
