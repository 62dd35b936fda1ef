"""TalkingData import: quirks handled, every row in its hour with its line, exact refusals."""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest

from models.featurize import RedisFeaturizer
from slidr.archive import SCHEMAS, feature_matrix
from slidr.errors import StackError
from slidr.events import Click, Purchase
from slidr.features import INDEX
from slidr.ingest.talkingdata import import_talkingdata, write_archive
from slidr.ingest.talkingdata_csv import TRAIN_COLUMNS, TalkingDataError, TrainFileReader
from slidr.settings import LearnSettings, RedisSettings, Settings, TritonSettings
from slidr.stack.redis_server import RedisService
from streams.feature_store import short_hash
from tests.stack_fixtures import free_ports, settings_env
from tests.talkingdata_synth import synthetic_frame
from tests.worker_harness import SLIDR

HEADER = ",".join(TRAIN_COLUMNS)
#: A BOM, a NUL and a stray line break before the header: the header is on line 2.
JUNK = b"\xef\xbb\xbf\x00\r\n"
EMPTY_AFTER = (100, 2000)  # frame rows followed by an empty line
TRUNCATED = "5348,12,1,13,497,2017-11-07 0"
N = 3000


def _frame() -> pd.DataFrame:
    """N rows over 2.5 days, shuffled, with the attribution edge cases at rows 10-12."""
    frame = synthetic_frame(N, seed=3, days=2.5).sample(frac=1.0, random_state=1)
    frame = frame.reset_index(drop=True).astype(str)
    frame.loc[10, ["attributed_time", "is_attributed"]] = ["", "1"]  # attributed, no time
    frame.loc[11, ["click_time", "attributed_time", "is_attributed"]] = [
        "2017-11-07 10:00:00", "2017-11-07 09:00:00", "1"
    ]  # fmt: skip
    frame.loc[12, ["attributed_time", "is_attributed"]] = ["2017-11-07 11:00:00", "0"]
    frame.loc[20:29, "device"] = "2"
    frame.loc[30:39, "device"] = "3032"
    return frame


def _lines(frame: pd.DataFrame) -> list[str]:
    return [",".join(row) for row in frame.itertuples(index=False, name=None)]


def _write(path: Path, lines: list[str], before: bytes = b"", end: bytes = b"\n") -> Path:
    path.write_bytes(before + "\n".join([HEADER, *lines]).encode() + end)
    return path


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame()


@pytest.fixture
def quirky(tmp_path: Path, frame: pd.DataFrame) -> tuple[Path, list[int]]:
    """The file with every handled quirk, and the physical line of each frame row."""
    lines = _lines(frame)
    for row in sorted(EMPTY_AFTER, reverse=True):
        lines.insert(row + 1, "")
    lines.append(TRUNCATED)
    path = _write(tmp_path / "train.csv", lines, before=JUNK, end=b"")
    first = 3  # junk line, header, then data
    where = [first + i + sum(i > row for row in EMPTY_AFTER) for i in range(len(frame))]
    return path, where


def _read(root: Path, name: str) -> pd.DataFrame:
    return ds.dataset(root / name, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.fixture
def archive(tmp_path: Path, quirky: tuple[Path, list[int]]) -> tuple[Path, TrainFileReader]:
    reader = TrainFileReader(quirky[0])
    write_archive(reader, tmp_path / "out")
    return tmp_path / "out", reader


def test_every_row_lands_in_its_hour_with_its_line_number(
    archive: tuple[Path, TrainFileReader], quirky: tuple[Path, list[int]], frame: pd.DataFrame
) -> None:
    root, _ = archive
    clicks = _read(root, "clicks")
    assert len(clicks) == N
    expected = frame.assign(click_id=[f"td-{line}" for line in quirky[1]])
    joined = clicks.merge(expected, on="click_id", suffixes=("", "_csv"))
    assert len(joined) == N
    assert (joined["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S") == joined["click_time"]).all()
    assert (joined["ad_id"] == "app-" + joined["app"]).all()
    assert (joined["campaign_id"] == "channel-" + joined["channel"]).all()
    ten = int(ipaddress.IPv4Address("10.0.0.0"))
    assert joined["ip"].tolist() == [
        str(ipaddress.IPv4Address(ten + int(n))) for n in joined["ip_csv"]
    ]
    # Out of order in the file, yet each click sits in its own hour, sorted within it.
    assert (clicks["date"] == clicks["event_time"].dt.strftime("%Y-%m-%d")).all()
    assert (clicks["hour"].astype(int) == clicks["event_time"].dt.hour).all()
    for _, hour in clicks.groupby(["date", "hour"], observed=True):
        assert hour["event_time"].is_monotonic_increasing


def test_handled_quirks_are_reported_with_their_lines(
    quirky: tuple[Path, list[int]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = TrainFileReader(quirky[0])
    assert reader.header.line == 2
    with caplog.at_level(logging.WARNING):
        write_archive(reader, tmp_path / "out")
    report = reader.report.as_dict()
    last_line = quirky[1][-1] + 1
    assert report["rows_read"] == N
    assert report["lines_read"] == N + len(EMPTY_AFTER) + 1
    assert report["rows_skipped"] == {
        "empty_line": {"count": 2, "first_lines": [quirky[1][r] + 1 for r in EMPTY_AFTER]},
        "truncated_last_line": {"count": 1, "first_lines": [last_line]},
    }
    assert f"line {last_line}" in caplog.text and "truncated last line" in caplog.text
    assert report["rows_repaired"] == {
        "attributed_before_click": 1,
        "attributed_time_without_flag": 1,
        "attributed_without_time": 1,
    }


def test_attributed_clicks_become_purchases_at_their_attribution_time(
    archive: tuple[Path, TrainFileReader], quirky: tuple[Path, list[int]], frame: pd.DataFrame
) -> None:
    root, _ = archive
    purchases = _read(root, "purchases")
    attributed = frame.assign(click_id=[f"td-{line}" for line in quirky[1]])
    attributed = attributed[attributed["is_attributed"] == "1"]
    assert sorted(purchases["click_id"]) == sorted(attributed["click_id"])
    at = purchases.merge(attributed, on="click_id").set_index("click_id")
    when = at["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    # No time, or one before the click: the download counts as at the click.
    fallback = at.index.isin([f"td-{quirky[1][10]}", f"td-{quirky[1][11]}"])
    assert (when[fallback] == at.loc[fallback, "click_time"]).all()
    assert (when[~fallback] == at.loc[~fallback, "attributed_time"]).all()
    assert (purchases["hour"].astype(int) == purchases["event_time"].dt.hour).all()
    clicks = _read(root, "clicks").set_index("click_id")
    assert (clicks.loc[at.index, "session_id"] == at["session_id"]).all()


def test_clicks_are_valid_events_with_the_documented_mapping(
    archive: tuple[Path, TrainFileReader],
) -> None:
    root, _ = archive
    table = ds.dataset(root / "clicks", format="parquet").to_table()
    assert table.schema == SCHEMAS["clicks"]  # what `slidr archive` and the simulator write
    assert ds.dataset(root / "purchases", format="parquet").schema == SCHEMAS["purchases"]
    clicks = msgspec.convert(table.to_pylist(), list[Click])
    purchases = ds.dataset(root / "purchases", format="parquet").to_table().to_pylist()
    assert all(p.amount == 1.0 for p in msgspec.convert(purchases, list[Purchase]))
    kinds = {(c.user_agent.split("/")[0], c.device_type.value, c.platform.value) for c in clicks}
    assert {k for k in kinds if k[0] in ("td-device-1", "td-device-2", "td-device-3032")} == {
        ("td-device-1", "app", "android"),
        ("td-device-2", "app", "ios"),
        ("td-device-3032", "mobile_web", "other"),
    }
    assert all(not c.logged_in and c.customer_id is None and c.marketplace == "TD" for c in clicks)
    # A session is one (ip, device, os) in one clock hour.
    frame = pd.DataFrame(
        {
            "session": [c.session_id for c in clicks],
            "who": [(c.ip, c.user_agent) for c in clicks],
            "hour": [c.event_time.strftime("%Y%m%d%H") for c in clicks],
        }
    )
    assert (frame.groupby(["who", "hour"])["session"].nunique() == 1).all()
    assert (frame.groupby("session")[["who", "hour"]].nunique() == 1).all().all()


def test_a_limit_reads_a_prefix_and_columns_may_come_in_any_order(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    order = list(reversed(TRAIN_COLUMNS))
    path = tmp_path / "reversed.csv"
    path.write_text("\n".join([",".join(order), *_lines(frame[order])]) + "\n")
    reader = TrainFileReader(path, limit=100)
    tables = list(reader.tables())
    assert sum(t.num_rows for t in tables) == reader.report.rows == 100
    got = pd.concat([t.to_pandas() for t in tables])
    assert got["line"].tolist() == list(range(2, 102))
    assert got["ip"].astype(str).tolist() == frame["ip"][:100].tolist()


def test_an_unterminated_last_line_that_is_complete_is_kept(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    path = _write(tmp_path / "no-newline.csv", _lines(frame[:50]), end=b"")
    reader = TrainFileReader(path)
    assert sum(t.num_rows for t in reader.tables()) == 50
    assert not reader.report.skipped


def _mutate(frame: pd.DataFrame, row: int, column: str, value: str) -> list[str]:
    changed = frame[:40].copy()
    changed.loc[row, column] = value
    return _lines(changed)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("app", "abc", "line 14, column 2 (app): 'abc' is not a non-negative integer id"),
        ("ip", "-5", "line 14, column 1 (ip): '-5' is not a non-negative integer id"),
        ("ip", "16777216", "line 14, column 1 (ip): '16777216' is above 16777215"),
        ("os", "", "line 14, column 4 (os): '' is not a non-negative integer id"),
        ("click_time", "2017-11-06 25:00:00", "line 14, column 6 (click_time): "
         "'2017-11-06 25:00:00' is not a time in the form %Y-%m-%d %H:%M:%S"),
        ("attributed_time", "yesterday", "line 14, column 7 (attributed_time): 'yesterday'"),
        ("is_attributed", "2", "line 14, column 8 (is_attributed): '2' is not 0 or 1"),
        ("channel", "7,8", "line 14: 9 comma-separated values, expected 8"),
        ("channel", "7\r8", "line 14: a carriage return inside the line"),
    ],
)  # fmt: skip
def test_malformed_values_are_refused_naming_file_line_and_column(
    tmp_path: Path, frame: pd.DataFrame, column: str, value: str, message: str
) -> None:
    path = _write(tmp_path / "bad.csv", _mutate(frame, 12, column, value))
    with pytest.raises(TalkingDataError) as refused:
        list(TrainFileReader(path).tables())
    assert str(refused.value).startswith(f"{path}, line ")
    assert message in str(refused.value)


def _refusal(tmp_path: Path, content: bytes) -> str:
    """Why the reader refuses a file of ``content``."""
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    with pytest.raises(TalkingDataError) as refused:
        TrainFileReader(path)
    return str(refused.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty: expected the header ip,app,device"),
        (b"\xef\xbb\xbf\n\n", "is empty"),
        (b"click_id,ip,app,device,os,channel,click_time\n1,2,3,4,5,6,2017-11-10 04:00:00\n",
         "is a TalkingData test file (click_id first, no is_attributed)"),
        (b"ip,app,device,os,channel,click_time,attributed_time,label\n",
         "line 1, column 8: header name 'label' is not a TalkingData train column"),
        (b"\n\nip,app,app,os,channel,click_time,attributed_time,is_attributed\n",
         "line 3, column 3: header name 'app' repeats"),
        (b"ip,app,device,os,channel,click_time,is_attributed\n",
         "line 1: header lacks attributed_time"),
    ],
)  # fmt: skip
def test_headers_other_than_the_train_format_are_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    assert message in _refusal(tmp_path, content)


@pytest.mark.parametrize(
    ("junk", "found"),
    [
        (b"~#", "~#ip"),  # printable junk glued to the first name
        (b'\xef\xbb\xbf\xc3\xaf\xc2\xbb\xc2\xbf"', '"ip'),  # a BOM, a mis-decoded one, a quote
        (b"\x00\r\nxx", "xxip"),
    ],
)
def test_stray_characters_glued_to_header_names_are_cut_off(
    tmp_path: Path, frame: pd.DataFrame, junk: bytes, found: str
) -> None:
    header = HEADER.replace("is_attributed", "is_attributed;")
    path = tmp_path / "glued.csv"
    path.write_bytes(junk + "\n".join([header, *_lines(frame[:30])]).encode() + b"\n")
    reader = TrainFileReader(path)
    assert reader.header.columns == TRAIN_COLUMNS
    assert reader.header.repairs() == [
        {"column": 1, "found": found, "name": "ip"},
        {"column": 8, "found": "is_attributed;", "name": "is_attributed"},
    ]
    got = pd.concat([t.to_pandas() for t in reader.tables()])
    assert got["ip"].astype(str).tolist() == frame["ip"][:30].tolist()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        # Letters after a name are not cut: 'oss' is another column, not os.
        ("ip,app,device,oss,channel,click_time,attributed_time,is_attributed",
         "line 1, column 4: header name 'oss' is not a TalkingData train column"),
        # A repair must not repeat a name.
        ("xip,app,device,ip,channel,click_time,attributed_time,is_attributed",
         "line 1, column 1: header name 'xip' is not a TalkingData train column"),
        ("~ip,app,device,os,channel,click_time,attributed_time,is_attributed,label",
         "line 1, column 9: header name 'label' is not a TalkingData train column"),
    ],
)  # fmt: skip
def test_header_names_that_cannot_be_repaired_are_refused(
    tmp_path: Path, header: str, message: str
) -> None:
    refusal = _refusal(tmp_path, (header + "\n").encode())
    assert refusal.startswith(f"{tmp_path / 'odd.csv'}, line 1")
    assert message in refusal


def test_a_file_refused_half_way_leaves_the_earlier_archive_intact(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    out = tmp_path / "out"
    (out / "clicks").mkdir(parents=True)
    bad = _write(tmp_path / "bad.csv", _mutate(frame, 30, "app", "x"))
    with pytest.raises(TalkingDataError, match="line 32"):
        write_archive(TrainFileReader(bad), out, replacing=[out / "clicks"])
    assert (out / "clicks").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["clicks"]  # staging area removed


def test_import_refuses_an_existing_archive_and_a_missing_redis(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    path = _write(tmp_path / "ok.csv", _lines(frame[:20]))
    (tmp_path / "taken" / "features").mkdir(parents=True)
    with pytest.raises(TalkingDataError, match=r"already holds an archive .*--overwrite"):
        import_talkingdata(path, tmp_path / "taken", RedisFeaturizer(RedisSettings()))
    (port,) = free_ports(1)
    with pytest.raises(StackError, match=f"Redis at 127.0.0.1:{port}.*slidr stack up"):
        import_talkingdata(path, tmp_path / "new", RedisFeaturizer(RedisSettings(port=port)))
    assert not (tmp_path / "new").exists()


def test_cli_refuses_a_bad_file_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text("click_id,ip,app,device,os,channel,click_time\n")
    result = subprocess.run(
        [SLIDR, "import", "talkingdata", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path} is a TalkingData test file")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --- the real stack ---------------------------------------------------------------------------


def _ranks(clicks: pd.DataFrame, key: str) -> Any:
    """1-based rank of each click within its ``key`` group, in the store's order: event time,
    then click hash (clicks of one second are counted in that order)."""
    ordered = clicks.assign(_hash=clicks["click_id"].map(short_hash))
    ordered = ordered.sort_values(["event_time", "_hash"])
    return ordered.groupby(key).cumcount().reindex(clicks.index) + 1


@pytest.mark.integration
def test_cli_import_computes_features_by_the_live_code_in_event_time_order(
    stack_settings: Settings, tmp_path: Path, quirky: tuple[Path, list[int]]
) -> None:
    out = tmp_path / "archive"
    env = {**os.environ, **settings_env(stack_settings)}
    result = subprocess.run(
        [SLIDR, "import", "talkingdata", str(quirky[0]), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"{N:,} clicks" in result.stdout and "app/out" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive", "train.csv"]

    manifest = orjson.loads((out / "import.json").read_bytes())
    assert manifest["clicks"] == manifest["features"]["clicks"] == N
    assert manifest["header_line"] == 2
    assert manifest["rows_skipped"]["truncated_last_line"]["count"] == 1
    assert manifest["attributed_share"] == pytest.approx(manifest["purchases"] / N)

    clicks = _read(out, "clicks")
    features = ds.dataset(out / "features", format="parquet").to_table()
    vectors = pd.DataFrame(feature_matrix(features["features"]))
    vectors["click_id"] = features["click_id"].to_pylist()
    clicks = clicks.merge(vectors, on="click_id", validate="one_to_one")
    assert len(clicks) == N
    # Sessions are clock hours, so each click's 1 h session count is its rank in the session.
    assert np.array_equal(clicks[INDEX["session_clicks_1h"]], _ranks(clicks, "session_id"))
    # Within the first day an ip's 24 h count is its rank (every earlier click is in the window).
    first_day = clicks[clicks["event_time"] < clicks["event_time"].min() + pd.Timedelta("23h")]
    assert np.array_equal(first_day[INDEX["ip_clicks_24h"]], _ranks(first_day, "ip"))
    assert (clicks[INDEX["logged_in"]] == 0).all()
    assert (clicks[INDEX["customer_clicks_24h"]] == 0).all()


@pytest.fixture(scope="module")
def redis_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A private Redis (no Kafka, no Triton): all that import and training need."""
    (port,) = free_ports(1)
    root = tmp_path_factory.mktemp("redis")
    settings = Settings(
        state_dir=root / "state", redis=RedisSettings(port=port, key_prefix="slidr-test:")
    )
    service = RedisService(settings)
    service.check_prerequisites()
    try:
        service.start()
        yield settings.model_copy(update={"redis": service.settings})
    finally:
        service.proc.stop()


#: Three days as Kaggle's train.csv spans them; ~0.3 % attributed.
THREE_DAYS = 40_000


@pytest.mark.integration
def test_a_three_day_file_with_a_stray_header_prefix_imports_trains_and_evaluates(
    redis_only: Settings, repo: Path, tmp_path: Path
) -> None:
    frame = synthetic_frame(THREE_DAYS, seed=11, days=3.0)
    path = tmp_path / "train_sample.csv"
    path.write_bytes(b"\xef\xbb\xbf~#" + frame.to_csv(index=False, lineterminator="\n").encode())
    settings = redis_only.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "triton": TritonSettings(model_repository=repo),
            "learn": LearnSettings(max_epochs=4),
        }
    )
    env = {**os.environ, **settings_env(settings)}

    def slidr(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [SLIDR, *args], capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        return done

    imported = slidr("import", "talkingdata", str(path), "--out", "td", "--no-progress")
    assert "repaired: header column 1 '~#ip' read as 'ip'" in imported.stdout
    manifest = orjson.loads((tmp_path / "td" / "import.json").read_bytes())
    assert manifest["header_repaired"] == [{"column": 1, "found": "~#ip", "name": "ip"}]

    trained = slidr("train", "--archive", "td", "--report-dir", "report")
    assert "time: fit 2017-11-06 14:00 .. 2017-11-08 16:00 (50 h)" in trained.stderr
    summary = orjson.loads((tmp_path / "report" / "train.json").read_bytes())
    # is_attributed is final: no click waits out an attribution window, every download counts.
    labels = summary["labels"]
    assert labels["not_yet_labelled"] == 0 and labels["labelled"] == THREE_DAYS
    assert labels["human_by_purchase"] == frame["is_attributed"].sum()
    assert summary["version"] == 2

    report = orjson.loads((tmp_path / "report" / "report.json").read_bytes())
    split = report["split"]
    assert split["mode"] == "span" and report["label_horizon_h"] is None
    start, end = (pd.Timestamp(split["holdout"][k]) for k in ("start", "end"))
    assert split["stop"]["end"] == split["holdout"]["start"]
    times = pd.to_datetime(frame["click_time"]).dt.tz_localize("UTC")
    held = frame[(times >= start) & (times < end)]
    # The report is on the held-out hours only, with their is_attributed as the human signal.
    assert report["rows"]["holdout"] == report["clicks"] == len(held)
    assert report["purchasing"] == held["is_attributed"].sum() > 0
    assert report["rows"]["fit"] == (times < pd.Timestamp(split["stop"]["start"])).sum()
    models = report["models"]
    assert set(models) == {"network", "logistic_regression", "velocity_heuristic", "boosted_trees"}
    for name, model in models.items():
        assert 0.0 < model["auc_purchased"] < 1.0, name
