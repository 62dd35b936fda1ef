"""Features of a click batch from Redis, in one round trip per batch.

Velocity counters (per customer, session and IP) and distinct counts (HyperLogLog) live in
Redis; a Lua script (``lua/features.lua``) updates and reads them for the whole batch in one
EVALSHA. Time of click and logged-in status are computed here. Key layout, windowing and the
guarantees are in ``docs/redis-keys.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from slidr.errors import SlidrError
from slidr.events import Click
from slidr.features import (
    INDEX,
    MAX_GAP_S,
    N_FEATURES,
    TIME_FEATURES,
    VELOCITY_ENTITIES,
    WINDOW_NAMES,
    WINDOWS_S,
    time_features,
)
from slidr.settings import RedisSettings

log = logging.getLogger(__name__)

_SCRIPT_PATH = Path(__file__).with_name("lua") / "features.lua"
#: Clicks up to this late (behind the newest click of the same entity) still count exactly;
#: sorted sets keep this much beyond the largest window.
ALLOWED_LATENESS_S = 3600
_KEEP_S = max(WINDOWS_S) + ALLOWED_LATENESS_S
#: Wall-clock TTLs. A velocity key's is refreshed by the first click of each event-time hour,
#: so an idle key outlives every window; a day's HLL outlives the next day, when it is still
#: read as "previous day".
VELOCITY_TTL_S = _KEEP_S + 3600
HLL_TTL_S = 2 * 86400 + ALLOWED_LATENESS_S

#: What the script returns per click, in its order (see features.lua).
SCRIPT_FEATURES: tuple[str, ...] = (
    *(f"{e}_clicks_{w}" for e in VELOCITY_ENTITIES for w in WINDOW_NAMES),
    *(f"{e}_gap_s" for e in VELOCITY_ENTITIES),
    "ip_distinct_sessions",
    "ip_distinct_customers",
    "customer_distinct_ips",
    "ip_distinct_user_agents",
)
_N_SCRIPT = len(SCRIPT_FEATURES)
_SCRIPT_COLUMNS = np.array([INDEX[name] for name in SCRIPT_FEATURES])
_N_COUNTS = len(VELOCITY_ENTITIES) * len(WINDOWS_S)
_GAPS = slice(_N_COUNTS, _N_COUNTS + len(VELOCITY_ENTITIES))
_TIME_COLUMNS = np.array([INDEX[name] for name in TIME_FEATURES])
_LOGGED_IN = INDEX["logged_in"]
_SEP = "\0"

assert VELOCITY_ENTITIES == ("customer", "session", "ip"), "features.lua hard-codes this order"
assert list(WINDOWS_S) == sorted(WINDOWS_S), "features.lua needs ascending windows"
assert len(SCRIPT_FEATURES) + len(TIME_FEATURES) + 1 == N_FEATURES, "a feature has no source"


class FeatureStoreUnavailable(SlidrError):
    """Redis did not answer (down, timed out, refused the command): score the batch fail-open.

    The next call reconnects by itself; nothing needs to be reset.
    """


class FeatureStore(Protocol):
    """What the scoring path needs from a feature store."""

    async def features(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        """float32 [len(clicks), N_FEATURES] in the order of ``slidr.features.FEATURES``."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


@cache
def _script_source() -> str:
    return _SCRIPT_PATH.read_text(encoding="utf-8")


def epoch_ms(t: datetime) -> int:
    """Milliseconds since the epoch, exact (float ``timestamp() * 1000`` can round down)."""
    return int(t.timestamp()) * 1000 + t.microsecond // 1000


def _column(values: list[str]) -> str:
    """Values joined by NUL; a NUL inside a value (never legitimate) is replaced."""
    joined = _SEP.join(values)
    if joined.count(_SEP) != len(values) - 1:
        joined = _SEP.join(v.replace(_SEP, "\ufffd") for v in values)
    return joined


def encode_batch(clicks: Sequence[Click], prefix: str) -> tuple[list[int], list[str | int]]:
    """The processing order (by event time, then click_id) and the script's ARGV for it."""
    ms = [epoch_ms(c.event_time) for c in clicks]
    order = sorted(range(len(clicks)), key=lambda i: (ms[i], clicks[i].click_id))
    batch = [clicks[i] for i in order]
    args: list[str | int] = [
        prefix,
        ",".join(str(w * 1000) for w in WINDOWS_S),
        _KEEP_S * 1000,
        VELOCITY_TTL_S,
        HLL_TTL_S,
        len(batch),
        _SEP.join([str(ms[i]) for i in order]),
        _column([c.click_id for c in batch]),
        _column([c.session_id for c in batch]),
        _column([c.customer_id or "" for c in batch]),
        _column([c.ip for c in batch]),
        _column([c.user_agent for c in batch]),
    ]
    return order, args


def decode_reply(reply: bytes, n: int) -> npt.NDArray[np.float32]:
    """The script's flat reply as float32 [n, len(SCRIPT_FEATURES)], gaps in capped seconds."""
    values = np.array(reply.split(b","), dtype=np.int64).reshape(n, _N_SCRIPT)
    out = values.astype(np.float32)
    gaps_ms = values[:, _GAPS]
    out[:, _GAPS] = np.where(gaps_ms < 0, MAX_GAP_S, np.minimum(gaps_ms / 1000.0, MAX_GAP_S))
    return out


def local_features(clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
    """float32 [n, N_FEATURES] with only the features computed without Redis filled in."""
    out = np.zeros((len(clicks), N_FEATURES), dtype=np.float32)
    by_minute: dict[int, tuple[float, float, float, float]] = {}
    times = np.empty((len(clicks), len(TIME_FEATURES)), dtype=np.float32)
    for i, click in enumerate(clicks):
        # time_features depends on the minute only; a batch spans few minutes.
        minute = int(click.event_time.timestamp()) // 60
        tf = by_minute.get(minute)
        if tf is None:
            tf = by_minute[minute] = time_features(click.event_time)
        times[i] = tf
    out[:, _TIME_COLUMNS] = times
    out[:, _LOGGED_IN] = [c.logged_in for c in clicks]
    return out


class RedisFeatureStore:
    """The feature store of the scoring path, on one Redis node (see docs/redis-keys.md).

    ``timeout_s`` bounds connecting and each reply, so an unresponsive Redis costs about that
    long per batch before :class:`FeatureStoreUnavailable` (the worker then fails open); the
    connection pool reconnects by itself on a later call. Usable as ``async with``.
    """

    def __init__(self, settings: RedisSettings, *, timeout_s: float = 1.0) -> None:
        if "{" in settings.key_prefix or "}" in settings.key_prefix:
            raise ValueError("the Redis key prefix must not contain { or } (hash tags)")
        self._prefix = settings.key_prefix
        self._where = f"Redis at {settings.host}:{settings.port}"
        password = settings.password.get_secret_value() if settings.password else None
        self._redis = aioredis.Redis(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            client_name="slidr-feature-store",  # tells operators whose connections these are
            # One immediate retry on a dropped connection (e.g. Redis restarted): re-running the
            # script is idempotent. Timeouts are not retried, to keep the bound above.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._script = self._redis.register_script(_script_source())

    async def features(self, clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
        out = local_features(clicks)
        if not clicks:
            return out
        order, args = encode_batch(clicks, self._prefix)
        try:
            # EVALSHA; on NOSCRIPT (a restarted Redis) the script is loaded and run again.
            reply = await self._script(args=args)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        out[np.ix_(np.asarray(order), _SCRIPT_COLUMNS)] = decode_reply(reply, len(clicks))
        return out

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def __aenter__(self) -> RedisFeatureStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _unavailable(self, exc: RedisError) -> FeatureStoreUnavailable:
        log.warning("feature store: %s failed: %s", self._where, exc)
        return FeatureStoreUnavailable(
            f"{self._where} failed ({type(exc).__name__}: {exc}); "
            "clicks are scored fail-open until it answers again"
        )
