"""Model guardrails and the report they produce (no GX, no stack: plain figures)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from guardrails.model import BudgetFpr, check_candidate
from guardrails.report import Check, GuardrailError, GuardrailFailed, GuardrailReport, Status
from slidr.errors import SlidrError
from slidr.metrics import Rates, rates
from slidr.settings import GuardrailSettings

SETTINGS = GuardrailSettings()
BUDGET = 0.02
SLICES = ("desktop/in", "desktop/out", "app/out")


def figures(ivr: float, fpr: float = 0.015, coverage: float = 0.8, purchasing: int = 300) -> Rates:
    return Rates(ivr, fpr, coverage, clicks=10_000, purchasing=purchasing, robotic=1_000)


def healthy() -> dict[str, Rates]:
    return {"all": figures(0.25), **{name: figures(0.25) for name in SLICES}}


def failed_names(report: GuardrailReport) -> set[str]:
    return {check.name for check in report.failed}


def test_a_healthy_candidate_close_to_the_serving_model_passes() -> None:
    serving = {**healthy(), "desktop/in": figures(0.30, fpr=0.01)}

    report = check_candidate(healthy(), serving, BUDGET, SETTINGS)

    assert report.passed, report.to_markdown()
    names = {check.name for check in report.checks}
    assert {"ivr", "fpr_budget", "fpr_ceiling", "coverage"} <= names
    assert {f"ivr_change:{name}" for name in ("all", *SLICES)} <= names
    assert {f"fpr_increase:{name}" for name in ("all", *SLICES)} <= names
    report.raise_if_failed()


def test_a_model_that_invalidates_everything_is_refused() -> None:
    rng = np.random.default_rng(3)
    purchased, robotic = rng.random(5_000) < 0.05, rng.random(5_000) < 0.2
    everything = rates(np.ones(5_000, dtype=bool), purchased, robotic)
    candidate = {"all": everything, **{name: everything for name in SLICES}}

    report = check_candidate(candidate, healthy(), BUDGET, SETTINGS)

    assert {"ivr", "fpr_budget", "fpr_ceiling", "ivr_change:all"} <= failed_names(report)
    assert {f"ivr_change:{name}" for name in SLICES} <= failed_names(report)
    with pytest.raises(GuardrailFailed) as refused:
        report.raise_if_failed()
    message = str(refused.value)
    assert message.startswith("candidate model refused by")
    assert "ivr (observed 1, bound >= 0.01 and <= 0.6)" in message
    assert "fpr_budget (observed 1, bound <= 0.025)" in message
    assert isinstance(refused.value, SlidrError)


def test_a_model_that_invalidates_nothing_is_refused() -> None:
    nothing = figures(0.0, fpr=0.0, coverage=0.0)

    report = check_candidate({"all": nothing}, None, BUDGET, SETTINGS)

    assert failed_names(report) == {"ivr", "coverage"}


def test_a_slice_whose_ivr_moves_too_far_is_refused() -> None:
    candidate = {**healthy(), "app/out": figures(0.40)}

    report = check_candidate(candidate, healthy(), BUDGET, SETTINGS)

    assert failed_names(report) == {"ivr_change:app/out"}
    (check,) = report.failed
    assert check.observed == pytest.approx(0.15)
    assert check.bound == "|change| <= 0.1"
    assert check.detail == "candidate 0.4000 vs serving 0.2500"


def test_a_serving_model_over_budget_lets_a_candidate_invalidate_less() -> None:
    """The second `make demo` on a new world: the serving model invalidates 8 % of purchasing
    clicks; a candidate within budget lowers IVR by more than the change limit and is kept,
    while a rise beyond the limit is still refused."""
    serving = {"all": figures(0.45, fpr=0.08, purchasing=500), "app/out": figures(0.45)}
    lower = {"all": figures(0.28, purchasing=500), "app/out": figures(0.28)}

    report = check_candidate(lower, serving, BUDGET, SETTINGS)

    assert report.passed, report.to_markdown()
    (waived,) = [c for c in report.checks if c.name == "ivr_change:app/out"]
    assert waived.bound == "<= 0.1"
    assert waived.detail.endswith("the serving model is over its FPR budget: any decrease allowed")
    higher = {"all": figures(0.28, purchasing=500), "app/out": figures(0.60)}
    assert failed_names(check_candidate(higher, serving, BUDGET, SETTINGS)) == {
        "ivr_change:app/out"
    }
    # Within its budget, the same drop is refused as before.
    within = {**serving, "all": figures(0.45, fpr=0.02, purchasing=500)}
    assert failed_names(check_candidate(lower, within, BUDGET, SETTINGS)) == {
        "ivr_change:all",
        "ivr_change:app/out",
    }


def test_a_serving_model_tightened_intraday_is_one_model_at_two_operating_points() -> None:
    """Session 8's second `make demo`: the monitor had raised the serving model's thresholds,
    and both next candidates, within budget, caught 11-20 points more in two slices than the
    tightened model and were refused. Compared also with the serving model as calibrated, a
    candidate between the two passes; one beyond both by more than the limit is refused."""
    served = {"all": figures(0.15, fpr=0.005), "app/out": figures(0.12, fpr=0.004)}
    calibrated = {"all": figures(0.30, fpr=0.02), "app/out": figures(0.32, fpr=0.021)}
    between = {"all": figures(0.28, fpr=0.017), "app/out": figures(0.30, fpr=0.018)}

    locked = check_candidate(between, served, BUDGET, SETTINGS)
    report = check_candidate(between, served, BUDGET, SETTINGS, serving_calibrated=calibrated)

    assert failed_names(locked) == {"ivr_change:all", "ivr_change:app/out"}
    assert report.passed, report.to_markdown()
    (change,) = [c for c in report.checks if c.name == "ivr_change:app/out"]
    assert change.observed == pytest.approx(-0.02)
    assert change.detail == "candidate 0.3000 vs serving as calibrated 0.3200"
    (fpr,) = [c for c in report.checks if c.name == "fpr_increase:app/out"]
    assert fpr.detail == "candidate 0.0180 vs serving as calibrated 0.0210"
    # Near the tightening, it is compared with the serving model as it serves.
    tight = {"all": figures(0.16, fpr=0.006), "app/out": figures(0.13, fpr=0.005)}
    (near,) = [
        c
        for c in check_candidate(
            tight, served, BUDGET, SETTINGS, serving_calibrated=calibrated
        ).checks
        if c.name == "ivr_change:app/out"
    ]
    assert near.detail == "candidate 0.1300 vs serving (re-solved intraday) 0.1200"
    beyond = {**between, "app/out": figures(0.50, fpr=0.018)}
    refused = check_candidate(beyond, served, BUDGET, SETTINGS, serving_calibrated=calibrated)
    assert failed_names(refused) == {"ivr_change:app/out"}
    # A slice whose threshold the re-solve left alone is simply the serving model's.
    same = check_candidate(between, served, BUDGET, SETTINGS, serving_calibrated=served)
    (unmoved,) = [c for c in same.checks if c.name == "ivr_change:app/out"]
    assert unmoved.detail == "candidate 0.3000 vs serving 0.1200"


def test_the_budget_judges_the_human_fpr_estimate_when_given() -> None:
    """A demo world's first cycle (seed 28269): the candidate invalidated 4.71 % of the later
    day's humans; its purchaser FPR, 3.07 % of 489 purchasing clicks, is over the bound on its
    point only, its human FPR estimate, 3.78 % on 606 effective stand-ins, with confidence.
    With the budget bound to the human FPR, the budget and the ceiling judge the estimate."""
    candidate = {"all": figures(0.27, fpr=0.0307, purchasing=489)}
    over = BudgetFpr(0.0378, 606.0, "human FPR (est.) on 606 effective stand-ins")

    report = check_candidate(candidate, None, BUDGET, SETTINGS, candidate_fpr=over)

    assert failed_names(report) == {"fpr_budget"} and report.refused
    (budget,) = [c for c in report.checks if c.name == "fpr_budget"]
    assert budget.observed == 0.0378
    assert budget.detail == "budget 0.02 + slack 0.005; human FPR (est.) on 606 effective stand-ins"
    assert budget.sure is not None and budget.sure > 0.95
    # The same point on a few effective stand-ins is not sure enough to refuse.
    thin = BudgetFpr(0.0378, 60.0, "human FPR (est.) on 60 effective stand-ins")
    unsure = check_candidate(candidate, None, BUDGET, SETTINGS, candidate_fpr=thin)
    assert not unsure.refused and failed_names(unsure) == {"fpr_budget"}
    # On the purchaser FPR the check is unsure: the candidate would have been promoted.
    purchaser = check_candidate(candidate, None, BUDGET, SETTINGS)
    assert not purchaser.refused and failed_names(purchaser) == {"fpr_budget"}
    ceiling = BudgetFpr(0.09, 606.0, "human FPR (est.) on 606 effective stand-ins")
    broken = check_candidate(candidate, None, BUDGET, SETTINGS, candidate_fpr=ceiling)
    assert failed_names(broken) == {"fpr_budget", "fpr_ceiling"}


def test_the_serving_model_is_over_budget_by_the_figure_the_budget_binds() -> None:
    """Within budget on purchasing clicks, over it on the human estimate: the candidate may
    invalidate less, as when the purchaser FPR shows it."""
    serving = {"all": figures(0.45, fpr=0.015, purchasing=500), "app/out": figures(0.45)}
    lower = {"all": figures(0.28, purchasing=500), "app/out": figures(0.28)}
    human = BudgetFpr(0.015, 600.0, "human FPR (est.) on 600 effective stand-ins")

    kept = check_candidate(lower, serving, BUDGET, SETTINGS).refused
    over = BudgetFpr(0.06, 600.0, "human FPR (est.) on 600 effective stand-ins")
    waived = check_candidate(
        lower, serving, BUDGET, SETTINGS, candidate_fpr=human, serving_fpr=over
    )

    assert kept
    assert waived.passed, waived.to_markdown()


def test_fpr_increase_is_compared_only_where_purchases_make_it_meaningful() -> None:
    candidate = {
        **healthy(),
        "desktop/in": figures(0.25, fpr=0.06),
        "app/out": figures(0.25, fpr=0.2, purchasing=12),
    }

    report = check_candidate(candidate, healthy(), BUDGET, SETTINGS)

    assert failed_names(report) == {"fpr_increase:desktop/in"}
    (skipped,) = [c for c in report.checks if c.name == "fpr_increase:app/out"]
    assert skipped.status is Status.SKIPPED
    assert skipped.detail == "12 purchasing clicks, fewer than 30"


@pytest.mark.parametrize(("fpr", "passes"), [(0.024, True), (0.026, False)])
def test_the_budget_allows_the_configured_slack(fpr: float, passes: bool) -> None:
    report = check_candidate({"all": figures(0.25, fpr=fpr)}, None, BUDGET, SETTINGS)

    assert ("fpr_budget" not in failed_names(report)) is passes


def test_missing_slices_and_unmeasurable_figures_are_reported_not_crashed_on() -> None:
    candidate = {"desktop/in": figures(0.25), "app/in": figures(0.25)}
    serving = {"all": figures(0.25), "desktop/in": figures(0.25), "desktop/out": figures(0.25)}

    report = check_candidate(candidate, serving, BUDGET, SETTINGS)

    assert failed_names(report) == {"overall"}
    skipped = {c.name: c.detail for c in report.checks if c.status is Status.SKIPPED}
    assert skipped == {
        "change:all": "no figures for the candidate",
        "change:app/in": "no figures for the serving model",
        "change:desktop/out": "no figures for the candidate",
    }
    no_purchases = check_candidate(
        {"all": figures(0.25, fpr=math.nan, purchasing=0)}, None, BUDGET, SETTINGS
    )
    assert failed_names(no_purchases) == {"fpr_budget", "fpr_ceiling"}
    assert no_purchases.failed[0].detail == "not measurable on the held-out day"


def test_a_budget_outside_0_1_is_a_clear_error() -> None:
    with pytest.raises(GuardrailError, match=r"must be in \(0, 1\]"):
        check_candidate(healthy(), None, 2.0, SETTINGS)


def test_the_report_is_saved_and_rendered_with_the_numbers(tmp_path: Path) -> None:
    report = check_candidate(
        {"all": figures(0.25, fpr=math.nan, purchasing=0)}, None, BUDGET, SETTINGS
    )

    as_json, as_md = report.save(tmp_path, "model-guardrails")

    saved = json.loads(as_json.read_text())
    assert saved["passed"] is False
    assert saved["failed"] == ["fpr_budget", "fpr_ceiling"]
    budget = next(c for c in saved["checks"] if c["name"] == "fpr_budget")
    assert budget == {
        "name": "fpr_budget",
        "status": "failed",
        "observed": None,
        "bound": "<= 0.025",
        "detail": "not measurable on the held-out day",
    }
    lines = as_md.read_text().splitlines()
    assert lines[2] == "**refused** (2 failed); 5 checks."
    assert lines[6].startswith("| fpr_budget | failed | nan | <= 0.025 |")
    console = Console(record=True, width=200)
    console.print(report)
    shown = console.export_text()
    assert "candidate model: 5 checks, refused (2 failed)" in shown
    assert "fpr_ceiling" in shown
    assert "coverage" not in shown  # passed checks stay in the saved report only


def test_the_terminal_shows_details_literally() -> None:
    report = GuardrailReport(
        "data [x]", (Check("odd", Status.FAILED, "[bold]x", "in [a, b]", "[red]not markup"),)
    )
    console = Console(record=True, width=200)
    console.print(report)
    shown = console.export_text()
    assert "data [x]: 1 checks, refused (1 failed)" in shown
    assert "[bold]x" in shown
    assert "in [a, b]" in shown
    assert "[red]not markup" in shown
