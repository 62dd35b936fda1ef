"""The Redis feature store: right counts on event time, idempotent, batch-independent, one trip.

Redis tests run against the session stack's Redis, each with its own key prefix.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import redis
import redis.asyncio.connection

from slidr.events import Click
from slidr.features import FEATURES, INDEX, MAX_GAP_S, TIME_FEATURES, WINDOWS_S, time_features
from slidr.settings import RedisSettings, Settings
from streams.feature_store import (
    HLL_TTL_S,
    SCRIPT_FEATURES,
    VELOCITY_TTL_S,
    FeatureStoreUnavailable,
    RedisFeatureStore,
    decode_reply,
    encode_batch,
    epoch_ms,
    local_features,
)
from tests.stack_fixtures import free_ports

integration = pytest.mark.integration

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ENTITIES = (("customer", "customer_id"), ("session", "session_id"), ("ip", "ip"))


def make_click(
    click_id: str,
    at: datetime,
    *,
    session: str = "s1",
    customer: str | None = "c1",
    ip: str = "10.0.0.1",
    user_agent: str = "Mozilla/5.0",
) -> Click:
    return Click(
        click_id=click_id,
        event_time=at,
        session_id=session,
        customer_id=customer,
        logged_in=customer is not None,
        ip=ip,
        user_agent=user_agent,
        device_type="desktop",
        platform="linux",
        marketplace="us",
        ad_id="ad1",
        campaign_id="cmp1",
        advertiser_id="adv1",
    )


def expected_velocity(clicks: Sequence[Click]) -> dict[str, dict[str, float]]:
    """The specification: per click, the clicks of the same entity ordered before it by
    (event time, click_id), counted per window (t - w, t], and the gap to the latest of them."""
    unique = {c.click_id: c for c in clicks}.values()
    out: dict[str, dict[str, float]] = {}
    for c in unique:
        me = (epoch_ms(c.event_time), c.click_id)
        row: dict[str, float] = {}
        for entity, attr in ENTITIES:
            key = getattr(c, attr)
            same = [o for o in unique if key is not None and getattr(o, attr) == key]
            before = sorted(
                (epoch_ms(o.event_time), o.click_id)
                for o in same
                if (epoch_ms(o.event_time), o.click_id) <= me
            )
            for w, name in zip(WINDOWS_S, ("1m", "10m", "1h", "24h"), strict=True):
                row[f"{entity}_clicks_{name}"] = sum(t > me[0] - w * 1000 for t, _ in before)
            gap = (me[0] - before[-2][0]) / 1000 if len(before) > 1 else MAX_GAP_S
            row[f"{entity}_gap_s"] = min(gap, MAX_GAP_S)
        out[c.click_id] = row
    return out


def by_id(clicks: Sequence[Click], features: npt.NDArray[np.float32]) -> dict[str, list[float]]:
    return {c.click_id: features[i].tolist() for i, c in enumerate(clicks)}


def feature(features: npt.NDArray[np.float32], row: int, name: str) -> float:
    return float(features[row, INDEX[name]])


@pytest.fixture
def redis_settings(stack_settings: Settings) -> RedisSettings:
    """The stack's Redis with a key prefix of this test's own."""
    return stack_settings.redis.model_copy(update={"key_prefix": f"fs-{uuid.uuid4().hex}:"})


@pytest.fixture
def admin(redis_settings: RedisSettings) -> Iterator[redis.Redis]:
    with redis.Redis(host=redis_settings.host, port=redis_settings.port) as client:
        yield client


def mixed_stream(n: int, seed: int = 7) -> list[Click]:
    """A stream over few entities, with event-time ties, anonymous clicks and gaps of hours,
    in (event time, click_id) order."""
    rng = random.Random(seed)
    clicks, at = [], T0
    for i in range(n):
        at += timedelta(milliseconds=rng.choice([0, 0, 250, 20_000, 90_000, 2_000_000]))
        customer = rng.choice(["c1", "c2", "c3", None])
        clicks.append(
            make_click(
                f"k{rng.randrange(10**6):06d}-{i}",
                at,
                session=f"s{rng.randrange(6)}",
                customer=customer,
                ip=f"10.0.0.{rng.randrange(4)}",
                user_agent=f"ua{rng.randrange(3)}",
            )
        )
    return sorted(clicks, key=lambda c: (c.event_time, c.click_id))


# --- without Redis ------------------------------------------------------------------------


def test_every_feature_has_exactly_one_source() -> None:
    # A feature that neither Redis nor Python fills would silently reach the model as 0.
    sources = [*SCRIPT_FEATURES, *TIME_FEATURES, "logged_in"]
    assert sorted(sources) == sorted(FEATURES)


def test_epoch_ms_is_exact() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rng = random.Random(1)
    times = [T0 + timedelta(milliseconds=rng.randrange(10**9)) for _ in range(2000)]
    times += [T0 + timedelta(microseconds=rng.randrange(10**12)) for _ in range(2000)]
    # Window boundaries are compared in ms: a click exactly 1 min old must be exactly 60000 ms.
    assert all(epoch_ms(t) == (t - epoch) // timedelta(milliseconds=1) for t in times)


def test_batch_is_sent_in_event_time_then_click_id_order() -> None:
    clicks = [
        make_click("b", T0 + timedelta(seconds=1)),
        make_click("z", T0),
        make_click("a", T0 + timedelta(seconds=1)),
    ]
    order, args = encode_batch(clicks, "p:")
    assert order == [1, 2, 0]
    assert args[7] == "z\0a\0b"


def test_nul_inside_a_value_does_not_shift_the_columns() -> None:
    clicks = [make_click("a", T0, user_agent="evil\0agent"), make_click("b", T0)]
    _, args = encode_batch(clicks, "p:")
    assert [str(a).count("\0") for a in args[6:]] == [1] * 6
    assert str(args[11]).split("\0") == ["evil\ufffdagent", "Mozilla/5.0"]


def test_gaps_become_seconds_capped_and_missing_predecessor_is_max_gap() -> None:
    row = [1] * 12 + [-1, 1500, 10**9] + [2, 3, 4, 5]
    out = decode_reply(",".join(map(str, row)).encode(), 1)
    assert out.dtype == np.float32
    assert out[0, 12:15].tolist() == [MAX_GAP_S, 1.5, MAX_GAP_S]
    assert out[0, 15:].tolist() == [2, 3, 4, 5]


def test_time_of_click_and_login_are_computed_locally() -> None:
    at = datetime(2026, 3, 7, 23, 30, 15, tzinfo=UTC)
    out = local_features([make_click("a", at), make_click("b", at, customer=None)])
    for name, value in zip(TIME_FEATURES, time_features(at), strict=True):
        assert out[:, INDEX[name]].tolist() == pytest.approx([value, value], abs=1e-6)
    assert out[:, INDEX["logged_in"]].tolist() == [1.0, 0.0]


def test_a_prefix_with_hash_tag_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="hash tags"):
        RedisFeatureStore(RedisSettings(key_prefix="slidr:{x}:"))


# --- against Redis ------------------------------------------------------------------------


@integration
async def test_window_counts_and_gaps_of_clicks_30_s_apart(redis_settings: RedisSettings) -> None:
    offsets_s = [0, 30, 60, 90, 700, 4000, 95_000]
    clicks = [make_click(f"k{i}", T0 + timedelta(seconds=s)) for i, s in enumerate(offsets_s)]
    async with RedisFeatureStore(redis_settings) as store:
        f = await store.features(clicks)
    # At t=60 s the click at t=0 is exactly 1 min old: outside (t - 1 min, t].
    assert [feature(f, 2, f"session_clicks_{w}") for w in ("1m", "10m", "1h", "24h")] == [
        2,
        3,
        3,
        3,
    ]
    assert [feature(f, i, "ip_gap_s") for i in range(len(clicks))] == [
        MAX_GAP_S,
        30,
        30,
        30,
        610,
        3300,
        MAX_GAP_S,  # 91,000 s, capped
    ]
    assert feature(f, 5, "customer_clicks_1h") == 2  # t=700 s and itself
    assert feature(f, 5, "customer_clicks_24h") == 6
    assert feature(f, 6, "customer_clicks_24h") == 1  # the others are over a day older
    expected = expected_velocity(clicks)
    for i, c in enumerate(clicks):
        for name, value in expected[c.click_id].items():
            assert feature(f, i, name) == value, (c.click_id, name)


@integration
async def test_not_logged_in_click_has_zero_customer_features(
    redis_settings: RedisSettings,
) -> None:
    clicks = [make_click("a", T0), make_click("b", T0 + timedelta(seconds=5), customer=None)]
    async with RedisFeatureStore(redis_settings) as store:
        f = await store.features(clicks)
    customer = [n for n in FEATURES if n.startswith("customer_")]
    assert [feature(f, 1, n) for n in customer] == [0, 0, 0, 0, MAX_GAP_S, 0]
    assert feature(f, 1, "logged_in") == 0
    assert feature(f, 1, "ip_clicks_1m") == 2
    assert feature(f, 1, "ip_distinct_customers") == 1  # c1; the anonymous click adds none


@integration
async def test_event_time_not_arrival_order_decides(redis_settings: RedisSettings) -> None:
    """Guarantee: a click's velocity features count the clicks ordered before it by (event
    time, click_id) that reached the store in the same or an earlier batch; so arrival order
    within a batch never matters, and a late click still gets its own velocity right."""
    clicks = mixed_stream(120)
    shuffled = random.Random(3).sample(clicks, len(clicks))
    prefix = redis_settings.key_prefix
    async with RedisFeatureStore(redis_settings) as in_order:
        want = by_id(clicks, await in_order.features(clicks))
    async with RedisFeatureStore(
        redis_settings.model_copy(update={"key_prefix": prefix + "shuffled:"})
    ) as store:
        got = by_id(shuffled, await store.features(shuffled))
    assert got == want
    # A click arriving in a batch after its successors: its own counts are exact.
    late, rest = clicks[60], clicks[:60] + clicks[61:]
    async with RedisFeatureStore(
        redis_settings.model_copy(update={"key_prefix": prefix + "late:"})
    ) as store:
        await store.features(rest)
        f = await store.features([late])
    velocity = [INDEX[n] for n in FEATURES if "_clicks_" in n or n.endswith("_gap_s")]
    assert f[0, velocity].tolist() == [want[late.click_id][i] for i in velocity]
    expected = expected_velocity(clicks)[late.click_id]
    assert {n: feature(f, 0, n) for n in expected} == expected


@integration
async def test_redelivery_gives_same_features_and_counts_nothing_twice(
    redis_settings: RedisSettings, admin: redis.Redis
) -> None:
    clicks = [make_click(f"k{i}", T0 + timedelta(seconds=10 * i)) for i in range(5)]
    async with RedisFeatureStore(redis_settings) as store:
        first = await store.features(clicks)
        again = await store.features(clicks)
        twice_in_one_batch = await store.features(clicks + clicks)
        after = await store.features([make_click("k5", T0 + timedelta(seconds=50))])
    assert np.array_equal(first, again)
    assert np.array_equal(twice_in_one_batch, np.concatenate([first, first]))
    assert feature(after, 0, "session_clicks_1m") == 6  # five before, then itself
    assert feature(after, 0, "ip_distinct_sessions") == 1
    assert admin.zcard(f"{redis_settings.key_prefix}vel:{{sess:s1}}") == 6


@integration
async def test_same_features_however_the_stream_is_batched(
    redis_settings: RedisSettings,
) -> None:
    clicks = mixed_stream(200)
    prefix = redis_settings.key_prefix

    def at(suffix: str) -> RedisSettings:
        return redis_settings.model_copy(update={"key_prefix": prefix + suffix})

    async with RedisFeatureStore(at("one:")) as store:
        whole = await store.features(clicks)
    async with RedisFeatureStore(at("many:")) as store:
        parts = [await store.features(clicks[i : i + 7]) for i in range(0, len(clicks), 7)]
    # Two workers (two pools, no shared Python state) taking turns on the same keys.
    async with RedisFeatureStore(at("two:")) as a, RedisFeatureStore(at("two:")) as b:
        turns = [
            await (a if (i // 13) % 2 else b).features(clicks[i : i + 13])
            for i in range(0, len(clicks), 13)
        ]
    assert np.array_equal(np.concatenate(parts), whole)
    assert np.array_equal(np.concatenate(turns), whole)
    expected = expected_velocity(clicks)
    for i, c in enumerate(clicks):
        assert {n: feature(whole, i, n) for n in expected[c.click_id]} == expected[c.click_id]


@integration
async def test_distinct_counts_over_current_and_previous_utc_day(
    redis_settings: RedisSettings,
) -> None:
    day = datetime(2026, 3, 2, tzinfo=UTC)
    clicks = [
        make_click(
            f"d0-{i}",
            day + timedelta(hours=20, seconds=i),
            session=f"s{i}",
            customer=f"c{i % 5}",
            user_agent=f"ua{i % 3}",
        )
        for i in range(40)
    ]
    clicks.append(make_click("roam", day + timedelta(hours=21), customer="c0", ip="10.9.9.9"))
    next_day = make_click("d1", day + timedelta(days=1, hours=1), session="s-next")
    day_after = make_click("d2", day + timedelta(days=2, hours=1), session="s-later")
    async with RedisFeatureStore(redis_settings) as store:
        f = await store.features(clicks)
        f1 = await store.features([next_day])
        f2 = await store.features([day_after])
    last = len(clicks) - 2
    assert feature(f, last, "ip_distinct_sessions") == 40
    assert feature(f, last, "ip_distinct_customers") == 5
    assert feature(f, last, "ip_distinct_user_agents") == 3
    assert feature(f, last + 1, "customer_distinct_ips") == 2  # c0 from two IPs
    assert feature(f1, 0, "ip_distinct_sessions") == 41  # yesterday's 40 and s-next
    assert feature(f2, 0, "ip_distinct_sessions") == 2  # day 0 has rolled out of the window


@integration
async def test_one_round_trip_per_batch(
    redis_settings: RedisSettings, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    original = redis.asyncio.connection.Connection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(1)
        await original(self, command, check_health)

    monkeypatch.setattr(redis.asyncio.connection.Connection, "send_packed_command", counting)
    clicks = mixed_stream(500)
    async with RedisFeatureStore(redis_settings) as store:
        await store.features(clicks[:10])  # connects and loads the script
        admin.script_flush()  # as after a Redis restart: NOSCRIPT, then reload
        await store.features(clicks[10:20])
        calls_before = admin.info("commandstats")["cmdstat_evalsha"]["calls"]
        sent.clear()
        for i in range(0, 500, 250):
            await store.features(clicks[i : i + 250])
    assert len(sent) == 2
    assert admin.info("commandstats")["cmdstat_evalsha"]["calls"] == calls_before + 2


@integration
async def test_every_key_expires_and_old_clicks_are_trimmed(
    redis_settings: RedisSettings, admin: redis.Redis
) -> None:
    prefix = redis_settings.key_prefix
    clicks = [*mixed_stream(50), make_click("old", T0, session="long")]
    async with RedisFeatureStore(redis_settings) as store:
        await store.features(clicks)
        await store.features([make_click("new", T0 + timedelta(hours=26), session="long")])
    keys = [k.decode() for k in admin.scan_iter(match=f"{prefix}*")]
    assert any(":vel:" in k for k in keys) and any(":hll:" in k for k in keys)
    for key in keys:
        limit = VELOCITY_TTL_S if f"{prefix}vel:" in key else HLL_TTL_S
        assert 0 < admin.ttl(key) <= limit, key
    assert admin.zrange(f"{prefix}vel:{{sess:long}}", 0, -1) == [b"new"]


@integration
async def test_unreachable_redis_raises_the_typed_error_quickly() -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    async with RedisFeatureStore(RedisSettings(port=port)) as store:
        with pytest.raises(FeatureStoreUnavailable, match=f"127.0.0.1:{port}"):
            await store.features([make_click("a", T0)])
        with pytest.raises(FeatureStoreUnavailable):
            await store.ping()
    assert time.monotonic() - started < 2


@integration
async def test_a_dropped_connection_is_reestablished(
    redis_settings: RedisSettings, admin: redis.Redis
) -> None:
    def store_clients() -> set[str]:
        return {c["id"] for c in admin.client_list() if c["name"] == "slidr-feature-store"}

    others = store_clients()
    async with RedisFeatureStore(redis_settings) as store:
        first = await store.features([make_click("a", T0)])
        mine = store_clients() - others
        assert mine
        for client_id in mine:
            admin.client_kill_filter(_id=client_id)
        await store.ping()
        assert np.array_equal(await store.features([make_click("a", T0)]), first)
