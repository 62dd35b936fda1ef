from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from models.evaluate import Evaluation, EvaluationError, evaluate
from models.report import summary_table, write_report
from slidr.metrics import Floats, rates, truth_rates

SLICES = ("app/in", "app/out", "desktop/in", "desktop/out")
N = 20_000


def _day(*, seed: int = 0, truth: bool = True) -> tuple[pd.DataFrame, dict[str, Floats]]:
    """Clicks where 30 % are bots; only humans purchase; the heuristic flags mostly bots.

    "good" separates bots from humans well, "weak" barely: same noise, less signal.
    """
    rng = np.random.default_rng(seed)
    is_bot = rng.random(N) < 0.3
    purchased = ~is_bot & (rng.random(N) < 0.2)
    rfm_human = ~is_bot & ~purchased & (rng.random(N) < 0.3)
    frame = pd.DataFrame(
        {
            "click_id": [f"c-{i}" for i in range(N)],
            "slice": pd.Series(rng.choice(SLICES, N), dtype="string"),
            "hour": rng.integers(0, 24, N).astype("int8"),
            "purchased": purchased,
            "robotic": (is_bot & (rng.random(N) < 0.6)) | (~is_bot & (rng.random(N) < 0.01)),
            "label": (~(purchased | rfm_human)).astype("int8"),
        }
    )
    if truth:
        frame["is_bot"] = is_bot
    noise = rng.random(N)
    scores = {"good": 0.6 * is_bot + 0.4 * noise, "weak": 0.1 * is_bot + 0.9 * noise}
    return frame, scores


def test_the_better_model_wins_coverage_and_recall_at_every_equal_fpr() -> None:
    frame, scores = _day()
    ev = evaluate(frame, scores)
    assert ev.fpr_points == (0.005, 0.01, 0.02, 0.05)
    good, weak = ev.models["good"], ev.models["weak"]
    for g, w in zip(good.at_fpr, weak.at_fpr, strict=True):
        assert g.target_fpr is not None and g.target_fpr == w.target_fpr
        assert g.overall.rates.fpr <= g.target_fpr and w.overall.rates.fpr <= g.target_fpr
        assert g.overall.rates.coverage > w.overall.rates.coverage + 0.1
        assert g.overall.truth is not None and w.overall.truth is not None
        assert g.overall.truth.bot_recall > w.overall.truth.bot_recall
    # A low score should pick out purchasing clicks: the better model does so better.
    assert good.auc_purchased > weak.auc_purchased > 0.5
    flipped = evaluate(frame, {"flipped": 1.0 - scores["good"]}).models["flipped"]
    assert flipped.auc_purchased == pytest.approx(1.0 - good.auc_purchased)
    assert good.auc_label > weak.auc_label
    assert good.auc_bot is not None and good.auc_bot > 0.95


def test_each_point_is_the_lowest_threshold_within_the_fpr_point() -> None:
    frame, scores = _day()
    ev = evaluate(frame, {"good": scores["good"]}, fpr_points=[0.01])
    point = ev.models["good"].at(0.01)
    score, purchased = scores["good"], frame["purchased"].to_numpy()
    robotic, is_bot = frame["robotic"].to_numpy(), frame["is_bot"].to_numpy()
    assert isinstance(point.threshold, float)
    invalid = score >= point.threshold
    assert point.overall.rates == rates(invalid, purchased, robotic)
    assert point.overall.truth == truth_rates(invalid, is_bot)
    next_lower = score[score < point.threshold].max()
    assert rates(score >= next_lower, purchased, robotic).fpr > 0.01
    mask = (frame["slice"] == "desktop/out").to_numpy()
    assert point.slices["desktop/out"].rates == rates(invalid[mask], purchased[mask], robotic[mask])
    hour = frame["hour"].to_numpy()
    assert point.hourly_ivr[5] == pytest.approx(invalid[hour == 5].mean())


def test_points_at_equal_true_human_fpr_set_the_threshold_on_the_ground_truth() -> None:
    frame, scores = _day()
    ev = evaluate(frame, scores, fpr_points=[0.01, 0.02])
    is_bot = frame["is_bot"].to_numpy()
    good, weak = ev.models["good"], ev.models["weak"]
    for fpr in (0.01, 0.02):
        point = good.at_human(fpr)
        assert isinstance(point.threshold, float) and point.overall.truth is not None
        invalid = scores["good"] >= point.threshold
        assert point.overall.truth == truth_rates(invalid, is_bot)
        assert point.overall.truth.human_fpr <= fpr
        # The lowest such threshold: one score lower passes the point.
        next_lower = scores["good"][scores["good"] < point.threshold].max()
        assert truth_rates(scores["good"] >= next_lower, is_bot).human_fpr > fpr
        weaker = weak.at_human(fpr).overall.truth
        assert weaker is not None
        assert point.overall.truth.bot_recall > weaker.bot_recall + 0.1
    data = ev.to_dict()["models"]["good"]
    assert [p["target_fpr"] for p in data["at_human_fpr"]] == [0.01, 0.02]
    blind = evaluate(*_day(truth=False), fpr_points=[0.01])
    assert "at_human_fpr" not in blind.to_dict()["models"]["good"]
    with pytest.raises(EvaluationError, match="no ground truth"):
        blind.models["good"].at_human(0.01)
    with pytest.raises(EvaluationError, match=r"pick one of 0\.01, 0\.02"):
        good.at_human(0.05)


def test_served_per_slice_thresholds_are_applied_slice_by_slice() -> None:
    frame, scores = _day()
    per_slice = {"app/in": 0.3, "app/out": 0.5, "desktop/in": 0.7, "desktop/out": 0.9}
    ev = evaluate(frame, scores, thresholds={"good": per_slice, "weak": 0.8})
    served = ev.models["good"].served
    assert served is not None and served.target_fpr is None
    cut = frame["slice"].map(per_slice).to_numpy(dtype=float)
    invalid = scores["good"] >= cut
    expected = rates(invalid, frame["purchased"].to_numpy(), frame["robotic"].to_numpy())
    assert served.overall.rates == expected
    weak_served = ev.models["weak"].served
    assert weak_served is not None
    assert weak_served.overall.rates.ivr == pytest.approx((scores["weak"] >= 0.8).mean())


def test_truth_figures_only_with_ground_truth() -> None:
    frame, scores = _day(truth=False)
    ev = evaluate(frame, scores)
    assert not ev.has_truth
    data = ev.to_dict()
    assert "bots" not in data and "auc_bot" not in data["models"]["good"]
    point = data["models"]["good"]["at_fpr"][0]
    assert "bot_recall" not in point["overall"] and "human_fpr" not in point["overall"]
    assert {"ivr", "fpr", "coverage"} <= point["overall"].keys()
    with_truth = evaluate(*_day(truth=True)).to_dict()
    assert {"bot_recall", "precision", "human_fpr"} <= with_truth["models"]["good"]["at_fpr"][0][
        "overall"
    ].keys()
    text = _render(ev)
    assert "coverage" in text and "bot recall" not in text


def test_json_round_trips_strictly() -> None:
    frame, scores = _day()
    data = evaluate(frame, scores, thresholds={"good": 0.5}, coverage_k=10).to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["coverage_k"] == 10
    assert data["models"]["good"]["served"]["threshold"] == 0.5
    curve = data["models"]["good"]["curves"]["all"]
    assert curve["threshold"][0] is None  # +inf: the point that invalidates nothing
    assert len(curve["ivr"]) < 500  # thinned, not one point per click
    assert curve["ivr"][-1] == 1.0


def test_slice_without_purchases_or_hour_without_clicks_reports_nan(tmp_path: Path) -> None:
    frame, scores = _day()
    frame.loc[frame["slice"] == "app/out", "purchased"] = False
    frame["hour"] = frame["hour"].where(frame["hour"] != 3, 4)
    ev = evaluate(frame, scores, thresholds={"good": 0.5})
    point = ev.models["good"].at(0.02)
    assert math.isnan(point.slices["app/out"].rates.fpr)
    assert point.slices["app/out"].rates.ivr > 0
    assert math.isnan(point.hourly_ivr[3])
    data = ev.to_dict()
    assert data["models"]["good"]["at_fpr"][2]["slices"]["app/out"]["fpr"] is None
    assert set(data["models"]["good"]["curves"]["app/out"]["fpr"]) == {None}
    assert data["models"]["good"]["at_fpr"][2]["hourly_ivr"][3] is None

    written = write_report(ev, tmp_path / "report")
    names = {p.name for p in written}
    assert names == {"report.json", "ivr_fpr.png", "coverage_fpr.png", "hourly_ivr.png"}
    for path in written:
        assert path.parent == tmp_path / "report" and path.stat().st_size > 1000
    for path in written[1:]:
        assert path.read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == data


def test_terminal_table_has_a_row_per_model_and_served_threshold() -> None:
    frame, scores = _day()
    text = _render(evaluate(frame, scores, thresholds={"weak": 0.9}))
    for expected in ("good", "weak", "weak (served)", "bot recall", "human FPR", "20,000"):
        assert expected in text
    with pytest.raises(EvaluationError, match=r"pick one of 0\.005, 0\.01"):
        summary_table(evaluate(frame, scores), headline_fpr=0.03)


def _render(ev: Evaluation) -> str:
    console = Console(record=True, width=200)
    console.print(summary_table(ev))
    return console.export_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, s: (f.drop(columns=["robotic"]), s, {}), "lacks column"),
        (lambda f, s: (f, {"good": s["good"][:-1]}, {}), "one score per click"),
        (lambda f, s: (f, {"good": np.full(N, np.nan)}, {}), "NaN"),
        (lambda f, s: (f, {}, {}), "no model scores"),
        (lambda f, s: (f.assign(purchased=False), s, {}), "no purchasing clicks"),
        (lambda f, s: (f, s, {"thresholds": {"other": 0.5}}), "without scores"),
        (lambda f, s: (f, s, {"thresholds": {"good": {"app/in": 0.5}}}), "no threshold for"),
        (lambda f, s: (f, s, {"fpr_points": [0.0]}), "in \\(0, 1\\)"),
    ],
)
def test_bad_input_is_a_clear_error(change: Callable[..., Any], message: str) -> None:
    frame, scores = _day()
    bad_frame, bad_scores, options = change(frame, scores)
    with pytest.raises(EvaluationError, match=message):
        evaluate(bad_frame, bad_scores, **options)
