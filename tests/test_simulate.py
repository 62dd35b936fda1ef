"""The traffic simulator: realistic shape, ground truth kept apart, determinism, valid events."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import typer
from typer.testing import CliRunner

from slidr.cli.simulate import simulate
from slidr.events import Click, Purchase
from slidr.settings import Settings
from slidr.simulate import catalog
from slidr.simulate.bots import PUBLISHER_KINDS, BotKind
from slidr.simulate.config import SimConfig, SimulationConfigError, parse_mix
from slidr.simulate.encode import click_values, purchase_values
from slidr.simulate.generator import Generator, HourBatch
from slidr.simulate.runner import run
from slidr.simulate.sinks import KafkaSink, ParquetSink
from slidr.slices import slice_of

MONDAY = datetime(2026, 1, 5, tzinfo=UTC)
PUBLISHER_NAMES = [k.value for k in PUBLISHER_KINDS]


def _config(**overrides: object) -> SimConfig:
    settings: dict[str, object] = {"start": MONDAY, "days": 2, "clicks_per_day": 10_000}
    settings.update(overrides)
    return SimConfig(**settings)  # type: ignore[arg-type]


def _collect(config: SimConfig) -> tuple[pa.Table, pa.Table, pa.Table]:
    batches: list[HourBatch] = list(Generator(config).hours())
    return (
        pa.concat_tables([b.clicks for b in batches]),
        pa.concat_tables([b.purchases for b in batches]),
        pa.concat_tables([b.truth for b in batches]),
    )


@pytest.fixture(scope="module")
def week() -> tuple[pa.Table, pa.Table, pa.Table]:
    return _collect(_config(days=7, clicks_per_day=20_000))


def _human_hours(clicks: pa.Table, truth: pa.Table) -> npt.NDArray[np.int64]:
    human = ~truth.column("is_bot").to_numpy(zero_copy_only=False)
    hours = pc.hour(clicks.column("event_time")).to_numpy()
    return np.bincount(hours[human], minlength=24)


def test_humans_click_far_less_at_night_than_in_the_evening(week: tuple[pa.Table, ...]) -> None:
    clicks, _, truth = week
    per_hour = _human_hours(clicks, truth)
    assert per_hour[2:6].mean() < 0.25 * per_hour[18:22].mean()


def test_humans_click_more_on_weekends(week: tuple[pa.Table, ...]) -> None:
    clicks, _, truth = week
    human = ~truth.column("is_bot").to_numpy(zero_copy_only=False)
    weekday = pc.day_of_week(clicks.column("event_time")).to_numpy()[human]  # Monday = 0
    per_day = np.bincount(weekday, minlength=7)
    assert per_day[5:].mean() > 1.1 * per_day[:5].mean()


def test_bot_share_roughly_matches_the_config(week: tuple[pa.Table, ...]) -> None:
    _, _, truth = week
    share = pc.mean(truth.column("is_bot").cast(pa.float64())).as_py()
    assert 0.22 < share < 0.38
    none = _collect(_config(days=1, bot_share=0.0))[2]
    assert not pc.any(none.column("is_bot")).as_py()


def test_night_attacks_make_bots_dominate_some_night_hours(week: tuple[pa.Table, ...]) -> None:
    clicks, _, truth = week
    kinds = truth.column("bot_kind").to_numpy(zero_copy_only=False)
    hours = pc.hour(clicks.column("event_time")).to_numpy()
    assert set(hours[kinds == BotKind.NIGHT_BURST.value]) <= {0, 1, 2, 3, 4}
    night = (hours >= 1) & (hours <= 3)
    assert (kinds[night] != "human").mean() > 0.5


def test_ground_truth_never_reaches_the_events(week: tuple[pa.Table, ...]) -> None:
    clicks, purchases, truth = week
    assert set(clicks.column_names) == set(Click.__struct_fields__)
    assert set(purchases.column_names) == set(Purchase.__struct_fields__)
    assert clicks.column("click_id").equals(truth.column("click_id"))
    # Click ids are numbered in a shuffled order, so they do not reveal humans vs bots either.
    parts = np.array([c.split("-")[1:] for c in clicks.column("click_id").to_pylist()], int)
    hour, serial = parts[:, 0], parts[:, 1].astype(float)
    _, hour_index = np.unique(hour, return_inverse=True)
    position = serial / np.bincount(hour_index, weights=np.ones(len(hour)))[hour_index]
    is_bot = truth.column("is_bot").to_numpy(zero_copy_only=False)
    assert abs(position[is_bot].mean() - position[~is_bot].mean()) < 0.05


def test_click_ids_are_unique(week: tuple[pa.Table, ...]) -> None:
    clicks = week[0]
    assert pc.count_distinct(clicks.column("click_id")).as_py() == clicks.num_rows


def test_purchases_follow_human_clicks_of_the_same_session(week: tuple[pa.Table, ...]) -> None:
    clicks, purchases, truth = week
    joined = purchases.join(
        clicks.select(["click_id", "session_id", "customer_id", "event_time"]).rename_columns(
            ["click_id", "c_session", "c_customer", "c_time"]
        ),
        "click_id",
    ).join(truth.select(["click_id", "is_bot"]), "click_id")
    assert joined.num_rows == purchases.num_rows > 0  # every purchase links to an emitted click
    assert not pc.any(joined.column("is_bot")).as_py()
    assert pc.all(pc.greater(joined.column("event_time"), joined.column("c_time"))).as_py()
    assert joined.column("session_id").equals(joined.column("c_session"))
    assert joined.column("customer_id").equals(joined.column("c_customer"))
    human_clicks = clicks.num_rows - pc.sum(truth.column("is_bot")).as_py()
    assert 0.005 < purchases.num_rows / human_clicks < 0.08


def test_every_event_validates_and_json_matches_the_models() -> None:
    for batch in Generator(_config(days=1, clicks_per_day=5000)).hours():
        values = click_values(batch.clicks, batch.start)
        for row, value in zip(batch.clicks.to_pylist(), values, strict=True):
            assert msgspec.convert(row, Click).to_json() == value
        values = purchase_values(batch.purchases, batch.start)
        for row, value in zip(batch.purchases.to_pylist(), values, strict=True):
            assert msgspec.convert(row, Purchase).to_json() == value


def test_bot_mix_differs_by_slice(week: tuple[pa.Table, ...]) -> None:
    clicks, _, truth = week
    kinds = truth.column("bot_kind").to_numpy(zero_copy_only=False)
    device = clicks.column("device_type").to_numpy(zero_copy_only=False)
    logged_in = clicks.column("logged_in").to_numpy(zero_copy_only=False)

    def share(kind: str, dev: str) -> float:
        bots = (device == dev) & (kinds != "human")
        return float((kinds[bots] == kind).mean())

    assert share("scraper", "desktop") > 3 * share("scraper", "app")
    assert share("residential_proxy", "app") > 2 * share("residential_proxy", "desktop")
    # Logged-in traffic is far less robotic: only hijacked accounts log in.
    assert set(kinds[logged_in & (kinds != "human")]) == {"hijacked_account"}
    slices = {slice_of(d, li) for d, li in zip(device, logged_in, strict=True)}
    assert len(slices) == 6


def test_many_humans_share_carrier_and_corporate_ips(week: tuple[pa.Table, ...]) -> None:
    clicks, _, truth = week
    human = pc.invert(truth.column("is_bot"))
    humans = clicks.filter(human).select(["ip", "session_id"])
    per_ip = humans.group_by("ip").aggregate([("session_id", "count_distinct")])
    assert pc.max(per_ip.column("session_id_count_distinct")).as_py() >= 50
    # Residential proxies hide bots behind IPs that humans use too.
    bot_ips = set(clicks.filter(truth.column("is_bot")).column("ip").to_pylist())
    assert len(bot_ips & set(humans.column("ip").to_pylist())) > 20


def _columns(clicks: pa.Table, truth: pa.Table, *names: str) -> list[npt.NDArray[Any]]:
    table = clicks.append_column("bot_kind", truth.column("bot_kind"))
    return [table.column(n).to_numpy(zero_copy_only=False) for n in names]


def test_humans_see_placements_by_popularity(week: tuple[pa.Table, ...]) -> None:
    clicks, _, truth = week
    human = pc.equal(truth.column("bot_kind"), "human")
    shown = clicks.filter(pc.and_(human, pc.is_valid(clicks.column("placement"))))
    _, counts = np.unique(
        shown.column("placement").to_numpy(zero_copy_only=False), return_counts=True
    )
    assert len(counts) == len(catalog.PLACEMENTS)  # humans reach every placement ...
    assert counts.max() > 10 * counts.min()  # ... but some far more than others


@pytest.mark.parametrize("kind", PUBLISHER_NAMES)
def test_publisher_fraud_sits_on_few_placements_and_campaigns(
    week: tuple[pa.Table, ...], kind: str
) -> None:
    clicks, _, truth = week
    placement, campaign, kinds = _columns(clicks, truth, "placement", "campaign_id", "bot_kind")
    mine = kinds == kind
    assert mine.sum() > 200
    places = set(placement[mine])
    # One publisher's slots (no search query, never a missing placement), a few campaigns.
    assert len(places) <= len(catalog.PUBLISHER_SLOTS)
    assert len({str(p).split("/")[0] for p in places}) == 1
    assert all(str(p).startswith("pub:") for p in places)
    assert len(set(campaign[mine])) <= 3
    # Each fraud kind has a publisher of its own.
    others = kinds != kind
    assert places.isdisjoint(set(placement[others & np.isin(kinds, PUBLISHER_NAMES)]))
    # Humans click there too, rarely: the placement is a strong hint, not a label.
    human = kinds == "human"
    on_fraud_place = np.isin(placement, list(places))
    assert 0 < (human & on_fraud_place).sum() < 0.05 * human.sum()
    assert (mine & on_fraud_place).sum() > (human & on_fraud_place).sum()


def test_click_spam_and_ad_stacking_come_from_real_visitors_devices(
    week: tuple[pa.Table, ...],
) -> None:
    clicks, _, truth = week
    ip, ua, kinds = _columns(clicks, truth, "ip", "user_agent", "bot_kind")
    human = kinds == "human"
    human_ips, human_uas = set(ip[human]), set(ua[human])
    odd = {u.text for u in catalog.USER_AGENTS if u.odd}
    for kind in (BotKind.CLICK_SPAM, BotKind.AD_STACKING):
        mine = kinds == kind.value
        # Hijacked devices: the owners' home and carrier IPs and browsers; nothing headless.
        assert np.isin(ip[mine], list(human_ips)).mean() > 0.7
        assert set(ua[mine]) <= human_uas
        assert not set(ua[mine]) & odd


def test_ad_stacking_clicks_several_ads_of_one_slot_within_a_second(
    week: tuple[pa.Table, ...],
) -> None:
    clicks, _, truth = week
    stacked = clicks.filter(pc.equal(truth.column("bot_kind"), BotKind.AD_STACKING.value))
    per_tap = stacked.group_by("session_id").aggregate(
        [("event_time", "min"), ("event_time", "max"), ("ad_id", "count_distinct"),
         ("placement", "count_distinct"), ("ad_id", "count")]
    )  # fmt: skip
    several = pc.greater(per_tap.column("ad_id_count"), 1)
    taps = per_tap.filter(several)
    assert taps.num_rows > 50
    span_ms = pc.subtract(taps.column("event_time_max"), taps.column("event_time_min")).cast(
        pa.int64()
    )
    clicks_per_tap = taps.column("ad_id_count").to_numpy()
    # A stack of n ads: n clicks in well under a second per ad, on n different ads mostly.
    assert np.median(span_ms.to_numpy() / (clicks_per_tap - 1)) < 500
    assert np.mean(taps.column("ad_id_count_distinct").to_numpy() / clicks_per_tap) > 0.8
    assert set(per_tap.column("placement_count_distinct").to_pylist()) == {1}


def test_click_farm_works_shifts_on_few_lines_with_human_agents(
    week: tuple[pa.Table, ...],
) -> None:
    clicks, _, truth = week
    farm = clicks.filter(pc.equal(truth.column("bot_kind"), BotKind.CLICK_FARM.value))
    ips = farm.column("ip").to_numpy(zero_copy_only=False)
    assert len(set(ips)) <= 4  # racks of phones behind a few lines ...
    assert (
        farm.group_by("ip")
        .aggregate([("session_id", "count_distinct")])
        .column("session_id_count_distinct")
        .to_numpy()
        .min()
        > 20
    )  # ... each line carrying many sessions
    odd = {u.text for u in catalog.USER_AGENTS if u.odd}
    assert not set(farm.column("user_agent").to_pylist()) & odd
    hours = pc.hour(farm.column("event_time")).to_numpy()
    assert np.isin(hours, range(1, 13)).mean() > 0.8  # the farm's day, the marketplaces' night
    assert not pc.any(farm.column("logged_in")).as_py()


def test_only_publisher_fraud_when_the_mix_says_so() -> None:
    mix = parse_mix("click_spam=1,ad_stacking=1,click_farm=1")
    config = _config(days=1, bot_mix=mix)
    first, _, truth = _collect(config)
    again, _, _ = _collect(config)
    assert first.equals(again)  # deterministic for the new kinds too
    kinds = set(truth.column("bot_kind").to_pylist())
    assert kinds == {"human", *PUBLISHER_NAMES}


def _daily_mix_ratio(truth: pa.Table, kind: str) -> float:
    """Largest / smallest daily share of ``kind`` among bot clicks."""
    days = pc.day(truth.column("event_time")).to_numpy()
    kinds = truth.column("bot_kind").to_numpy(zero_copy_only=False)
    shares = [float((kinds[(days == d) & (kinds != "human")] == kind).mean()) for d in set(days)]
    return max(shares) / min(shares)


def test_bot_mix_drifts_from_day_to_day_unless_drift_is_off() -> None:
    # Kinds with short sessions: their daily counts are not dominated by sampling noise. The
    # denominator (all bot clicks of a day) holds scrapers' and night attacks' long sessions,
    # whose counts are noisy: 60,000 clicks a day keep that noise well under the drift.
    kinds = ("low_and_slow", "botnet", "residential_proxy", "click_spam")
    _, _, drifting = _collect(_config(days=4, clicks_per_day=60_000, seed=3))
    assert max(_daily_mix_ratio(drifting, k) for k in kinds) > 1.4
    _, _, still = _collect(_config(days=4, clicks_per_day=60_000, seed=3, drift=0.0))
    assert max(_daily_mix_ratio(still, k) for k in kinds) < 1.3


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files_and_other_seeds_differ(tmp_path: Path) -> None:
    digests = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        run(_config(days=1, seed=seed), [ParquetSink(tmp_path / name)])
        digests.append(_digest(tmp_path / name))
    assert digests[0] == digests[1]
    assert any(k.startswith("clicks/date=2026-01-05/hour=") for k in digests[0])
    assert "customers.parquet" in digests[0]
    changed = [k for k in digests[0] if digests[0][k] != digests[2].get(k)]
    assert len(changed) > len(digests[0]) // 2


def test_a_later_start_with_the_same_origin_continues_the_world() -> None:
    """The demo's live days once replayed the first days of its history (same seed, later
    start), so the network was judged on clicks it had trained on. With the world's origin
    kept, a later window is the same world's continuation: the clicks one long run makes."""
    whole, _, _ = _collect(_config(days=3, seed=5))
    later = MONDAY.replace(day=MONDAY.day + 2)
    continued, _, _ = _collect(_config(days=1, seed=5, start=later, origin=MONDAY))
    replayed, _, _ = _collect(_config(days=1, seed=5, start=later))

    def ids(clicks: pa.Table, day: int) -> set[str]:
        first = MONDAY.replace(day=MONDAY.day + day)
        start = pa.scalar(first, clicks.column("event_time").type)
        end = pa.scalar(first.replace(day=first.day + 1), clicks.column("event_time").type)
        t = clicks.column("event_time")
        inside = pc.and_(pc.greater_equal(t, start), pc.less(t, end))
        return set(clicks.filter(inside).column("click_id").to_pylist())

    def shape(clicks: pa.Table) -> set[tuple[int, str, str]]:
        """Time of day (ms), IP and ad of every click: what a replay repeats."""
        ms = pc.cast(clicks.column("event_time"), pa.int64()).to_numpy() % 86_400_000
        ip, ad = clicks["ip"].to_pylist(), clicks["ad_id"].to_pylist()
        return set(zip(ms.tolist(), ip, ad, strict=True))

    third = ids(whole, 2)
    assert ids(continued, 2) <= third
    # Only sessions that started before the window are missing from the continuation.
    assert len(ids(continued, 2)) > 0.98 * len(third)
    first_day = whole.filter(pc.is_in(whole.column("click_id"), pa.array(sorted(ids(whole, 0)))))
    assert shape(replayed) == shape(first_day)
    assert len(shape(continued) & shape(first_day)) < 0.01 * len(shape(first_day))


def test_parquet_layout_reads_back_with_hive_partitions(tmp_path: Path) -> None:
    summary = run(_config(days=1), [ParquetSink(tmp_path)])
    clicks = ds.dataset(tmp_path / "clicks", partitioning="hive").to_table()
    truth = ds.dataset(tmp_path / "truth", partitioning="hive").to_table()
    assert clicks.num_rows == truth.num_rows == summary.clicks
    assert sorted(set(clicks.column("hour").to_pylist())) == list(range(24))
    hours = pc.hour(clicks.column("event_time")).cast(pa.int32())
    assert pc.all(pc.equal(hours, clicks.column("hour").cast(pa.int32()))).as_py()
    customers = pa.parquet.read_table(tmp_path / "customers.parquet")
    assert customers.column_names == [
        "customer_id", "recency_days", "frequency", "monetary", "rfm_score",
    ]  # fmt: skip
    assert pc.min(customers.column("rfm_score")).as_py() >= 0.0
    assert pc.max(customers.column("rfm_score")).as_py() <= 1.0
    with pytest.raises(Exception, match="--overwrite"):
        ParquetSink(tmp_path)


def test_config_rejects_out_of_range_values() -> None:
    with pytest.raises(SimulationConfigError, match="bot_share"):
        _config(bot_share=1.5)
    with pytest.raises(SimulationConfigError, match="days"):
        _config(days=0)
    with pytest.raises(SimulationConfigError, match="at or before the start"):
        _config(origin=MONDAY.replace(day=6))
    with pytest.raises(SimulationConfigError, match="unknown bot kind"):
        parse_mix("spider=1")
    assert parse_mix("scraper=2")[BotKind.SCRAPER] == 2.0


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command(name="simulate")(simulate)

    @app.callback()
    def _root() -> None: ...

    return app


def test_cli_writes_parquet_and_prints_a_summary(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["simulate", "--days", "1", "--clicks-per-day", "5000", "--seed", "3",
         "--start", "2026-01-05T00:00Z", "--out", str(tmp_path), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "clicks" in result.output and "bots" in result.output
    assert "desktop/out" in result.output
    assert (tmp_path / "simulation.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "-1"], "--days"),
        (["--bot-share", "1.5"], "bot_share"),
        (["--to", "s3"], "--to"),
        (["--bot-mix", "spider=1"], "unknown bot kind"),
        (["--bot-mix", "click_spam=1,adware=1"], "unknown bot kind 'adware'"),
    ],
)
def test_cli_refuses_bad_arguments_with_a_message(
    cli: typer.Typer, tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, ["simulate", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_takes_the_publisher_fraud_kinds_in_the_bot_mix(
    cli: typer.Typer, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        ["simulate", "--days", "1", "--clicks-per-day", "5000", "--seed", "3",
         "--start", "2026-01-05T00:00Z", "--out", str(tmp_path), "--no-progress",
         "--bot-mix", "click_spam=2,ad_stacking=1,click_farm=1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    truth = ds.dataset(tmp_path / "truth", partitioning="hive").to_table()
    assert set(truth.column("bot_kind").to_pylist()) == {"human", *PUBLISHER_NAMES}


def test_default_window_ends_at_the_current_hour() -> None:
    from slidr.simulate.config import current_hour, window_ending_now

    now = datetime(2026, 3, 4, 10, 42, tzinfo=UTC)
    assert current_hour(now) == datetime(2026, 3, 4, 10, tzinfo=UTC)
    assert window_ending_now(2, now) == datetime(2026, 3, 2, 10, tzinfo=UTC)


@pytest.mark.integration
def test_a_simulated_hour_arrives_on_kafka_with_the_exact_count(stack_settings: Settings) -> None:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from slidr.kafka_config import client_config

    suffix = uuid.uuid4().hex[:8]
    topics = [f"test.sim.{name}.{suffix}" for name in ("clicks", "purchases", "truth")]
    admin = AdminClient(client_config(stack_settings.kafka))
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in topics]).values():
        future.result(30)
    try:
        config = _config(days=1, clicks_per_day=24 * 2000)
        batch = next(Generator(config).hours())
        sink = KafkaSink(stack_settings.kafka, topics[0], topics[1], topics[2])
        sink.write_hour(batch)
        sink.close()
        expected = {topics[0]: batch.clicks.num_rows, topics[1]: batch.purchases.num_rows}
        expected[topics[2]] = batch.clicks.num_rows
        got = dict.fromkeys(topics, 0)
        first_values: list[bytes] = []
        consumer = Consumer(
            client_config(
                stack_settings.kafka,
                {"group.id": f"test-sim-{suffix}", "auto.offset.reset": "earliest"},
            )
        )
        try:
            consumer.subscribe(topics)
            for message in _messages(consumer, sum(expected.values())):
                got[message.topic()] += 1
                if message.topic() == topics[0] and len(first_values) < 50:
                    first_values.append(message.value())
        finally:
            consumer.close()
        assert got == expected
        for value in first_values:
            assert b"is_bot" not in value and b"bot_kind" not in value
            msgspec.json.decode(value, type=Click)
    finally:
        admin.delete_topics(topics)


def _messages(consumer: Any, count: int) -> Iterator[Any]:
    seen, idle = 0, 0
    while seen < count and idle < 30:
        message = consumer.poll(1.0)
        if message is None:
            idle += 1
            continue
        assert message.error() is None, message.error()
        seen += 1
        yield message
    # Make sure nothing extra arrives after the expected count.
    extra = consumer.poll(2.0)
    assert extra is None or extra.error() is not None
