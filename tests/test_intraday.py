"""The intraday re-solve (issue 19 item 3): purchases joined with live decisions, the realised
FPR judged against its band, a re-solve whose threshold moves are bounded, and the new record;
as plain logic, in the monitor on a temporary registry, and (integration) picked up by a real
worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from calibration.intraday import (
    PROFILE_PRIOR,
    BudgetWindow,
    Joined,
    PurchaseJoin,
    calibrated_thresholds,
    clip_moves,
    diurnal_factor,
    expected_fpr,
    hold_loosening,
    judge,
    judged_until,
    out_of_band,
    stand_in_target,
)
from slidr.events import Purchase
from slidr.kafka_config import client_config
from slidr.registry import Registry
from slidr.settings import IntradaySettings, MonitorSettings, Settings, TritonSettings
from slidr.slices import lookup_threshold
from streams.monitor.consumer import Monitor
from streams.monitor.window import Observation
from tests.factories import mixed_traffic
from tests.stack_fixtures import free_ports, private_model, settings_env
from tests.test_monitor import Clock
from tests.test_registry import FakeTriton, add_version
from tests.worker_harness import SLIDR, DecisionReader, WorkerProcess, isolated, produce

LIMITS = IntradaySettings(
    enabled=True,
    window_s=600.0,
    evaluate_every_s=1.0,
    min_interval_s=0.0,
    min_stand_ins=50,
    min_slice_stand_ins=50,
    max_threshold_step=0.05,
)


def test_a_threshold_move_is_clipped_to_the_guardrail_in_both_directions() -> None:
    moves = clip_moves(
        {"app/in": 0.80, "app/out": 0.80, "desktop/in": 0.60},
        {"app/in": 0.97, "app/out": 0.82, "desktop/in": 0.40},
        max_step=0.05,
    )
    assert moves["app/in"].after == pytest.approx(0.85) and moves["app/in"].clipped
    assert moves["app/out"].after == 0.82 and not moves["app/out"].clipped
    assert moves["desktop/in"].after == pytest.approx(0.55) and moves["desktop/in"].clipped


def test_purchases_join_their_decision_once_whichever_comes_first() -> None:
    join = PurchaseJoin(horizon_s=10.0)
    seen = Joined(1, "app/out", 0.7, 100.0)
    assert join.decision("c1", seen, now=100.0) is None
    assert join.purchase("c1", now=101.0) == seen
    assert join.purchase("c1", now=102.0) is None  # a second purchase of the same click
    assert join.purchase("c2", now=103.0) is None  # its decision comes later
    assert join.decision("c2", seen, now=104.0) == seen
    assert join.purchase("c3", now=105.0) is None
    join.expire(now=116.0)  # c3's decision never came within the horizon
    assert join.expired_purchases == 1 and len(join) == 0


def record(threshold: float = 0.5) -> dict[str, object]:
    """A calibration record as `slidr calibrate` writes it (the parts read here): a human
    budget of 2 % whose calibration day showed 1.5 % purchaser FPR for 2 % human FPR."""
    figures = {"purchaser": {"value": 0.015}, "human": {"value": 0.02}}
    return {
        "id": "v1-daily",
        "model_version": 1,
        "thresholds": {"all": threshold, "app/out": threshold, "desktop/out": threshold},
        "fpr_budget": 0.02,
        "fpr_target": "human",
        "fpr": {"calibration_day": figures},
        "slices": {
            name: {"members": [name], "threshold": threshold, "fpr": {"purchaser": {"value": v}}}
            for name, v in (("app/out", 0.02), ("desktop/out", 0.01))
        },
        "expected": {"ivr": 0.2, "slices": {"app/out": 0.25, "desktop/out": 0.15}},
    }


def drifted(rng: np.random.Generator, n_clicks: int) -> list[Observation]:
    """A fifth of the clicks are bots scoring 0.7-1; humans score 0-0.45, but the day's humans
    drifted: every 10th scores 0.5-0.7, above the served 0.5 (the record expects 1.5 %)."""
    out = []
    for i in range(n_clicks):
        if i % 5 == 0:
            score = rng.uniform(0.7, 1.0)
        else:
            score = rng.uniform(0.5, 0.7) if i % 10 == 1 else rng.uniform(0.0, 0.45)
        name = "app/out" if i % 2 else "desktop/out"
        out.append(Observation(1, name, score >= 0.5, score, False, False, 1000.0, f"c{i}"))
    return out


def test_expected_fpr_carries_a_human_budget_onto_the_stand_ins() -> None:
    r = record()
    assert stand_in_target(r) == pytest.approx(0.015)
    assert expected_fpr(r, ["app/out", "desktop/out", "web/in"]) == pytest.approx(
        {"all": 0.015, "app/out": 0.02, "desktop/out": 0.01}
    )


def test_a_part_day_window_is_judged_against_the_same_hours_of_the_calibration_day() -> None:
    # Calibration day: 10 % of purchasers invalidated at night (00-06), 1 % in the day.
    r = record() | {"fpr_by_hour_band": {"purchaser": [0.10, 0.01, 0.01, 0.01],
                                         "purchases": [100.0, 300.0, 300.0, 300.0]}}  # fmt: skip
    day = (0.10 * 100 + 0.01 * 900) / 1000
    night, noon = BudgetWindow(6 * 3600.0), BudgetWindow(6 * 3600.0)
    for i in range(50):
        night.add_stand_in("app/out", 0.2, 3 * 3600.0 + i)
        noon.add_stand_in("app/out", 0.2, 12 * 3600.0 + i)
    at_night = diurnal_factor(r, night.data(3 * 3600.0 + 60))
    at_noon = diurnal_factor(r, noon.data(12 * 3600.0 + 60))
    assert at_night * day == pytest.approx((0.10 * 100 + day * PROFILE_PRIOR) / 150)
    assert at_noon * day == pytest.approx((0.01 * 300 + day * PROFILE_PRIOR) / 350)
    assert expected_fpr(r, [], at_night)["all"] == pytest.approx(0.015 * at_night)
    assert diurnal_factor(record(), night.data(3 * 3600.0 + 60)) == 1.0  # no profile


def test_a_window_in_band_is_left_alone_and_a_drifted_one_is_not() -> None:
    window = BudgetWindow(600.0)
    for i in range(200):
        window.add_decision("app/out", 0.2, 1000.0)
        window.add_stand_in("app/out", 0.9 if i < 3 else 0.2, 1000.0)  # 1.5 %
    data = window.data(1000.0)
    expected = expected_fpr(record(), data.slices())
    evidence = judge(data, record()["thresholds"], 0.5, expected, LIMITS)  # type: ignore[arg-type]
    assert evidence["all"].verdict == "inside" and out_of_band(evidence, LIMITS) == []
    for _ in range(40):
        window.add_stand_in("app/out", 0.9, 1000.0)
    evidence = judge(window.data(1000.0), {"app/out": 0.5}, 0.5, expected, LIMITS)
    assert evidence["all"].verdict == "above" and evidence["all"].low > 0.015 * 1.25
    assert {e.scope for e in out_of_band(evidence, LIMITS)} == {"all", "app/out"}


def test_a_drifted_fpr_is_re_solved_into_a_new_record_with_bounded_moves(
    tmp_path: Path,
) -> None:
    add_version(tmp_path, 1)
    path = tmp_path / "m" / "1" / "calibration.json"
    path.write_text(json.dumps(record()))
    settings = Settings(
        triton=TritonSettings(model_repository=tmp_path, model_name="m"),
        monitor=MonitorSettings(min_decisions=10**6),
        intraday=LIMITS,
    )
    clock = Clock()
    monitor = Monitor(settings, Registry(settings, FakeTriton()), clock=clock)
    assert monitor.budget is not None
    rng = np.random.default_rng(7)
    observations = drifted(rng, n_clicks=4000)
    for o in observations:
        monitor.observe(o)
    humans = [o for i, o in enumerate(observations) if i % 5]
    for o in humans[:1000]:  # 1 in 8 of them scores above 0.5
        monitor.budget.purchase(json.dumps({"click_id": o.click_id}).encode())
    monitor.evaluate()

    served = json.loads(path.read_text())
    intraday = served["intraday"]
    assert served["id"].startswith("v1-") and "intraday" in served["id"]
    assert intraday["based_on"] == "v1-daily" and intraday["calibrated_record"] == "v1-daily"
    assert intraday["evidence"]["all"]["verdict"] == "above"
    assert intraday["evidence"]["all"]["stand_ins"] == 1000
    low, high = intraday["evidence"]["all"]["interval"]
    assert low <= intraday["evidence"]["all"]["fpr"] <= high
    for name in ("app/out", "desktop/out"):
        move = intraday["moves"][name]
        # The solver wants the drifted humans (0.5-0.7) valid again: beyond the guardrail.
        assert move["solved"] > move["before"] + 0.05 and move["clipped"]
        assert served["thresholds"][name] == pytest.approx(0.55)
        assert served["slices"][name]["threshold"] == pytest.approx(0.55)
    assert served["expected"]["ivr"] <= 0.2  # the monitor's baseline follows the move
    assert json.loads((path.parent / "calibration.prev.json").read_text())["id"] == "v1-daily"

    m = monitor.metrics.registry.get_sample_value
    assert m("slidr_monitor_resolves_total", {"outcome": "written"}) == 1
    assert m("slidr_monitor_threshold_moves_clipped_total") == 2
    assert m("slidr_monitor_threshold", {"slice": "app/out"}) == pytest.approx(0.55)
    assert m("slidr_monitor_budget_out_of_band") == 1
    assert m("slidr_monitor_budget_stand_ins", {"slice": "all"}) == 1000
    assert m("slidr_monitor_purchases_joined_total") == 1000

    # The next window is judged against the re-solve's targets; the next step moves on.
    clock.now += 1
    monitor.evaluate()
    again = json.loads(path.read_text())
    assert again["thresholds"]["app/out"] == pytest.approx(0.60)
    assert again["intraday"]["calibrated_record"] == "v1-daily"
    # The daily cycle's guardrails compare a successor with what was calibrated, too.
    daily = json.loads((path.parent / "calibration.prev.json").read_text())["intraday"]
    assert daily["calibrated_thresholds"] == again["intraday"]["calibrated_thresholds"]
    assert calibrated_thresholds(again) == pytest.approx(record()["thresholds"])
    assert calibrated_thresholds(record()) is None
    until = judged_until(again)
    assert until is not None and until.isoformat() == again["intraday"]["window"][1]
    assert judged_until(record()) is None


def test_a_backlog_is_judged_in_event_time_with_purchases_read_before_their_decisions(
    tmp_path: Path,
) -> None:
    """A worker catching up decides ten hours of clicks while the monitor's clock stands still,
    and the purchases are already on their topic: they wait for their decisions, and the hours
    are re-solved as the hours they were (one re-solve per ``min_interval_s`` of click time)."""
    add_version(tmp_path, 1)
    path = tmp_path / "m" / "1" / "calibration.json"
    path.write_text(json.dumps(record()))
    limits = LIMITS.model_copy(
        update={"window_s": 4 * 3600.0, "evaluate_every_s": 60.0, "min_interval_s": 3600.0}
    )
    settings = Settings(
        triton=TritonSettings(model_repository=tmp_path, model_name="m"),
        monitor=MonitorSettings(min_decisions=10**6),
        intraday=limits,
    )
    monitor = Monitor(settings, Registry(settings, FakeTriton()), clock=Clock())
    assert monitor.budget is not None
    start = datetime(2026, 11, 20, tzinfo=UTC)
    observations = [
        replace(o, event_at=start.timestamp() + 9.0 * i)  # 4,000 clicks over 10 hours
        for i, o in enumerate(drifted(np.random.default_rng(7), n_clicks=4000))
    ]
    for i, o in enumerate(observations):
        if i % 5 and i % 2:  # half the humans buy, a minute after their click
            bought = datetime.fromtimestamp(o.event_at + 60.0, UTC)  # type: ignore[operator]
            event = {"click_id": o.click_id, "event_time": bought.isoformat()}
            monitor.budget.purchase(json.dumps(event).encode())
    for o in observations:
        monitor.observe(o)

    m = monitor.metrics.registry.get_sample_value
    assert m("slidr_monitor_purchases_joined_total") == 1600
    written = m("slidr_monitor_resolves_total", {"outcome": "written"}) or 0.0
    assert 2 <= written <= 10, written  # never more often than once an hour of clicks
    served = json.loads(path.read_text())
    assert 0.55 < served["thresholds"]["app/out"] <= 0.5 + 0.05 * written + 1e-9
    # The window is the last 4 hours of clicks (00:00-10:00 UTC), by the clicks' hours of the
    # day (the diurnal factor reads them), not the monitor's clock.
    window = monitor.budget.windows[1].data(monitor.budget.watermark)
    assert window.stand_in_hours[6:10].sum() == window.total_stand_ins > 0


def test_the_worker_never_imports_the_monitor_calibration_or_torch() -> None:
    """The monitor imports calibration/ (cvxpy, pandas) for the re-solve: allowed only while
    the scoring path imports neither it nor torch."""
    code = (
        "import sys; import slidr.cli.worker, streams.app, streams.pipeline; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'calibration', 'cvxpy') or m.startswith('streams.monitor')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
    code = "import sys, calibration.intraday; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


# --- the real stack: a drifted FPR re-solved by `slidr monitor`, followed by a worker ---


def purchases_of(settings: Settings, click_ids: list[str]) -> None:
    producer = Producer(client_config(settings.kafka, {"linger.ms": 5}))
    for i, click_id in enumerate(click_ids):
        purchase = Purchase(
            event_time=datetime.now(UTC), purchase_id=f"p-{click_id}", click_id=click_id,
            session_id=f"s-{i}", customer_id=None, amount=10.0, currency="EUR",
        )  # fmt: skip
        producer.produce(settings.topics.purchases, purchase.to_json(), click_id.encode())
    assert producer.flush(30) == 0


@pytest.mark.integration
def test_a_drifted_fpr_is_re_solved_intraday_and_a_running_worker_follows(
    stack_settings: Settings, tmp_path: Path
) -> None:
    live = isolated(private_model(stack_settings), reload_every_s=0.5)
    live = live.model_copy(
        update={
            "monitor": MonitorSettings(
                consumer_group=f"monitor-{live.worker.consumer_group}", from_beginning=True,
                evaluate_every_s=0.25, metrics_port=free_ports(1)[0],
            ),
            "intraday": LIMITS.model_copy(
                update={"window_s": 300.0, "evaluate_every_s": 0.25, "min_stand_ins": 20,
                        "min_slice_stand_ins": 10**6, "max_threshold_step": 1.0}
            ),
        }
    )  # fmt: skip
    repo, name = live.triton.model_repository, live.triton.model_name
    path = Path(repo) / name / "1" / "calibration.json"
    # Served thresholds far too low for today's humans: every click is invalid.
    path.write_text(json.dumps(record(threshold=0.0) | {"fpr_target": "purchaser"}))
    worker = WorkerProcess(live, tmp_path / "worker.log")
    reader = DecisionReader(live)
    log_path = tmp_path / "monitor.log"
    env = {**os.environ, **settings_env(live)}
    with log_path.open("ab") as log:
        monitor = subprocess.Popen([SLIDR, "monitor"], env=env, stdout=log, stderr=log)
    worker.start()
    try:
        first = mixed_traffic(120, "before", datetime.now(UTC) - timedelta(minutes=5))
        produce(live, first)
        decided = reader.wait_for(c.click_id for c in first)
        assert len(decided) == 120, worker.log()
        assert {d["threshold"] for d in decided.values()} == {0.0}
        purchases_of(live, [c.click_id for c in first[::3]])  # 40 humans, all invalidated
        bought = time.monotonic()
        deadline = time.monotonic() + 60
        while "intraday" not in json.loads(path.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        served = json.loads(path.read_text())
        assert "intraday" in served, log_path.read_text()
        assert served["intraday"]["evidence"]["all"]["verdict"] == "above"
        assert "intraday re-solve of model" in log_path.read_text()
        moves = served["intraday"]["moves"]
        print(
            f"\npurchases produced -> intraday record written: {time.monotonic() - bought:.2f} s; "
            f"solve {served['intraday']['solve_ms']:.1f} ms; moves "
            + ", ".join(f"{s} {m['before']:.3f}->{m['after']:.3f}" for s, m in moves.items())
        )

        time.sleep(2 * 0.5)  # the worker looks for a new record this often
        second = mixed_traffic(30, "after", datetime.now(UTC) - timedelta(minutes=1))
        produce(live, second)
        after = reader.wait_for(c.click_id for c in second)
        assert len(after) == 30, worker.log()
        for d in after.values():
            assert d["threshold"] == lookup_threshold(served["thresholds"], d["slice"], -1.0)
            assert d["threshold"] > 0.0
    finally:
        reader.close()
        worker.stop()
        monitor.terminate()
        monitor.wait(timeout=30)


def test_without_loosen_a_re_solve_lowers_no_threshold() -> None:
    moves = hold_loosening(
        clip_moves(
            {"app/out": 0.80, "desktop/out": 0.70, "mobile_web/out": 0.75},
            {"app/out": 0.90, "desktop/out": 0.60, "mobile_web/out": 0.76},
            max_step=0.05,
        )
    )
    assert moves["app/out"].after == pytest.approx(0.85)  # tightened, clipped as before
    assert moves["desktop/out"].after == 0.70 and moves["desktop/out"].clipped  # held
    assert moves["mobile_web/out"].after == pytest.approx(0.76)
