"""Intervals on every rate, and guardrail verdicts that refuse only with confidence (issue 19)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from guardrails.model import check_candidate
from guardrails.report import Status
from models.evaluate import evaluate
from slidr.metrics import Rates, difference_interval, effective_size, wilson
from slidr.settings import GuardrailSettings

SETTINGS = GuardrailSettings()


def test_wilson_interval_covers_the_rate_at_its_stated_level() -> None:
    rng = np.random.default_rng(5)
    n, p = 400, 0.02
    hits = rng.binomial(n, p, 4000) / n
    covered = [lo <= p <= hi for lo, hi in (wilson(h, n, 1.96) for h in hits)]
    assert 0.93 <= float(np.mean(covered)) <= 0.99
    assert wilson(0.5, 100, 0.0) == (0.5, 0.5)  # z = 0: the point estimate
    assert all(math.isnan(v) for v in wilson(math.nan, 100, 1.96))
    low, high = difference_interval((0.3, 1000), (0.2, 1000), 1.96)
    assert low < 0.1 < high and low > 0.05


def test_effective_size_of_equal_weights_is_the_count() -> None:
    assert effective_size(np.ones(50)) == pytest.approx(50)
    assert effective_size(np.r_[np.ones(50), 100.0]) < 5


def test_a_few_clicks_over_the_budget_are_unsure_not_refused() -> None:
    # The case: 14 of 464 purchasing clicks against a bound of 0.025 (11.6 clicks).
    noisy = Rates(0.25, 14 / 464, 0.8, clicks=30_000, purchasing=464, robotic=3_000)
    report = check_candidate({"all": noisy}, None, 0.02, SETTINGS)
    (budget,) = [c for c in report.checks if c.name == "fpr_budget"]
    assert budget.status is Status.UNSURE
    assert budget.sure is not None and 0.5 < budget.sure < 0.95
    assert budget.interval is not None and budget.interval[0] < 0.025 < budget.interval[1]
    assert not report.refused and not report.passed
    report.raise_if_failed()  # unsure checks never refuse
    assert "unsure" in report.to_markdown()


def test_the_same_rate_on_many_clicks_is_refused_with_its_confidence() -> None:
    sure = Rates(0.25, 0.0302, 0.8, clicks=300_000, purchasing=10_000, robotic=30_000)
    report = check_candidate({"all": sure}, None, 0.02, SETTINGS)
    (budget,) = [c for c in report.checks if c.name == "fpr_budget"]
    assert budget.status is Status.FAILED and budget.sure is not None and budget.sure > 0.99
    assert report.refused
    lenient = GuardrailSettings(confidence=0.9999999)
    assert not check_candidate({"all": sure}, None, 0.02, lenient).refused


def test_report_json_has_an_interval_for_every_rate() -> None:
    rng = np.random.default_rng(1)
    n = 5_000
    frame = {
        "slice": np.where(rng.random(n) < 0.5, "app/in", "app/out"),
        "hour": rng.integers(0, 24, n),
        "purchased": rng.random(n) < 0.05,
        "robotic": rng.random(n) < 0.2,
        "label": (rng.random(n) < 0.7).astype(int),
    }
    evaluation = evaluate(pd.DataFrame(frame), {"m": rng.random(n)}, fpr_points=[0.02])
    overall = evaluation.to_dict()["models"]["m"]["at_fpr"][0]["overall"]
    for metric in ("ivr", "fpr", "coverage"):
        low, high = overall[f"{metric}_ci"]
        assert low <= overall[metric] <= high
