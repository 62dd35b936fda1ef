"""Slice-level calibration on synthetic score frames: fits, the convex problem, the safe
results of bad cases, the record the worker serves and the report (no network)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from calibration import (
    CalibrationError,
    Policy,
    Status,
    print_table,
    run,
    write_record,
    write_report,
)
from calibration.fit import (
    FitMethod,
    IvrFit,
    fit_ivr,
    fit_quadratic,
    hull_at,
    operating_points,
)
from calibration.problem import SliceTerms, allocation_problem
from calibration.record import PREVIOUS_FILE
from calibration.report import REPORT_FILE
from slidr.metrics import Curve, curve
from slidr.model_record import load_record
from slidr.serving_figures import ServingFigures
from slidr.settings import CalibrationSettings

#: name: (clicks, bot share, mean logit of human scores, of bot scores). Mobile humans score
#: high and desktop humans low, so one global threshold suits no slice well.
SLICES: dict[str, tuple[int, float, float, float]] = {
    "desktop/out": (30_000, 0.45, -2.5, 1.0),
    "desktop/in": (15_000, 0.05, -3.0, 0.0),
    "mobile_web/out": (25_000, 0.35, -1.0, 1.5),
    "mobile_web/in": (10_000, 0.05, -1.5, 0.5),
    "app/out": (12_000, 0.25, -1.5, 0.5),
    "app/in": (8_000, 0.03, -2.0, 0.0),
}
# The article's calibration: small slices pooled, the budget on purchasing clicks (issue 19's
# shrinkage and human FPR: tests/test_budget.py).
SETTINGS = CalibrationSettings(
    fpr_budget=0.02,
    min_coverage=0.3,
    min_purchases=100,
    slice_pooling="pool",
    fpr_target="purchaser",
)


def synthetic_day(seed: int, date: str, sizes: Mapping[str, int] | None = None) -> pd.DataFrame:
    """A labelled click frame with scores: ~3 % of humans purchase, 70 % of bots are flagged."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, (n, bots, human_mean, bot_mean) in SLICES.items():
        n = (sizes or {}).get(name, n)
        is_bot = rng.random(n) < bots
        logit = np.where(is_bot, rng.normal(bot_mean, 1.2, n), rng.normal(human_mean, 1.0, n))
        parts.append(
            pd.DataFrame(
                {
                    "slice": name,
                    "date": date,
                    "score": 1 / (1 + np.exp(-logit)),
                    "purchased": ~is_bot & (rng.random(n) < 0.03),
                    "robotic": rng.random(n) < np.where(is_bot, 0.7, 0.01),
                    "is_bot": is_bot,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def days() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic_day(1, "2026-01-05"), synthetic_day(2, "2026-01-06")


def quadratic_fit(coef: tuple[float, float, float], lo: float = 0.0, hi: float = 0.1) -> IvrFit:
    return IvrFit(FitMethod.QUADRATIC, lo, hi, coef, (0.0,), (0.0,), 0.0, 0.0)


# --- fits ---------------------------------------------------------------------------------


def test_quadratic_fit_recovers_a_concave_curve_and_never_bends_up() -> None:
    f = np.linspace(0.01, 0.1, 50)
    assert np.allclose(fit_quadratic(f, -20 * f**2 + 4 * f + 0.1), (-20, 4, 0.1), atol=1e-8)
    a, b, _ = fit_quadratic(f, 30 * f**2 + 0.2)
    assert a == 0.0 and b > 0  # convex data: the best concave fit is a line


def test_a_curve_steep_at_zero_falls_back_to_its_concave_hull() -> None:
    f = np.linspace(0.0, 0.2, 201)
    steep = Curve(np.linspace(1.0, 0.0, 201), 0.2 + 0.3 * np.sqrt(f / 0.2), f, f)
    fit = fit_ivr(steep, 0.0, 0.1, max_rmse=0.005, max_pieces=8)
    assert fit.method is FitMethod.HULL and fit.quadratic_rmse > 0.005 > 0.002 > fit.hull_rmse
    assert len(fit.slopes) == 8 and all(np.diff(fit.slopes) < 0)  # concave
    points, ivr = operating_points(steep, 0.0, 0.1)
    assert np.all(hull_at(fit.slopes, fit.intercepts, points) <= ivr + 1e-12)  # chords


def test_the_hull_is_an_upper_envelope_of_a_noisy_curve(
    days: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    mobile = days[0][days[0]["slice"] == "mobile_web/in"]
    c = curve(*(mobile[k].to_numpy() for k in ("score", "purchased", "robotic")))
    fit = fit_ivr(c, 0.0, 0.1, max_rmse=0.005, max_pieces=64)
    points, ivr = operating_points(c, 0.0, 0.1)
    assert len(points) > 20 and np.all(np.diff(fit.slopes) <= 1e-12)
    assert np.all(hull_at(fit.slopes, fit.intercepts, points) >= ivr - 1e-12)


# --- the convex problem -------------------------------------------------------------------


def test_problem_is_dpp_and_matches_a_brute_force_search() -> None:
    terms = [
        SliceTerms(0.6, 0.7, quadratic_fit((-40.0, 4.0, 0.10))),
        SliceTerms(0.4, 0.3, quadratic_fit((-10.0, 3.0, 0.05), lo=0.02)),
    ]
    problem = allocation_problem(len(terms), 4)
    assert problem.problem.is_dcp(dpp=True)  # type: ignore[call-arg]
    f = problem.solve(terms, budget=0.03)
    # Brute force over f1 with f2 spending the rest of the budget.
    f1 = np.linspace(0.0, 0.1, 20001)
    f2 = np.clip((0.03 - 0.7 * f1) / 0.3, 0.02, 0.1)
    ok = 0.7 * f1 + 0.3 * f2 <= 0.03 + 1e-12
    value = 0.6 * (-40 * f1**2 + 4 * f1 + 0.1) + 0.4 * (-10 * f2**2 + 3 * f2 + 0.05)
    best = int(np.argmax(np.where(ok, value, -np.inf)))
    assert f == pytest.approx([f1[best], f2[best]], abs=1e-4)
    assert 0.7 * f[0] + 0.3 * f[1] <= 0.03 + 1e-7 and f[1] >= 0.02 - 1e-9


def test_a_resolve_reuses_the_compiled_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    from cvxpy.reductions.solvers.solving_chain import SolvingChain

    terms = [SliceTerms(1 / 3, 1 / 3, quadratic_fit((-30.0, 3.0, 0.1)))] * 3
    problem = allocation_problem(3, 4)
    problem.solve(terms, budget=0.02)

    def recompiling(*_: object) -> None:
        raise AssertionError("the problem was compiled again")

    monkeypatch.setattr(SolvingChain, "apply", recompiling)
    other = [SliceTerms(1 / 3, 1 / 3, quadratic_fit((-5.0, 1.0, 0.2)))] * 3
    assert allocation_problem(3, 4) is problem  # the process keeps one compiled problem
    assert problem.solve(other, budget=0.05) == pytest.approx([0.05] * 3, abs=1e-6)


def test_a_solve_does_not_depend_on_what_the_process_solved_before() -> None:
    """The compiled problem is shared, but the solver starts cold: warm-started, Clarabel kept
    the previous data's state, and on flat stretches of the curves the same calibration picked
    thresholds 0.02 apart after another seed's (bench_budget.py's sweep, seed 321)."""
    hull = IvrFit(FitMethod.HULL, 0.0, 0.1, (0.0, 0.0, 0.0), (20.0, 2.0), (0.1, 0.28), 0.1, 0.0)
    terms = [
        SliceTerms(0.3, 0.5, hull),
        SliceTerms(0.3, 0.2, quadratic_fit((-30.0, 3.0, 0.1))),
        SliceTerms(0.4, 0.3, quadratic_fit((-8.0, 2.0, 0.05), lo=0.01)),
    ]
    other = [SliceTerms(1 / 3, 1 / 3, quadratic_fit((-5.0, 1.0, 0.2)))] * 3
    problem = allocation_problem(3, 4)
    first = problem.solve(terms, budget=0.02)
    problem.solve(other, budget=0.05)
    assert np.array_equal(problem.solve(terms, budget=0.02), first)


def test_hull_and_quadratic_slices_share_one_problem() -> None:
    # A hull that is flat past f = 0.01: spending more there buys nothing.
    hull = IvrFit(FitMethod.HULL, 0.0, 0.1, (0.0, 0.0, 0.0), (20.0, 0.0), (0.1, 0.3), 0.1, 0.0)
    terms = [SliceTerms(0.5, 0.5, hull), SliceTerms(0.5, 0.5, quadratic_fit((-10.0, 2.0, 0.1)))]
    f = allocation_problem(2, 4).solve(terms, budget=0.05)
    assert f[0] == pytest.approx(0.01, abs=1e-5)
    assert f[1] == pytest.approx(0.09, abs=1e-5)  # the rest of the budget


# --- run: thresholds, budget, comparison --------------------------------------------------


def test_slice_level_beats_one_global_threshold_on_the_held_out_day(
    days: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    outcome = run(*days, SETTINGS, model_version=4)
    assert outcome.status is Status.CALIBRATED, outcome.message
    assert set(outcome.thresholds) == set(SLICES)
    assert len({round(t, 6) for t in outcome.thresholds.values()}) == len(SLICES)
    sliced = outcome.comparison[Policy.SLICE_LEVEL]
    same = outcome.comparison[Policy.GLOBAL_SAME_FPR]
    # On the calibration day: within budget, every slice at its coverage floor or above.
    assert sliced.calibration_day.overall.fpr <= SETTINGS.fpr_budget
    assert same.calibration_day.overall.fpr == pytest.approx(
        sliced.calibration_day.overall.fpr, abs=0.002
    )
    for name, r in sliced.calibration_day.per_slice.items():
        assert r.coverage >= SETTINGS.min_coverage, name
    # On the later day: more invalidated and more robotic coverage at about the same FPR.
    held_out, global_ = sliced.evaluation_day, same.evaluation_day
    assert held_out.overall.ivr > global_.overall.ivr
    assert held_out.overall.coverage > global_.overall.coverage
    assert held_out.truth is not None and global_.truth is not None
    assert held_out.truth.bot_recall > global_.truth.bot_recall
    # Also against a global threshold spending exactly as much on the later day.
    equal = outcome.comparison[Policy.GLOBAL_HELD_OUT_FPR].evaluation_day
    assert equal.overall.fpr == pytest.approx(held_out.overall.fpr, abs=0.002)
    assert held_out.overall.ivr > equal.overall.ivr
    assert held_out.overall.coverage > equal.overall.coverage
    assert outcome.windows == {"calibrate": ["2026-01-05"] * 2, "evaluate": ["2026-01-06"] * 2}


def test_a_budget_below_the_coverage_floors_keeps_the_last_thresholds(
    days: tuple[pd.DataFrame, pd.DataFrame], repo: Path
) -> None:
    strict = SETTINGS.model_copy(update={"fpr_budget": 0.001, "min_coverage": 0.6})
    served = {"desktop/out": 0.7}
    outcome = run(*days, strict, model_version=1, last_good=served)
    assert outcome.status is Status.INFEASIBLE_BUDGET
    assert outcome.thresholds == served and not outcome.points
    assert outcome.min_feasible_budget > 0.001
    suggested = re.search(r"at least ([0-9.]+)%", outcome.message)
    assert suggested is not None
    with pytest.raises(CalibrationError, match="no calibration record written"):
        write_record(outcome, repo, "slidr")
    # The budget the message suggests works as written, and barely: it is the smallest.
    enough = strict.model_copy(update={"fpr_budget": float(suggested[1]) / 100})
    assert run(*days, enough, model_version=1).status is Status.CALIBRATED
    assert float(suggested[1]) / 100 - outcome.min_feasible_budget < 1e-6


def test_a_slice_with_too_few_purchases_is_pooled_with_its_parent(
    days: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    small = synthetic_day(1, "2026-01-05", sizes={"app/in": 200})
    outcome = run(small, days[1], SETTINGS, model_version=4)
    assert outcome.status is Status.CALIBRATED
    assert set(outcome.thresholds) == set(SLICES) - {"app/in", "app/out"} | {"app"}
    assert any("app/in" in note and "pooled into app" in note for note in outcome.notes)
    [unit] = [sf.unit for sf in outcome.fits if sf.unit.name == "app"]
    assert unit.pooled and unit.members == ("app/in", "app/out")
    assert unit.purchasing == int(
        small.loc[small["slice"].str.startswith("app/"), "purchased"].sum()
    )
    # Pooled slices are measured with their parent's threshold, as the worker serves them.
    app_in = outcome.comparison[Policy.SLICE_LEVEL].evaluation_day.per_slice["app/in"]
    held_out = days[1][days[1]["slice"] == "app/in"]
    assert app_in.ivr == pytest.approx((held_out["score"] >= outcome.thresholds["app"]).mean())
    # The budget holds on the clicks the pooled threshold decides.
    calibration_day = outcome.comparison[Policy.SLICE_LEVEL].calibration_day
    assert calibration_day.overall.fpr <= SETTINGS.fpr_budget


def test_pooling_climbs_to_all_when_a_parent_is_too_small(
    days: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    tiny = synthetic_day(1, "2026-01-05", sizes={"app/in": 200, "app/out": 300})
    outcome = run(tiny, days[1], SETTINGS, model_version=4)
    assert list(outcome.thresholds) == ["all"]  # one global threshold, and the note says why
    assert any("pooled into all" in note for note in outcome.notes)


def test_a_solver_failure_keeps_the_last_good_thresholds(
    days: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*_: object, **__: object) -> None:
        raise cp.error.SolverError("numerical trouble")

    monkeypatch.setattr(cp.Problem, "solve", failing)
    served = {name: 0.6 for name in SLICES}
    outcome = run(*days, SETTINGS, model_version=4, last_good=served)
    assert outcome.status is Status.SOLVER_FAILED and outcome.thresholds == served
    assert "numerical trouble" in outcome.message and "keeping the last good" in outcome.message
    assert outcome.comparison[Policy.SLICE_LEVEL].thresholds == served


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="score"), "lacks score"),
        (lambda f: f.assign(slice="desktop"), "not named by device_type/logged_in"),
        (lambda f: f.assign(purchased=False), "0 purchasing clicks"),
    ],
)
def test_bad_frames_are_refused_with_the_fix(
    days: tuple[pd.DataFrame, pd.DataFrame], change: object, message: str
) -> None:
    assert callable(change)
    with pytest.raises(CalibrationError, match=message):
        run(change(days[0]), days[1], SETTINGS, model_version=4)


# --- the record the worker serves, and the report -----------------------------------------


def test_the_record_is_served_and_the_previous_one_kept(
    days: tuple[pd.DataFrame, pd.DataFrame], repo: Path
) -> None:
    small = synthetic_day(1, "2026-01-05", sizes={"app/in": 200})
    first = run(small, days[1], SETTINGS, model_version=1)
    path = write_record(first, repo, "slidr")
    record = json.loads(path.read_text())
    assert record["model_version"] == 1 and record["thresholds"] == first.thresholds
    assert record["pooled"] == {"app/in": "app", "app/out": "app"}
    assert record["slices"]["desktop/out"]["fit"]["method"] in ("quadratic", "hull")
    expected = ServingFigures.model_validate(record["expected"])  # what the monitor compares with
    assert set(expected.slices) == set(SLICES)
    assert sum(expected.score_histogram or []) == pytest.approx(1.0)
    served = load_record(repo, "slidr", 1, default_threshold=0.5)
    assert served.calibration_id == record["id"]
    assert served.slice_fields == ("device_type", "logged_in")
    assert served.threshold("app/in") == first.thresholds["app"]  # pooled: the parent's
    assert served.threshold("app/out") == first.thresholds["app"]
    assert served.threshold("desktop/out") == first.thresholds["desktop/out"]

    second = run(*days, SETTINGS, model_version=1, last_good=served.thresholds)
    write_record(second, repo, "slidr")
    assert json.loads((path.parent / PREVIOUS_FILE).read_text())["id"] == record["id"]
    assert load_record(repo, "slidr", 1, 0.5).thresholds == second.thresholds
    assert not list(path.parent.glob("*.partial"))


def test_the_report_has_json_a_plot_per_slice_and_a_table(
    days: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    outcome = run(*days, SETTINGS, model_version=4)
    paths = write_report(outcome, tmp_path / "report")
    report = json.loads((tmp_path / "report" / REPORT_FILE).read_text())
    assert report["status"] == "calibrated"
    assert set(report["comparison"]) == {p.value for p in Policy}
    assert set(report["slices"]) == set(SLICES)
    assert report["comparison"]["slice_level"]["evaluation_day"]["truth"]["bot_recall"] > 0
    pngs = sorted(p.name for p in paths if p.suffix == ".png")
    assert pngs == sorted(["curve-all.png", *(f"curve-{s.replace('/', '_')}.png" for s in SLICES)])
    assert all(p.stat().st_size > 10_000 for p in paths)
    console = Console(record=True, width=160)
    print_table(outcome, console)
    text = console.export_text()
    assert "slice-level" in text and "human FPR" in text and "mobile_web/out" in text
