"""`slidr archive`: Kafka -> Parquet exactly once, on the real stack; the on-disk rules alone."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer

from slidr.archive import SCHEMAS, ArchiveError, feature_matrix, read_dataset
from slidr.events import Click, Decision, Purchase, Verdict
from slidr.features import FEATURE_HASH, N_FEATURES
from slidr.settings import ArchiveSettings, Settings
from slidr.simulate.config import SimConfig
from slidr.simulate.generator import Generator
from slidr.slices import slice_of
from streams.archive.consumer import Archiver
from streams.archive.store import (
    Segment,
    commit,
    committed_offset,
    discard_uncommitted,
    exclusive,
    write_segment,
)
from streams.archive.tables import MODELS, hour_tables, to_table
from tests.factories import make_click
from tests.stack_fixtures import settings_env
from tests.worker_harness import SLIDR, isolated, produce

HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)


def _clicks(
    n: int, prefix: str, start: datetime = HOUR, step: timedelta = timedelta(minutes=7)
) -> list[Click]:
    return [
        make_click(i, prefix=prefix, at=start + i * step, customer=f"u-{i % 4}") for i in range(n)
    ]


def _decision(click: Click, degraded: bool = False) -> Decision:
    return Decision(
        click_id=click.click_id,
        event_time=click.event_time,
        verdict=Verdict.VALID if degraded else Verdict.INVALID,
        score=0.0 if degraded else 0.9,
        threshold=0.5,
        slice=slice_of(click.device_type, click.logged_in),
        model_name="slidr",
        model_version=3,
        reason_codes=["degraded:redis"] if degraded else ["model", "velocity"],
        feature_hash=FEATURE_HASH,
        features=[] if degraded else [float(len(click.click_id))] * N_FEATURES,
        degraded=degraded,
        processing_ms=1.5,
        decided_at=click.event_time + timedelta(milliseconds=40),
    )


def _purchase(click: Click) -> Purchase:
    return Purchase(
        event_time=click.event_time + timedelta(minutes=50),
        purchase_id=f"p-{click.click_id}",
        click_id=click.click_id,
        session_id=click.session_id,
        customer_id=click.customer_id,
        amount=19.99,
        currency="EUR",
    )


def _archiving(settings: Settings, root: Path, **archive: object) -> Settings:
    return settings.model_copy(update={"archive": ArchiveSettings(root=root, **archive)})


# --- on-disk rules, no services -------------------------------------------------------------


def test_schemas_name_exactly_the_event_models_fields_in_order() -> None:
    for name, model in MODELS.items():
        fields = model.model_fields if issubclass(model, Decision) else model.__struct_fields__
        assert SCHEMAS[name].names == list(fields), name


def test_archived_clicks_and_purchases_have_the_simulators_schema() -> None:
    config = SimConfig(start=HOUR, days=1, clicks_per_day=5_000)
    batch = next(b for b in Generator(config).hours() if b.purchases.num_rows)
    for name, table in (("clicks", batch.clicks), ("purchases", batch.purchases)):
        events = [msgspec.convert(row, MODELS[name]) for row in table.to_pylist()]
        assert to_table(name, events).equals(table), name


def test_a_decision_without_a_vector_reads_back_as_nan_features(tmp_path: Path) -> None:
    clicks = _clicks(2, "f")
    decisions = [_decision(clicks[0]), _decision(clicks[1], degraded=True)]
    write_segment(tmp_path, "decisions", Segment("t", 0, 0, 1), hour_tables("decisions", decisions))
    vectors = feature_matrix(read_dataset(tmp_path, "decisions")["features"])
    assert vectors.shape == (2, N_FEATURES)
    assert np.all(vectors[0] == len("f-0")) and np.all(np.isnan(vectors[1]))


def test_a_crash_between_rename_and_marker_is_undone_on_restart(tmp_path: Path) -> None:
    clicks = _clicks(30, "c")
    kept, orphan, other = (
        Segment("t.c", 0, 0, 9),
        Segment("t.c", 0, 10, 19),
        Segment("t.c", 1, 0, 9),
    )
    write_segment(tmp_path, "clicks", kept, hour_tables("clicks", clicks[:10]))
    commit(tmp_path, "t.c", 0, 10)
    write_segment(tmp_path, "clicks", orphan, hour_tables("clicks", clicks[10:20]))  # no commit
    write_segment(tmp_path, "clicks", other, hour_tables("clicks", clicks[20:]))
    commit(tmp_path, "t.c", 1, 10)
    staging = tmp_path / "clicks/date=2026-03-02/hour=10" / Segment("t.c", 1, 10, 12).staging_name
    staging.write_bytes(b"half a file")

    removed = discard_uncommitted(tmp_path, "clicks", "t.c", {0: 10, 1: 10})

    assert sorted(p.name for p in removed) == sorted(
        [staging.name] + [orphan.file_name] * len(hour_tables("clicks", clicks[10:20]))
    )
    ids = read_dataset(tmp_path, "clicks")["click_id"].to_pylist()
    assert sorted(ids) == sorted(c.click_id for c in clicks[:10] + clicks[20:])
    assert (
        committed_offset(tmp_path, "t.c", 0) == 10 and committed_offset(tmp_path, "t.c", 2) is None
    )


def test_read_dataset_selects_dates_and_refuses_bad_ones(tmp_path: Path) -> None:
    clicks = _clicks(3, "d", start=HOUR) + _clicks(2, "e", start=HOUR + timedelta(days=1))
    write_segment(tmp_path, "clicks", Segment("t", 0, 0, 4), hour_tables("clicks", clicks))
    assert read_dataset(tmp_path, "clicks", ["2026-03-03"]).num_rows == 2
    assert read_dataset(tmp_path, "clicks", ["2026-03-02", "2026-03-03"]).num_rows == 5
    assert read_dataset(tmp_path, "decisions").schema == SCHEMAS["decisions"]  # none yet: empty
    for bad in ("03/03/2026", "20260303"):
        with pytest.raises(ArchiveError, match="use YYYY-MM-DD"):
            read_dataset(tmp_path, "clicks", [bad])


def test_a_second_archiver_on_the_same_root_is_refused(tmp_path: Path) -> None:
    with exclusive(tmp_path):
        refused = subprocess.run(
            [SLIDR, "archive", "--root", str(tmp_path), "--until-idle", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 2, refused.stderr
    assert f"another `slidr archive` (pid {os.getpid()}) is writing to {tmp_path}" in refused.stderr
    assert "Traceback" not in refused.stderr


# --- the real stack ---------------------------------------------------------------------------


@pytest.mark.integration
def test_every_event_is_archived_once_in_its_event_hour(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = _archiving(isolated(stack_settings), tmp_path, flush_rows=7)
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)  # the worker refuses these
    clicks = _clicks(30, "a") + _clicks(5, "old", start=old)
    purchases = [_purchase(c) for c in clicks[::4]]
    decisions = [_decision(c, degraded=i == 3) for i, c in enumerate(clicks)]
    produce(settings, clicks, raw=[b"{oops"])
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for p in purchases:
        producer.produce(settings.topics.purchases, p.to_json(), p.click_id)
    for d in decisions:
        producer.produce(settings.topics.decisions, d.to_json(), d.click_id)
    producer.produce(settings.topics.decisions, b'{"click_id": "no-verdict"}', b"x")
    assert producer.flush(30) == 0

    stats = Archiver(settings).run(threading.Event(), until_idle_s=0.5)

    assert {n: (s.rows, s.skipped) for n, s in stats.items()} == {
        "clicks": (35, 1),
        "purchases": (len(purchases), 0),
        "decisions": (35, 1),
    }
    for name, events in (("clicks", clicks), ("purchases", purchases), ("decisions", decisions)):
        table = ds.dataset(tmp_path / name, partitioning="hive").to_table()
        assert table.num_rows == len(events), name
        for row in table.to_pylist():
            assert (str(row.pop("date")), int(row.pop("hour"))) == (
                row["event_time"].date().isoformat(),
                row["event_time"].hour,
            )
        assert read_dataset(tmp_path, name).schema == SCHEMAS[name]
    for name, events in (("clicks", clicks), ("purchases", purchases)):
        rows = read_dataset(tmp_path, name).to_pylist()
        back = sorted((msgspec.convert(r, MODELS[name]) for r in rows), key=lambda e: e.to_json())
        assert back == sorted(events, key=lambda e: e.to_json()), name
    served = read_dataset(tmp_path, "decisions")
    assert sorted(served["click_id"].to_pylist()) == sorted(c.click_id for c in clicks)
    by_id = dict(
        zip(served["click_id"].to_pylist(), feature_matrix(served["features"]), strict=True)
    )
    for d in decisions:
        assert np.array_equal(
            by_id[d.click_id], d.features or [np.nan] * N_FEATURES, equal_nan=True
        )
    assert served["reason_codes"].type == pa.list_(pa.string())

    again = Archiver(settings).run(threading.Event(), until_idle_s=0.5)
    assert all(s.rows == 0 for s in again.values())
    assert read_dataset(tmp_path, "clicks").num_rows == 35


def _committed(settings: Settings) -> int:
    root, topic = settings.archive.root, settings.topics.clicks
    return sum(committed_offset(root, topic, p) or 0 for p in range(settings.topics.partitions))


def _wait(done: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


@pytest.mark.integration
def test_kill_9_and_restart_neither_lose_nor_repeat_an_event(
    stack_settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    settings = _archiving(isolated(stack_settings), root, flush_rows=10, flush_every_s=1000)
    # Only the sections the archiver reads: the others need not survive the trip through env.
    wanted = ("SLIDR_KAFKA__", "SLIDR_TOPICS__", "SLIDR_EVENTS__", "SLIDR_ARCHIVE__")
    env = dict(os.environ)
    env.update((k, v) for k, v in settings_env(settings).items() if k.startswith(wanted))
    log = tmp_path / "archive.log"
    clicks = _clicks(505, "k", step=timedelta(seconds=20))

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [SLIDR, "archive", "--topics", "clicks"], env=env, stdout=out, stderr=out
            )

    produce(settings, clicks[:400])
    first = start()
    _wait(lambda: _committed(settings) > 0, first, log)
    first.kill()
    first.wait()
    produce(settings, clicks[400:])

    second = start()
    _wait(lambda: _committed(settings) >= 500, second, log)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0, log.read_text()
    after_stop = read_dataset(root, "clicks")["click_id"].to_pylist()
    assert len(after_stop) == len(set(after_stop)) == _committed(settings)  # files == markers

    final = subprocess.run(
        [SLIDR, "archive", "--topics", "clicks", "--until-idle", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr
    assert "next offsets" in final.stdout
    archived = read_dataset(root, "clicks")["click_id"].to_pylist()
    assert sorted(archived) == sorted(c.click_id for c in clicks)
