"""Thresholds by slice, reason codes, fail-open, and the model record's refusals (no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from slidr.events import DegradedReason, DeviceType
from slidr.features import INDEX, N_FEATURES
from slidr.model_record import ModelMismatch, load_record, serving_version, write_serving_pointer
from streams.decide import DecisionColumns, Stamp, decide, fail_open
from tests.decisions import validated
from tests.factories import make_click

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def test_each_slice_gets_its_own_threshold(repo: Path) -> None:
    (repo / "slidr/1/calibration.json").write_text(
        json.dumps({"id": "cal-1", "thresholds": {"desktop/out": 0.3, "app/in": 0.9}})
    )
    record = load_record(repo, "slidr", 1, default_threshold=0.5)
    clicks = [
        make_click(0, device=DeviceType.DESKTOP),
        make_click(1, device=DeviceType.APP, customer="u-1"),
        make_click(2, device=DeviceType.MOBILE_WEB),
    ]
    features = np.zeros((3, N_FEATURES), dtype=np.float32)
    scores = np.array([0.4, 0.4, 0.4], dtype=np.float32)
    columns = DecisionColumns.of(clicks, record.slice_fields, [(0, 1)] * 3, features)
    decisions = validated(decide(columns, scores, Stamp(record, NOW, 1.0)))
    assert [d.threshold for d in decisions] == [0.3, 0.9, 0.5]
    assert [d.verdict for d in decisions] == ["invalid", "valid", "valid"]
    assert decisions[0].slice == "desktop/out" and decisions[1].slice == "app/in"


def test_reason_codes_name_the_signals(repo: Path) -> None:
    record = load_record(repo, "slidr", 1, default_threshold=0.5)
    night = make_click(0, at=datetime(2026, 11, 21, 3, tzinfo=UTC))
    features = np.zeros((1, N_FEATURES), dtype=np.float32)
    features[0, INDEX["session_clicks_1m"]] = 50
    features[0, INDEX["ip_distinct_user_agents"]] = 30
    score = np.array([0.99], dtype=np.float32)
    columns = DecisionColumns.of([night], record.slice_fields, [(None, None)], features)
    [decision] = validated(decide(columns, score, Stamp(record, NOW, 1.0)))
    assert decision.reason_codes == ["model", "velocity", "entity", "time"]


def test_fail_open_is_valid_and_degraded(repo: Path) -> None:
    record = load_record(repo, "slidr", 1, default_threshold=0.5)
    columns = DecisionColumns.of([make_click(0)], record.slice_fields, [(2, 40)], None)
    [decision] = validated(
        fail_open(columns, DegradedReason.REDIS_UNAVAILABLE, Stamp(record, NOW, 1.0))
    )
    assert decision.verdict == "valid" and decision.degraded
    assert decision.reason_codes == ["degraded:redis_unavailable"]
    assert (decision.source_partition, decision.source_offset) == (2, 40)


def test_a_model_trained_on_other_features_is_refused(repo: Path) -> None:
    meta = repo / "slidr/1/metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "feature_hash": "0000"}))
    with pytest.raises(ModelMismatch, match="trained on features"):
        load_record(repo, "slidr", 1, default_threshold=0.5)


def test_serving_pointer_wins_over_newest_and_pin_wins_over_pointer(repo: Path) -> None:
    (repo / "slidr/7").mkdir()
    assert serving_version(repo, "slidr") == 7
    write_serving_pointer(repo, "slidr", 1)
    assert serving_version(repo, "slidr") == 1
    assert serving_version(repo, "slidr", pinned=7) == 7
    with pytest.raises(ModelMismatch, match="no version 3"):
        load_record(repo, "slidr", 3, default_threshold=0.5)
