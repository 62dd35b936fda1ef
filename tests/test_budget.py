"""Issue 19: every slice its own threshold at any volume (shrinkage toward the parent), and
an FPR budget on the estimated human FPR, not only on purchasing clicks (no network)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibration import Policy, Status, run
from calibration.calibrate import bounded_budget, fpr_estimates
from calibration.human import human_weights, stand_in_weights, weighted_rate
from calibration.shrink import fit_shrinkage
from calibration.slices import build_shrunk_slices
from slidr.metrics import Bools, wilson, z_one_sided
from slidr.settings import CalibrationSettings
from tests.test_calibration import SLICES, synthetic_day

SHRINK = CalibrationSettings(fpr_budget=0.02, min_coverage=0.3, min_purchases=100)


def test_a_slice_with_few_purchasing_clicks_gets_its_own_cautious_threshold() -> None:
    small = synthetic_day(1, "2026-01-05", sizes={"app/in": 200})
    later = synthetic_day(2, "2026-01-06")
    purchasing = int(small.loc[small["slice"] == "app/in", "purchased"].sum())
    assert purchasing < 15
    outcome = run(
        small, later, SHRINK.model_copy(update={"fpr_target": "purchaser"}), model_version=1
    )
    assert outcome.status is Status.CALIBRATED, outcome.message
    assert set(outcome.thresholds) == set(SLICES)  # no pooling: every slice its own
    weight = small["purchased"].to_numpy(dtype=np.float64)
    units, _, shrinkage = build_shrunk_slices(small, 100, weight, 0.02, 2000.0)
    # Few clicks: the slice leans on its parent; a big slice keeps more of its own curve.
    assert shrinkage.weight["app/in"] < shrinkage.weight["desktop/out"]
    assert shrinkage.weight["app/in"] < 0.5
    unit = next(u for u in units if u.name == "app/in")
    t = unit.curve.thresholds[1:]
    own = shrinkage.nodes["app/in"].own(t)
    parent = shrinkage.fpr("app", t)
    lam = shrinkage.weight["app/in"]
    assert np.allclose(unit.curve.fpr[1:], np.maximum.accumulate(lam * own + (1 - lam) * parent))
    assert np.all(np.diff(unit.curve.fpr) >= 0)


def test_slices_that_do_not_differ_lean_fully_on_their_parent() -> None:
    rng = np.random.default_rng(4)
    n = 40_000
    frame = pd.DataFrame(
        {
            "slice": rng.choice(["app/in", "app/out", "desktop/in", "desktop/out"], n),
            "score": rng.random(n),
            "purchased": rng.random(n) < 0.02,
        }
    )
    weight = frame["purchased"].to_numpy(dtype=np.float64)
    shrinkage = fit_shrinkage(frame, weight, 0.05, 2000.0)
    assert shrinkage.strength[2] > 500  # no spread beyond noise: a strong prior
    assert shrinkage.weight["app/in"] < 0.3


def test_the_human_fpr_estimate_corrects_purchasers_bias() -> None:
    # Logged-in humans buy five times as often and score low; logged-out humans score high.
    rng = np.random.default_rng(7)
    parts = []
    for name, n, mean, buy in (("app/in", 20_000, -3.0, 0.10), ("app/out", 20_000, -1.0, 0.02)):
        is_bot = rng.random(n) < (0.05 if name.endswith("in") else 0.4)
        logit = np.where(is_bot, rng.normal(2.0, 1.0, n), rng.normal(mean, 1.0, n))
        parts.append(
            pd.DataFrame(
                {
                    "slice": name,
                    "score": 1 / (1 + np.exp(-logit)),
                    "purchased": ~is_bot & (rng.random(n) < buy),
                    "robotic": is_bot & (rng.random(n) < 0.5),
                    "is_bot": is_bot,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    invalid = frame["score"].to_numpy() >= 0.5
    truth = float(invalid[~frame["is_bot"].to_numpy()].mean())
    purchaser = float(invalid[frame["purchased"].to_numpy()].mean())
    weights = human_weights(frame, with_rfm=True, hour_bands=4)
    estimate = weighted_rate(invalid, weights, 0.95)
    assert abs(purchaser / truth - 1) > 0.25  # the stand-in alone is far off
    assert estimate.value == pytest.approx(truth, rel=0.25)
    assert estimate.low <= estimate.value <= estimate.high and estimate.value > purchaser


def test_the_budget_binds_the_human_fpr_and_both_figures_are_reported() -> None:
    days = synthetic_day(1, "2026-01-05"), synthetic_day(2, "2026-01-06")
    outcome = run(*days, SHRINK, model_version=1)
    assert outcome.status is Status.CALIBRATED, outcome.message
    figures = outcome.fpr_estimates["calibration_day"]["all"]
    assert set(figures) == {"purchaser", "human"}
    assert figures["human"].low <= figures["human"].value <= figures["human"].high
    assert outcome.comparison[Policy.SLICE_LEVEL].calibration_day.overall.fpr > 0


@pytest.mark.parametrize("n", [50.0, 600.0, 20_000.0])
def test_the_bounded_budget_is_the_fpr_whose_upper_bound_is_the_budget(n: float) -> None:
    solved = bounded_budget(0.02, n, 0.8)
    assert 0.0 < solved < 0.02
    assert wilson(solved, n, z_one_sided(0.8))[1] == pytest.approx(0.02)
    assert bounded_budget(0.02, n, 0.5) == 0.02  # the point: no margin
    assert bounded_budget(0.02, n, 0.95) < solved  # surer, lower
    assert bounded_budget(0.02, 4 * n, 0.8) > solved  # more evidence, a smaller margin
    assert bounded_budget(0.02, 1.0, 0.99) == 0.0  # no FPR is bounded below the budget


def test_the_thresholds_are_solved_where_the_estimate_s_upper_bound_meets_the_budget() -> None:
    days = synthetic_day(1, "2026-01-05"), synthetic_day(2, "2026-01-06")
    point = run(*days, SHRINK.model_copy(update={"budget_confidence": 0.5}), model_version=1)
    bound = run(*days, SHRINK.model_copy(update={"budget_confidence": 0.8}), model_version=1)
    assert point.calibrated and bound.calibrated, (point.message, bound.message)
    assert point.solved_budget == SHRINK.fpr_budget
    assert point.min_feasible_budget < bound.solved_budget < SHRINK.fpr_budget
    estimate = bound.fpr_estimates["calibration_day"]["all"]["human"]
    # The one-sided 80 % bound of what the thresholds invalidate meets the budget, not the point.
    assert estimate.value <= bound.solved_budget + 1e-3
    upper = wilson(estimate.value, estimate.n, z_one_sided(0.8))[1]
    assert upper <= SHRINK.fpr_budget + 1e-3
    within = point.fpr_estimates["calibration_day"]["all"]["human"].value
    assert within > estimate.value
    assert any("80% upper bound" in note for note in bound.notes)
    assert "solved at" in bound.message and "solved at" not in point.message
    # Below the coverage floor's smallest feasible budget the floor wins.
    near_floor = {"fpr_budget": 1.2 * point.min_feasible_budget, "budget_confidence": 0.95}
    floor = run(*days, SHRINK.model_copy(update=near_floor), model_version=1)
    assert floor.calibrated and floor.solved_budget == floor.min_feasible_budget
    assert any("smallest feasible budget" in note for note in floor.notes)


def _thin_stand_ins(rng: np.random.Generator) -> tuple[pd.DataFrame, Bools]:
    """One logged-out slice as at 30,000 clicks a day: 6,000 humans (scores 0-0.8), 3,000
    bots (0.6-1), and about 60 purchasing clicks drawn at random from the humans."""
    score = np.r_[rng.uniform(0.0, 0.8, 6000), rng.uniform(0.6, 1.0, 3000)]
    human = np.r_[np.ones(6000, dtype=bool), np.zeros(3000, dtype=bool)]
    bought = human & (rng.random(len(score)) < 0.01)
    frame = pd.DataFrame({"slice": "app/out", "score": score, "purchased": bought})
    return frame, human


def test_smoothed_stand_ins_are_not_fooled_where_a_threshold_sits_just_above_one() -> None:
    # The solver picks thresholds where the stand-ins' step curve is flattest: just above a
    # stand-in, the raw share undercounts the humans there (the truth is known here).
    rng = np.random.default_rng(19)
    raw_ratio, smoothed_ratio = [], []
    for _ in range(100):
        frame, human = _thin_stand_ins(rng)
        score = frame["score"].to_numpy()
        second = np.sort(score[frame["purchased"].to_numpy()])[-2]
        invalid = score >= np.nextafter(second, 1.0)
        truth = float(invalid[human].mean())
        raw = stand_in_weights(frame, with_rfm=False, hour_bands=4)
        smoothed = human_weights(frame, with_rfm=False, hour_bands=4)
        raw_ratio.append(weighted_rate(invalid, raw, 0.95).value / truth)
        smoothed_ratio.append(weighted_rate(invalid, smoothed, 0.95).value / truth)
    assert np.median(raw_ratio) < 0.7  # about 2 stand-ins in 60 where 3.4 % of humans are
    assert np.median(smoothed_ratio) == pytest.approx(1.0, abs=0.25)
    assert np.mean(np.abs(np.log(smoothed_ratio))) < np.mean(np.abs(np.log(raw_ratio)))


def test_smoothing_keeps_each_slice_s_stand_in_weight_and_counts_the_evidence_on_them() -> None:
    rng = np.random.default_rng(3)
    frame, _ = _thin_stand_ins(rng)
    other, _ = _thin_stand_ins(rng)
    frame = pd.concat([frame, other.assign(slice="desktop/out")], ignore_index=True)
    raw = stand_in_weights(frame, with_rfm=False, hour_bands=4)
    smoothed = human_weights(frame, with_rfm=False, hour_bands=4)
    assert (smoothed > 0).sum() > 10 * (raw > 0).sum()  # shared with the neighbours
    for name in ("app/out", "desktop/out"):
        rows = (frame["slice"] == name).to_numpy()
        assert smoothed[rows].sum() == pytest.approx(raw[rows].sum())
    assert np.array_equal(human_weights(frame, with_rfm=False, hour_bands=4, per_side=0), raw)
    # The interval rests on the stand-ins, not on the clicks their weight was shared with.
    estimates = fpr_estimates(
        frame.assign(robotic=False),
        {"app/out": 0.7, "desktop/out": 0.7},
        0.5,
        CalibrationSettings(human_with_rfm=False),
    )
    human = estimates["app/out"]["human"]
    assert human.n == pytest.approx(frame.loc[frame["slice"] == "app/out", "purchased"].sum())
    assert human.low < human.value < human.high
