"""Replay requests are signed: a replay publishes decisions billing reads, so the agent runs only
requests made with on-call's key (``replay.signing_key``).

A request travels as its JSON value with two Kafka headers:

- ``slidr-signed-at``: when it was signed, Unix seconds (ASCII);
- ``slidr-signature``: hex HMAC-SHA256 under the key of ``slidr-replay-request-v1\\n``, the
  request id (the message key), ``\\n``, the signed-at value, ``\\n`` and the value's exact bytes.

The exact bytes are signed, not a re-serialised request: any producer (``slidr replay --submit``,
``kcat`` with ``openssl dgst``) can sign without agreeing on a canonical JSON, and the agent
parses nothing it has not authenticated. The key binds the signature to the request id, whose
answers on the progress topic the submitter follows. The timestamp bounds how long a copy read
off the topic stays usable; within that window the agent's ledger refuses a request it already
served. A request the agent accepted and did not finish (it died) is admitted again whatever
its age, so it resumes from its checkpoint as before.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path

from pydantic import SecretStr

from replay.errors import ReplayRefused
from slidr.settings import ReplaySettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "slidr-signature"
SIGNED_AT_HEADER = "slidr-signed-at"
#: Versions the scheme and keeps these MACs apart from any other use of the key.
CONTEXT = b"slidr-replay-request-v1"

Headers = Mapping[str, bytes | None] | Iterable[tuple[str, bytes | None]] | None


class Unauthenticated(ReplayRefused):
    """A request the agent will not run: unsigned, forged, stale or already served."""


def signing_input(request_id: str, signed_at: int, payload: bytes) -> bytes:
    r"""The bytes the signature covers.

    >>> signing_input("r1", 1700000000, b'{"model_version":1}')
    b'slidr-replay-request-v1\nr1\n1700000000\n{"model_version":1}'
    """
    return b"\n".join((CONTEXT, request_id.encode(), str(signed_at).encode(), payload))


def signature(key: SecretStr, request_id: str, signed_at: int, payload: bytes) -> str:
    message = signing_input(request_id, signed_at, payload)
    return hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def sign(key: SecretStr, request_id: str, payload: bytes, now: float) -> list[tuple[str, bytes]]:
    """The Kafka headers of a request signed at ``now``."""
    signed_at = int(now)
    mac = signature(key, request_id, signed_at, payload)
    return [(SIGNED_AT_HEADER, str(signed_at).encode()), (SIGNATURE_HEADER, mac.encode())]


def _header_map(headers: Headers) -> dict[str, bytes]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return {k: v for k, v in pairs if v is not None}


class Ledger(StrEnum):
    RUNNING = "running"
    DONE = "done"


class RequestGate:
    """Admits the requests the agent may run; remembers them under ``directory`` by signature."""

    def __init__(self, settings: ReplaySettings, directory: Path) -> None:
        self.key = settings.signing_key
        self.allow_unsigned = settings.allow_unsigned
        self.max_age_s = settings.signature_max_age_s
        self.directory = directory

    def _entry(self, mac: str) -> Path:
        return self.directory / mac  # hex of a verified MAC: a safe file name

    def _state(self, mac: str) -> Ledger | None:
        try:
            return Ledger(self._entry(mac).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _mark(self, mac: str, state: Ledger) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._entry(mac).with_suffix(".tmp")
        tmp.write_text(state.value)
        tmp.replace(self._entry(mac))

    def admit(self, request_id: str, payload: bytes, headers: Headers, now: float) -> str | None:
        """The request's signature (its ledger entry, None when unsigned requests are allowed),
        or :class:`Unauthenticated` with the reason."""
        if self.key is None:
            if self.allow_unsigned:
                return None
            raise Unauthenticated(
                "the agent has no SLIDR_REPLAY__SIGNING_KEY, so it runs no request: set it here "
                "and for `slidr replay --submit` (SLIDR_REPLAY__ALLOW_UNSIGNED=true on a local "
                "stack only)"
            )
        found = _header_map(headers)
        mac, stamp = found.get(SIGNATURE_HEADER), found.get(SIGNED_AT_HEADER)
        if mac is None or stamp is None:
            raise Unauthenticated(
                f"unsigned request (no {SIGNATURE_HEADER}/{SIGNED_AT_HEADER} header): send it "
                "with `slidr replay --submit` and SLIDR_REPLAY__SIGNING_KEY set"
            )
        try:
            signed_at = int(stamp.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise Unauthenticated(f"malformed {SIGNED_AT_HEADER} header") from None
        want = signature(self.key, request_id, signed_at, payload)
        if not hmac.compare_digest(want.encode(), mac):
            raise Unauthenticated(
                "bad signature: not made with this agent's SLIDR_REPLAY__SIGNING_KEY over this "
                "request, key and time"
            )
        state = self._state(want)
        if state is Ledger.DONE:
            raise Unauthenticated("this signed request was already served: submit it again")
        age = now - signed_at
        if state is None and abs(age) > self.max_age_s:
            raise Unauthenticated(
                f"stale request: signed {age:,.0f} s ago, beyond SLIDR_REPLAY__SIGNATURE_MAX_AGE_S "
                f"({self.max_age_s:,.0f} s): submit it again"
            )
        # RUNNING: delivered again after the agent died mid-run; it resumes, whatever its age
        self._mark(want, Ledger.RUNNING)
        return want

    def finished(self, mac: str | None, now: float) -> None:
        """The request ended (done, refused, failed): a copy of it is refused from now on.

        Entries older than twice the maximum age are dropped: their copies are stale anyway.
        """
        if mac is None:
            return
        self._mark(mac, Ledger.DONE)
        for entry in self.directory.iterdir():
            try:
                if entry.name != mac and now - entry.stat().st_mtime > 2 * self.max_age_s:
                    entry.unlink()
            except FileNotFoundError:
                pass
