"""Issue 19: every slice its own threshold at any volume (shrinkage toward the parent), and
an FPR budget on the estimated human FPR, not only on purchasing clicks (no network)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibration import Policy, Status, run
from calibration.human import human_weights, weighted_rate
from calibration.shrink import fit_shrinkage
from calibration.slices import build_shrunk_slices
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
