"""The feature store's contract, on one Redis node and on a 3-node Redis Cluster alike.

Counts follow the definition in docs/redis-keys.md, checked against a reference written from
it here; that definition stays within its stated bound of the exact sliding window. Each test
has its own key prefix.
"""

from __future__ import annotations

import random
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis
from msgspec.structs import force_setattr
from redis.cluster import RedisCluster

from slidr.events import Click, DeviceType, Platform
from slidr.features import (
    DAY,
    FEATURES,
    INDEX,
    MAX_GAP_S,
    SPEC,
    TIME_FEATURES,
    WINDOWS,
    Entity,
    FeatureSpec,
    Velocity,
    time_features,
)
from slidr.settings import RedisSettings, Settings
from slidr.stack.redis_server import RedisService
from streams.feature_store import (
    ENTITY_TTL_S,
    FeatureStoreUnavailable,
    RedisFeatureStore,
    epoch_ms,
    local_features,
    short_hash,
)
from streams.feature_store.batch import entity_value
from streams.feature_store.compact import COMPACT_RECORDS
from streams.feature_store.layout import LAYOUT, build_layout
from tests.stack_fixtures import cluster_settings, free_ports
from tests.test_feature_counting import Part, count_parts, decode_base

integration = pytest.mark.integration

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def make_click(
    click_id: str,
    at: datetime,
    *,
    session: str = "s1",
    customer: str | None = "c1",
    ip: str = "10.0.0.1",
    user_agent: str = "Mozilla/5.0",
    advertiser: str = "adv1",
    campaign: str = "cmp1",
) -> Click:
    return Click(
        click_id=click_id,
        event_time=at,
        session_id=session,
        customer_id=customer,
        logged_in=customer is not None,
        ip=ip,
        user_agent=user_agent,
        device_type=DeviceType.DESKTOP,
        platform=Platform.LINUX,
        marketplace="us",
        ad_id="ad1",
        campaign_id=campaign,
        advertiser_id=advertiser,
    )


def _order(c: Click) -> tuple[int, int]:
    return epoch_ms(c.event_time), short_hash(c.click_id)


def reference(clicks: Sequence[Click], *, exact: bool = False) -> dict[str, dict[str, float]]:
    """Velocity and distinct features by the definition: per click, the entity's clicks ordered
    at or before it (by event time, click hash) from the start of the tile k - 1 tiles before
    its own (``exact``: the sliding window (t - w, t] instead)."""
    unique = list({c.click_id: c for c in clicks}.values())
    out: dict[str, dict[str, float]] = {}
    for c in unique:
        me = _order(c)
        t = me[0]
        row: dict[str, float] = {}
        for v in SPEC.velocity:
            fields = v.entity.fields
            key = entity_value(c, fields)
            before = sorted(
                _order(o)
                for o in unique
                if key is not None and entity_value(o, fields) == key and _order(o) <= me
            )
            for w in v.windows:
                start = (
                    t - w.seconds * 1000 + 1
                    if exact
                    else (t // w.tile_ms - w.tiles + 1) * w.tile_ms
                )
                row[f"{v.entity.name}_clicks_{w.name}"] = sum(s >= start for s, _ in before)
            if v.gap:
                gap = (t - before[-2][0]) / 1000 if len(before) > 1 else v.gap_cap_s
                row[f"{v.entity.name}_gap_s"] = min(gap, v.gap_cap_s)
        for d in SPEC.distinct:
            key = entity_value(c, d.entity.fields)
            first_tile = t // d.window.tile_ms - d.window.tiles + 1
            seen = {
                getattr(o, d.counted)
                for o in unique
                if key is not None
                and entity_value(o, d.entity.fields) == key
                and _order(o) <= me
                and epoch_ms(o.event_time) // d.window.tile_ms >= first_tile
                and getattr(o, d.counted) not in (None, "")
            }
            row[d.name] = len(seen)
        out[c.click_id] = row
    return out


def by_id(clicks: Sequence[Click], features: npt.NDArray[np.float32]) -> dict[str, list[float]]:
    return {c.click_id: features[i].tolist() for i, c in enumerate(clicks)}


def feature(features: npt.NDArray[np.float32], row: int, name: str) -> float:
    return float(features[row, INDEX[name]])


def assert_matches_reference(clicks: Sequence[Click], f: npt.NDArray[np.float32]) -> None:
    expected = reference(clicks)
    for i, c in enumerate(clicks):
        got = {n: feature(f, i, n) for n in expected[c.click_id]}
        assert got == expected[c.click_id], c.click_id


def mixed_stream(n: int, seed: int = 7) -> list[Click]:
    """A stream over few entities, with event-time ties, anonymous clicks and gaps of hours,
    in (event time, click hash) order."""
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
                advertiser=f"adv{rng.randrange(3)}",
                campaign=f"cmp{rng.randrange(4)}",
            )
        )
    return sorted(clicks, key=_order)


@pytest.fixture(params=["single", "cluster"])
def redis_settings(request: pytest.FixtureRequest) -> RedisSettings:
    """One Redis node (the session stack's) or a 3-node cluster, with a prefix of this test's."""
    if request.param == "single":
        base: RedisSettings = request.getfixturevalue("stack_settings").redis
    else:
        base = request.getfixturevalue("cluster_redis_settings")
    return base.model_copy(update={"key_prefix": f"fs-{uuid.uuid4().hex}:"})


@pytest.fixture
def admin(redis_settings: RedisSettings) -> Iterator[redis.Redis | RedisCluster]:
    if redis_settings.cluster_nodes:
        with RedisCluster(host=redis_settings.host, port=redis_settings.port) as cluster:
            yield cluster
    else:
        with redis.Redis(host=redis_settings.host, port=redis_settings.port) as client:
            yield client


def other_prefix(settings: RedisSettings, suffix: str) -> RedisSettings:
    return settings.model_copy(update={"key_prefix": settings.key_prefix + suffix})


# --- without Redis ------------------------------------------------------------------------


def test_every_feature_has_exactly_one_source() -> None:
    # A feature that neither Redis nor Python fills would silently reach the model as 0.
    sources = [FEATURES[c] for c in LAYOUT.redis_columns] + [*TIME_FEATURES, "logged_in"]
    sources += [c.name for c in SPEC.categorical]  # hashed from the click, no Redis
    assert sorted(sources) == sorted(FEATURES)


def test_adding_a_counter_over_an_entity_pair_is_one_line_of_spec() -> None:
    session_ad = Entity("session_ad", ("session_id", "ad_id"))
    spec = FeatureSpec(
        velocity=(*SPEC.velocity, Velocity(session_ad, WINDOWS)),
        distinct=SPEC.distinct,
    )
    assert "session_ad_clicks_1m" in spec.names and "session_ad_gap_s" in spec.names
    assert spec.digest() != SPEC.digest()
    layout = build_layout(spec)
    assert [k.entity.name for k in layout.kinds][-1] == "session_ad"
    # Clicks refuse control characters in ids; the key's separator stays unambiguous anyway.
    click = make_click("a", T0)
    force_setattr(click, "advertiser_id", "adv\x1fx")
    assert entity_value(click, ("ip", "advertiser_id")) == "10.0.0.1\x1fadv\ufffdx"
    anonymous = Entity("customer_advertiser", ("customer_id", "advertiser_id"))
    assert entity_value(make_click("b", T0, customer=None), anonymous.fields) is None


def test_epoch_ms_is_exact() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rng = random.Random(1)
    times = [T0 + timedelta(milliseconds=rng.randrange(10**9)) for _ in range(2000)]
    times += [T0 + timedelta(microseconds=rng.randrange(10**12)) for _ in range(2000)]
    # Tile boundaries are compared in ms: a click exactly 1 min old must be exactly 60000 ms.
    assert all(epoch_ms(t) == (t - epoch) // timedelta(milliseconds=1) for t in times)


def test_time_of_click_and_login_are_computed_locally() -> None:
    at = datetime(2026, 3, 7, 23, 30, 15, tzinfo=UTC)
    out = local_features([make_click("a", at), make_click("b", at, customer=None)])
    for name, value in zip(TIME_FEATURES, time_features(at), strict=True):
        assert out[:, INDEX[name]].tolist() == pytest.approx([value, value], abs=1e-6)
    assert out[:, INDEX["logged_in"]].tolist() == [1.0, 0.0]


def test_a_base_survives_encoding_and_drops_what_no_window_reads() -> None:
    ip = next(k for k in LAYOUT.kinds if k.entity.name == "ip")
    t = epoch_ms(T0)
    more = (0,) * (len(ip.sets) - 3)  # the IP's further distinct counts: no element
    records = [
        (t - 2 * 86_400_000, 1, 5, 0, 7, *more),
        (t - 30_000, 2, 5, 9, 7, *more),
        (t, 3, 6, 0, 8, *more),
    ]
    # Clicks two days apart: a compaction is due at once.
    folded = count_parts(
        [Part(ip, [None], np.zeros(3, dtype=np.int64), np.array(records, ip.dtype))]
    )
    back = decode_base(ip, folded.bases[0][0])
    assert back.newest == t and back.ring == [t, t - 30_000, t - 2 * 86_400_000]
    assert back.tiles[0] == {t // 5000: 1, (t - 30_000) // 5000: 1}  # the 2-day-old click is gone
    assert back.sets[0] == {5: (t - 30_000) // DAY.tile_ms, 6: t // DAY.tile_ms}


def test_a_prefix_with_hash_tag_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="hash tags"):
        RedisFeatureStore(RedisSettings(key_prefix="slidr:{x}:"))


# --- against Redis: one node and a cluster -------------------------------------------------


@integration
async def test_window_counts_and_gaps_of_clicks_30_s_apart(redis_settings: RedisSettings) -> None:
    offsets_s = [0, 30, 60, 90, 700, 4000, 95_000]
    clicks = [make_click(f"k{i}", T0 + timedelta(seconds=s)) for i, s in enumerate(offsets_s)]
    async with RedisFeatureStore(redis_settings) as store:
        f = await store.features(clicks)
    # At t=60 s the click at t=0 is exactly 1 min old: outside the minute window.
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
    assert_matches_reference(clicks, f)


@integration
async def test_an_ip_advertiser_pair_counts_its_own_clicks_and_lives_two_hours(
    redis_settings: RedisSettings, admin: redis.Redis | RedisCluster
) -> None:
    """Ad context: the (ip, advertiser) pair counts one IP's clicks on one advertiser, its gap
    stops at an hour, its state lives two hours after its last click (every append renews
    it), and the IP counts the advertisers it clicked."""
    at = [0, 20, 50, 60, 7250]  # seconds
    clicks = [
        make_click("a1", T0, advertiser="a", campaign="c1"),
        make_click("b1", T0 + timedelta(seconds=at[1]), advertiser="b", campaign="c2"),
        make_click("a2", T0 + timedelta(seconds=at[2]), advertiser="a", campaign="c3"),
        make_click("o1", T0 + timedelta(seconds=at[3]), advertiser="a", ip="10.9.9.9"),
        make_click("a3", T0 + timedelta(seconds=at[4]), advertiser="a", campaign="c1"),
    ]
    async with RedisFeatureStore(redis_settings) as store:
        f = await store.features(clicks[:4])
        pair = f"{redis_settings.key_prefix}e:*{{ip_advertiser:10.0.0.1\x1fa}}"
        (key,) = admin.scan_iter(match=pair)
        kind = next(k for k in LAYOUT.kinds if k.entity.name == "ip_advertiser")
        assert kind.ttl_ms == 7_200_000 and kind.refresh
        assert 7_140_000 < admin.pttl(key) <= 7_200_000
        admin.pexpire(key, 60_000)
        f = np.concatenate([f, await store.features(clicks[4:])])
        assert admin.pttl(key) > 7_140_000  # the append renewed it
    pair_of = {
        n: [feature(f, i, n) for i in range(5)]
        for n in FEATURES
        if "advertiser" in n and n not in {c.name for c in SPEC.categorical}
    }
    assert pair_of == {
        # a1, b1, a2 from one IP; o1 from another IP; a3 two hours later.
        "ip_advertiser_clicks_10m": [1, 1, 2, 1, 1],
        "ip_advertiser_clicks_1h": [1, 1, 2, 1, 1],
        "ip_advertiser_gap_s": [3600, 3600, 50, 3600, 3600],  # 7,200 s, capped at 1 h
        "ip_distinct_advertisers": [1, 2, 2, 1, 2],
    }
    assert [feature(f, i, "ip_clicks_10m") for i in range(5)] == [1, 2, 3, 1, 1]
    assert_matches_reference(clicks, f)


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
async def test_same_features_however_the_stream_is_batched(
    redis_settings: RedisSettings,
) -> None:
    # Long enough for every entity's log to be compacted several times.
    clicks = mixed_stream(400)
    async with RedisFeatureStore(other_prefix(redis_settings, "one:")) as store:
        whole = await store.features(clicks)
    async with RedisFeatureStore(other_prefix(redis_settings, "many:")) as store:
        parts = [await store.features(clicks[i : i + 7]) for i in range(0, len(clicks), 7)]
    # Two workers (two stores, no shared Python state) taking turns on the same keys.
    two = other_prefix(redis_settings, "two:")
    async with RedisFeatureStore(two) as a, RedisFeatureStore(two) as b:
        turns = [
            await (a if (i // 13) % 2 else b).features(clicks[i : i + 13])
            for i in range(0, len(clicks), 13)
        ]
    assert np.array_equal(np.concatenate(parts), whole)
    assert np.array_equal(np.concatenate(turns), whole)
    assert_matches_reference(clicks, whole)


@integration
async def test_arrival_order_within_a_batch_does_not_matter_and_late_clicks_count(
    redis_settings: RedisSettings,
) -> None:
    clicks = mixed_stream(120)
    shuffled = random.Random(3).sample(clicks, len(clicks))
    async with RedisFeatureStore(other_prefix(redis_settings, "in-order:")) as store:
        want = by_id(clicks, await store.features(clicks))
    async with RedisFeatureStore(other_prefix(redis_settings, "shuffled:")) as store:
        got = by_id(shuffled, await store.features(shuffled))
    assert got == want
    # A click 10 minutes late, after its successors: the clicks after it count it.
    late, rest = clicks[60], clicks[:60] + clicks[61:]
    probe = make_click(
        "probe", clicks[-1].event_time + timedelta(seconds=1), session=late.session_id,
        customer=late.customer_id, ip=late.ip,
    )  # fmt: skip
    async with RedisFeatureStore(other_prefix(redis_settings, "late:")) as store:
        await store.features(rest)
        await store.features([late])
        after = await store.features([probe])
    expected = reference([*clicks, probe])["probe"]
    assert {n: feature(after, 0, n) for n in expected} == expected


@integration
async def test_a_redelivered_click_gets_its_first_row_and_counts_once(
    redis_settings: RedisSettings,
) -> None:
    clicks = [make_click(f"k{i}", T0 + timedelta(seconds=10 * i)) for i in range(5)]
    async with RedisFeatureStore(redis_settings) as store:
        first = await store.features(clicks)
        # A late click of another session on the IP: a recount would see 2 sessions.
        await store.features([make_click("other", T0 - timedelta(seconds=1), session="s2")])
        again = await store.features(clicks)
        twice_in_one_batch = await store.features(clicks + clicks)
        mixed = await store.features([clicks[2], make_click("k5", T0 + timedelta(seconds=50))])
    assert np.array_equal(first, again)
    assert np.array_equal(twice_in_one_batch, np.concatenate([first, first]))
    assert np.array_equal(mixed[0], first[2])
    assert feature(mixed, 1, "session_clicks_1m") == 6  # five before, then itself
    assert feature(mixed, 1, "ip_distinct_sessions") == 2


@integration
async def test_past_the_row_horizon_a_redelivery_is_computed_again(
    redis_settings: RedisSettings,
) -> None:
    short = redis_settings.model_copy(update={"row_horizon_s": 1})
    click = make_click("a", T0)
    async with RedisFeatureStore(short) as store:
        await store.features([click])
        await store.features([make_click("b", T0 - timedelta(seconds=1), session="s2")])
        time.sleep(1.5)
        again = await store.features([click])
    # Not from the row cache any more: the late session, ordered before it, is counted now.
    assert feature(again, 0, "ip_distinct_sessions") == 2
    assert feature(again, 0, "session_clicks_1m") == 1  # still in the log: counted once


@integration
async def test_distinct_counts_over_the_last_24_hourly_tiles(
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
    later = make_click("d1", day + timedelta(days=1, hours=19), session="s-next")
    much_later = make_click("d2", day + timedelta(days=1, hours=20), session="s-later")
    async with RedisFeatureStore(redis_settings) as store:
        f = await store.features(clicks)
        f1 = await store.features([later])
        f2 = await store.features([much_later])
    last = len(clicks) - 2
    assert feature(f, last, "ip_distinct_sessions") == 40
    assert feature(f, last, "ip_distinct_customers") == 5
    assert feature(f, last, "ip_distinct_user_agents") == 3
    assert feature(f, last + 1, "customer_distinct_ips") == 2  # c0 from two IPs
    assert feature(f1, 0, "ip_distinct_sessions") == 41  # 23 h later: all 40, and s-next
    assert feature(f2, 0, "ip_distinct_sessions") == 2  # 24 h later: day 0 has left the window


@integration
async def test_windowed_counts_stay_within_the_documented_bound(
    redis_settings: RedisSettings,
) -> None:
    """Simulated-like traffic (bursty bots, slow humans): each count is at most the exact
    sliding-window count and misses at most the clicks of one tile at the window's old end."""
    rng = random.Random(11)
    clicks: list[Click] = []
    for i in range(600):
        bot = rng.random() < 0.5
        at = T0 + timedelta(milliseconds=rng.randrange(3_600_000 if bot else 7_200_000))
        clicks.append(
            make_click(
                f"b{i}", at,
                session="bot" if bot else f"h{rng.randrange(40)}",
                ip="10.6.6.6" if bot else f"10.1.0.{rng.randrange(20)}",
                customer=None if bot else f"c{rng.randrange(30)}",
            )
        )  # fmt: skip
    clicks.sort(key=_order)
    async with RedisFeatureStore(redis_settings) as store:
        f = np.concatenate([await store.features(clicks[i : i + 50]) for i in range(0, 600, 50)])
    tiled, exact = reference(clicks), reference(clicks, exact=True)
    compacted = 0
    for i, c in enumerate(clicks):
        t = epoch_ms(c.event_time)
        for v in SPEC.velocity:
            key = entity_value(c, v.entity.fields)
            for w in v.windows:
                name = f"{v.entity.name}_clicks_{w.name}"
                got, sliding = feature(f, i, name), exact[c.click_id][name]
                edge_start = t - w.seconds * 1000
                edge = sum(
                    edge_start < epoch_ms(o.event_time) < edge_start + w.tile_ms
                    for o in clicks
                    if key is not None and entity_value(o, v.entity.fields) == key
                )
                assert got == tiled[c.click_id][name]
                assert sliding - edge <= got <= sliding, (c.click_id, name)
                compacted += got > COMPACT_RECORDS
    assert compacted  # the bot's counts went through compaction


@integration
async def test_the_cap_bounds_an_entitys_state(
    redis_settings: RedisSettings, admin: redis.Redis | RedisCluster
) -> None:
    clicks = [
        make_click(f"n{i}", T0 + timedelta(milliseconds=10 * i), session=f"s{i}")
        for i in range(700)
    ]
    async with RedisFeatureStore(redis_settings) as store:
        f = np.concatenate([await store.features(clicks[i : i + 100]) for i in range(0, 700, 100)])
    assert feature(f, 699, "ip_distinct_sessions") == 512
    key = next(iter(admin.scan_iter(match=f"{redis_settings.key_prefix}e:*{{ip:10.0.0.1}}")))
    assert admin.strlen(key) < 8_000  # 512 elements and tiles, not 700 clicks' records


@integration
async def test_every_key_expires(
    redis_settings: RedisSettings, admin: redis.Redis | RedisCluster
) -> None:
    async with RedisFeatureStore(redis_settings) as store:
        await store.features(mixed_stream(50))
    keys = list(admin.scan_iter(match=f"{redis_settings.key_prefix}*"))
    assert any(b":e:" in k for k in keys) and any(b":rows:" in k for k in keys)
    ttl_s = {f":e:{k.digest}:".encode(): k.ttl_ms // 1000 for k in LAYOUT.kinds}
    assert max(ttl_s.values()) == ENTITY_TTL_S
    for key in keys:
        limit = next((s for d, s in ttl_s.items() if d in key), redis_settings.row_horizon_s)
        assert limit - 60 < admin.ttl(key) <= limit, key


@integration
async def test_one_script_call_per_node_and_step(redis_settings: RedisSettings) -> None:
    clicks = mixed_stream(500)
    async with RedisFeatureStore(redis_settings) as store:
        await store.features(clicks[:250])
        before = store.round_trips
        await store.features(clicks[250:])
        sent = store.round_trips - before
    nodes = redis_settings.cluster_nodes or 1
    assert 2 <= sent <= 2 * nodes  # read-and-append, then rows, on each node holding keys


@integration
async def test_a_namespace_is_dropped_on_every_node(
    redis_settings: RedisSettings, admin: redis.Redis | RedisCluster
) -> None:
    async with RedisFeatureStore(redis_settings) as store:
        await store.features(mixed_stream(60))
        assert await store.drop_namespace() > 0
    assert not list(admin.scan_iter(match=f"{redis_settings.key_prefix}*"))


@integration
async def test_memory_is_reported_per_node(redis_settings: RedisSettings) -> None:
    async with RedisFeatureStore(redis_settings) as store:
        await store.features(mixed_stream(20))
        nodes = await store.memory()
    assert len(nodes) == (redis_settings.cluster_nodes or 1)
    assert all(n.used_bytes > 0 and n.keys > 0 and n.max_bytes > 0 for n in nodes)


@integration
async def test_a_cluster_gives_the_features_of_one_node(
    stack_settings: Settings, cluster_redis_settings: RedisSettings
) -> None:
    clicks = mixed_stream(300, seed=5)
    prefix = f"same-{uuid.uuid4().hex}:"
    single = stack_settings.redis.model_copy(update={"key_prefix": prefix})
    cluster = cluster_redis_settings.model_copy(update={"key_prefix": prefix})
    async with RedisFeatureStore(single) as one, RedisFeatureStore(cluster) as many:
        for i in range(0, 300, 40):
            assert np.array_equal(
                await one.features(clicks[i : i + 40]), await many.features(clicks[i : i + 40])
            )


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
    stack_settings: Settings,
) -> None:
    settings = stack_settings.redis.model_copy(update={"key_prefix": f"fs-{uuid.uuid4().hex}:"})
    with redis.Redis(host=settings.host, port=settings.port) as admin:

        def store_clients() -> set[str]:
            return {c["id"] for c in admin.client_list() if c["name"] == "slidr-feature-store"}

        others = store_clients()
        async with RedisFeatureStore(settings) as store:
            first = await store.features([make_click("a", T0)])
            mine = store_clients() - others
            assert mine
            for client_id in mine:
                admin.client_kill_filter(_id=client_id)
            await store.ping()
            assert np.array_equal(await store.features([make_click("a", T0)]), first)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisService]:
    """A 3-node cluster of this test's own, to break."""
    service = RedisService(cluster_settings(tmp_path))
    service.start()
    try:
        yield service
    finally:
        service.proc.stop()


@integration
async def test_losing_a_cluster_node_fails_open_and_recovers(own_cluster: RedisService) -> None:
    settings = own_cluster.settings
    clicks = mixed_stream(60)
    async with RedisFeatureStore(settings, timeout_s=0.5) as store:
        before = await store.features(clicks[:30])
        own_cluster.proc.members[1].stop()
        started = time.monotonic()
        with pytest.raises(FeatureStoreUnavailable, match="Redis Cluster"):
            await store.features(clicks[30:])
        assert time.monotonic() - started < 5
        # The cluster comes back (empty: nothing is persisted); the same store recovers.
        own_cluster.proc.stop()
        own_cluster.start()
        again = await store.features(clicks[:30])
    assert np.array_equal(again, before)


@integration
async def test_slots_that_move_are_followed(own_cluster: RedisService) -> None:
    """A resharding under a running store: the stale slot map costs a refresh, not a batch."""
    clicks = mixed_stream(90)
    first, second = own_cluster.ports[0], own_cluster.ports[1]
    async with RedisFeatureStore(own_cluster.settings) as store:
        got = [await store.features(clicks[:30])]
        # Every slot of the first node moves, with its keys, to the second.
        ids = {p: redis.Redis(port=p).cluster("myid") for p in (first, second)}
        subprocess.run(
            [
                "redis-cli", "--cluster", "reshard", f"127.0.0.1:{first}",
                "--cluster-from", ids[first], "--cluster-to", ids[second],
                "--cluster-slots", "16384", "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        got += [await store.features(clicks[30:60]), await store.features(clicks[60:])]
    assert_matches_reference(clicks, np.concatenate(got))
