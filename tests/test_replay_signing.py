"""Replay requests run only when signed with the agent's key (replay/signing.py); no network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from replay.signing import (
    SIGNATURE_HEADER,
    SIGNED_AT_HEADER,
    RequestGate,
    Unauthenticated,
    sign,
)
from slidr.replay_messages import ReplayRequest
from slidr.settings import ReplaySettings

KEY = SecretStr("replay-signing-test-key-0123456789")
NOW = 1_800_000_000.0
PAYLOAD = ReplayRequest.model_validate(
    {"from_offsets": {0: 1}, "to_offsets": {0: 5}, "model_version": 3}
).to_json()


def gate(tmp_path: Path, **settings: object) -> RequestGate:
    return RequestGate(ReplaySettings(signing_key=KEY, **settings), tmp_path / "ledger")


def refused(g: RequestGate, match: str, headers: object, payload: bytes = PAYLOAD) -> None:
    with pytest.raises(Unauthenticated, match=match) as caught:
        g.admit("req-1", payload, headers, NOW)  # type: ignore[arg-type]
    assert KEY.get_secret_value() not in str(caught.value)


def test_a_signed_request_is_admitted(tmp_path: Path) -> None:
    assert gate(tmp_path).admit("req-1", PAYLOAD, sign(KEY, "req-1", PAYLOAD, NOW), NOW)
    # Faust hands headers as a list of pairs; a mapping works too
    other = dict(sign(KEY, "req-2", PAYLOAD, NOW))
    assert gate(tmp_path).admit("req-2", PAYLOAD, other, NOW + 299)


def test_unsigned_forged_and_tampered_requests_are_refused(tmp_path: Path) -> None:
    g = gate(tmp_path)
    refused(g, "unsigned request", None)
    refused(g, "unsigned request", [(SIGNED_AT_HEADER, b"1")])
    wrong_key = sign(SecretStr("another-key-0123456789abcdef"), "req-1", PAYLOAD, NOW)
    refused(g, "bad signature", wrong_key)
    signed = sign(KEY, "req-1", PAYLOAD, NOW)
    refused(g, "bad signature", signed, PAYLOAD.replace(b'"dry_run":false', b'"dry_run":true'))
    refused(g, "bad signature", sign(KEY, "another-request", PAYLOAD, NOW))  # key is signed
    later = [(SIGNED_AT_HEADER, str(int(NOW) + 1).encode()), signed[1]]  # time is signed
    refused(g, "bad signature", later)
    refused(g, "malformed", [(SIGNED_AT_HEADER, b"soon"), (SIGNATURE_HEADER, b"00")])


def test_stale_and_future_requests_are_refused(tmp_path: Path) -> None:
    g = gate(tmp_path, signature_max_age_s=300)
    refused(g, "stale request: signed 301 s ago", sign(KEY, "req-1", PAYLOAD, NOW - 301))
    refused(g, "stale request", sign(KEY, "req-1", PAYLOAD, NOW + 301))


def test_a_served_request_is_not_run_again_but_an_unfinished_one_resumes(
    tmp_path: Path,
) -> None:
    g = gate(tmp_path, signature_max_age_s=300)
    headers = sign(KEY, "req-1", PAYLOAD, NOW)
    mac = g.admit("req-1", PAYLOAD, headers, NOW)
    # the agent died mid-run: Kafka delivers it again an hour later, and it resumes
    assert g.admit("req-1", PAYLOAD, headers, NOW + 3600) == mac
    g.finished(mac, NOW + 3600)
    refused(g, "already served", headers)  # a copy read off the topic, within the window


def test_without_a_key_every_request_is_refused_unless_unsigned_is_allowed(
    tmp_path: Path,
) -> None:
    strict = RequestGate(ReplaySettings(), tmp_path)
    refused(strict, "no SLIDR_REPLAY__SIGNING_KEY", sign(KEY, "req-1", PAYLOAD, NOW))
    lax = RequestGate(ReplaySettings(allow_unsigned=True), tmp_path)
    assert lax.admit("req-1", PAYLOAD, None, NOW) is None
    # with a key, allow_unsigned does not let unsigned requests through
    refused(gate(tmp_path, allow_unsigned=True), "unsigned request", None)


def test_the_documented_shell_recipe_signs_like_the_cli(tmp_path: Path) -> None:
    """docs/replay.md signs a request for kcat with printf and openssl."""
    script = (
        '{ printf \'slidr-replay-request-v1\\n%s\\n%s\\n\' "$ID" "$TS"; printf \'%s\' "$REQ"; }'
        ' | openssl dgst -sha256 -hmac "$KEY" | sed "s/^.*= //"'
    )
    env = {
        "ID": "req-1",
        "TS": str(int(NOW)),
        "REQ": PAYLOAD.decode(),
        "KEY": KEY.get_secret_value(),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    headers = [
        (SIGNED_AT_HEADER, str(int(NOW)).encode()),
        (SIGNATURE_HEADER, done.stdout.strip().encode()),
    ]
    assert gate(tmp_path).admit("req-1", PAYLOAD, headers, NOW)
