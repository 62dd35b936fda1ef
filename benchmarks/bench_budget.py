"""Does the FPR budget hold on humans, on the next day, at demo volume? (issue 19)

For each simulation seed: simulate ``--days`` days at ``--clicks-per-day`` (the demo's 30,000),
compute features through the live Redis code (a private ``redis-server`` on a free port, started
and stopped here), train exactly what the daily cycle trains (``models.train.prepare`` and
``fit_and_export`` without the export), then calibrate on the held-out day and measure on the
later day against the simulator's ground truth, for two calibrations:

- ``previous``: the calibration before issue 19: slices with fewer than ``min_purchases``
  purchasing clicks pooled into their parent, the budget bound to the purchaser FPR's point;
- ``current``: the settings' defaults (shrinkage toward the parent, the budget bound to the
  estimated human FPR, calibration/human.py, at its ``budget_confidence`` upper bound).

Figures per seed: the estimated and the true human FPR at the operating point (calibration
day; and of a second calibration on the later day itself, a second test of the estimate), the
realised true human FPR on the later day against the budget, the number of slices
with their own threshold, and IVR at equal realised human FPR against the previous calibration
(its budget swept, its IVR interpolated at the current one's realised human FPR) and against
one global threshold picked on the later day at that human FPR.

    .venv/bin/python benchmarks/bench_budget.py --seeds 301 311 321 331 --json out.json

With ``--intraday`` the later day is also replayed hour by hour through the monitor's intraday
re-solve (calibration/intraday.py, the settings' ``SLIDR_INTRADAY__*`` defaults): at the start
of each hour the window of the day's earlier decisions and purchases is judged against the
current calibration's record and, when out of band, re-solved into a new record whose
thresholds decide the following hour; the figures are the later day's true human FPR and IVR
with and without it (stand-ins: purchasing clicks only, which is what the monitor joins).

Scored days are cached under ``--cache`` (one folder per seed and volume), so comparing
calibrations does not simulate and train again. Seeds 201, 211, 221 were used to choose the
methods (docs/calibration.md); report on others.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.simulated

if TYPE_CHECKING:
    from guardrails.report import Status

FRAME_COLUMNS = (
    "date", "hour", "slice", "logged_in", "score", "purchased", "rfm_human", "robotic", "label",
    "is_bot",
)  # fmt: skip
#: The previous calibration's budget swept to compare IVR at equal realised human FPR.
SWEEP = (0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08)
#: ``--guardrail``: candidates solved at these multiples of the budget, judged against it.
GUARDRAIL_CANDIDATES = (1.0, 2.0, 3.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def private_redis() -> Iterator[int]:
    """A throw-away redis-server on a free loopback port, no persistence."""
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scored_days(
    seed: int, days: int, clicks_per_day: int, cache: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The held-out (calibration) day and the later day with the network's scores."""
    folder = cache / f"seed-{seed}-{clicks_per_day}-{days}d"
    paths = folder / "holdout.parquet", folder / "later.parquet"
    if all(p.exists() for p in paths):
        return pd.read_parquet(paths[0]), pd.read_parquet(paths[1])
    from slidr.settings import get_settings
    from tests.simulated import train_on_simulation

    base = get_settings()
    with private_redis() as port:
        redis = base.redis.model_copy(
            update={"port": port, "username": None, "password": None, "cluster_nodes": 0}
        )
        outcome = train_on_simulation(
            base.model_copy(update={"redis": redis}),
            seed=seed,
            days=days,
            clicks_per_day=clicks_per_day,
            prefix="slidr-bench-budget-",
        )
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for frame, path in zip((outcome.holdout, outcome.later), paths, strict=True):
        kept = frame[[c for c in FRAME_COLUMNS if c in frame.columns]].copy()
        kept["slice"] = kept["slice"].astype(str)
        kept.to_parquet(path)
        frames.append(kept)
    return frames[0], frames[1]


@dataclass(frozen=True)
class SeedFigures:
    seed: int
    budget: float
    #: The FPR the current calibration solved at (the budget less its confidence margin).
    solved_budget: float
    #: Calibration day, at the current calibration's thresholds.
    estimated_human_fpr: float
    estimated_human_fpr_interval: tuple[float, float]
    purchaser_fpr: float
    true_human_fpr: float
    #: A second calibration, on the later day itself: its estimated and true human FPR.
    later_estimated_human_fpr: float
    later_estimated_human_fpr_interval: tuple[float, float]
    later_true_human_fpr: float
    #: Later day, true human FPR of each calibration, and its ratio to the budget.
    realised_human_fpr: float
    realised_ratio: float
    previous_realised_human_fpr: float
    slices_with_own_threshold: int
    previous_slices_with_own_threshold: int
    #: Later day IVR: current; previous at equal realised human FPR (budget swept,
    #: interpolated); one global threshold at equal realised human FPR (picked on that day).
    ivr: float
    previous_ivr_at_equal_human_fpr: float
    global_ivr_at_equal_human_fpr: float
    #: Later day with the intraday re-solve (``--intraday``): true human FPR, IVR, re-solves.
    intraday_realised_human_fpr: float | None = None
    intraday_ivr: float | None = None
    intraday_resolves: int | None = None
    #: ``--guardrail``: the model guardrail's budget check on the later day (below).
    guardrail: list[GuardrailVerdict] | None = None


@dataclass(frozen=True)
class GuardrailVerdict:
    """A candidate solved at ``solved_at`` judged on the later day against the budget: the
    ``fpr_budget`` check on the purchaser FPR and on the estimated human FPR, and the truth."""

    solved_at: float
    true_human_fpr: float
    over_on_the_truth: bool
    purchaser_fpr: float
    purchaser_verdict: Status
    human_fpr: float
    human_n: float
    human_verdict: Status


def guardrail_verdicts(calib: pd.DataFrame, later: pd.DataFrame) -> list[GuardrailVerdict]:
    """Candidates of growing harm (solved at 1-3x the budget), each judged by the model
    guardrails' budget check on the later day with either FPR, as ``models.daily`` does."""
    from calibration import Policy
    from guardrails.model import check_candidate, purchaser_fpr
    from models.daily import estimated_human_fpr
    from slidr.settings import CalibrationSettings, GuardrailSettings

    settings, guard = CalibrationSettings(), GuardrailSettings()
    bound = settings.fpr_budget + guard.fpr_budget_slack
    out = []
    for times in GUARDRAIL_CANDIDATES:
        solved = settings.model_copy(update={"fpr_budget": times * settings.fpr_budget})
        outcome = _calibrate(calib, later, solved)
        if not outcome.calibrated:
            continue
        day = outcome.comparison[Policy.SLICE_LEVEL].evaluation_day
        human = outcome.fpr_estimates["evaluation_day"]["all"]["human"]
        verdicts = []
        for fpr in (purchaser_fpr(day.overall), estimated_human_fpr(human)):
            report = check_candidate({"all": day.overall}, None, settings.fpr_budget, guard,
                                     candidate_fpr=fpr)  # fmt: skip
            (check,) = [c for c in report.checks if c.name == "fpr_budget"]
            verdicts.append(check.status)
        truth = float(day.truth.human_fpr)
        out.append(
            GuardrailVerdict(
                solved_at=solved.fpr_budget,
                true_human_fpr=truth,
                over_on_the_truth=truth > bound,
                purchaser_fpr=float(day.overall.fpr),
                purchaser_verdict=verdicts[0],
                human_fpr=human.value,
                human_n=human.n,
                human_verdict=verdicts[1],
            )
        )
    return out


def replay_intraday(outcome: Any, later: pd.DataFrame) -> tuple[npt.NDArray[np.bool_], int]:
    """The later day decided hour by hour, thresholds re-solved intraday: invalid flags and
    the number of records written. Hour h's clicks are spread evenly over the hour; the
    window is judged (and maybe re-solved) at the start of every hour, before deciding it."""
    from calibration import intraday
    from calibration.compare import invalidated
    from calibration.problem import SolveFailed
    from calibration.record import record_of
    from slidr.settings import get_settings

    # The settings' defaults, or SLIDR_INTRADAY__* from the environment.
    limits = get_settings().intraday.model_copy(update={"enabled": True})
    record = record_of(outcome, "bench")
    window = intraday.BudgetWindow(limits.window_s)
    invalid = np.zeros(len(later), dtype=bool)
    hours = later["hour"].to_numpy()
    resolves, last = 0, -math.inf
    for hour in range(24):
        now = hour * 3600.0
        data = window.data(now)
        thresholds = record["thresholds"]
        factor = intraday.diurnal_factor(record, data)
        expected = intraday.expected_fpr(record, data.slices(), factor)
        evidence = intraday.judge(data, thresholds, 0.5, expected, limits)
        leaving = intraday.out_of_band(evidence, limits)
        if leaving and now - last >= limits.min_interval_s:
            last = now
            try:
                r = intraday.resolve(
                    data, record, 0, 0.5, evidence, [str(e) for e in leaving],
                    outcome.settings, limits, (now - limits.window_s, now), factor,
                )  # fmt: skip
            except SolveFailed:
                pass
            else:
                record, resolves = intraday.intraday_record(record, r), resolves + 1
        rows = np.flatnonzero(hours == hour)
        frame = later.iloc[rows]
        invalid[rows] = invalidated(frame, record["thresholds"], 0.5)
        at = now + 3600.0 * np.arange(len(rows)) / max(len(rows), 1)
        for name, score, bought, t in zip(
            frame["slice"].astype(str), frame["score"], frame["purchased"], at, strict=True
        ):
            window.add_decision(name, float(score), float(t))
            if bought:
                window.add_stand_in(name, float(score), float(t))
    return invalid, resolves


def _calibrate(calib: pd.DataFrame, later: pd.DataFrame, settings: Any) -> Any:
    from calibration import run

    return run(calib, later, settings, model_version=0)


def _global_ivr_at(later: pd.DataFrame, human_fpr: float) -> float:
    """IVR of the one threshold that invalidates ``human_fpr`` of the later day's humans."""
    humans = np.sort(later.loc[~later["is_bot"], "score"].to_numpy())[::-1]
    k = math.floor(human_fpr * len(humans))
    if k <= 0:
        return 0.0
    threshold = humans[k - 1]
    return float((later["score"].to_numpy() >= threshold).mean())


def measure_seed(
    seed: int,
    calib: pd.DataFrame,
    later: pd.DataFrame,
    intraday: bool = False,
    guardrail: bool = False,
) -> SeedFigures:
    from calibration import Policy
    from slidr.settings import CalibrationSettings

    current = CalibrationSettings()
    previous = CalibrationSettings(
        slice_pooling="pool", fpr_target="purchaser", budget_confidence=0.5
    )
    now = _calibrate(calib, later, current)
    before = _calibrate(calib, later, previous)
    if now.calibrated and not before.calibrated:
        # Above ~100,000 clicks a day no slice is pooled, and the previous calibration's
        # coverage floor is out of reach in logged-in slices (their heuristic flags are mostly
        # humans): it would keep no thresholds. Compare with it without the floor.
        print(f"seed {seed}: previous calibration without its coverage floor: {before.message}")
        previous = previous.model_copy(update={"min_coverage": 0.0})
        before = _calibrate(calib, later, previous)
    if not (now.calibrated and before.calibrated):
        raise SystemExit(f"seed {seed}: {now.message} / {before.message}")
    mine = now.comparison[Policy.SLICE_LEVEL]
    theirs = before.comparison[Policy.SLICE_LEVEL]
    estimate = now.fpr_estimates["calibration_day"]["all"]["human"]
    realised = float(mine.evaluation_day.truth.human_fpr)
    itself = _calibrate(later, calib, current)
    if not itself.calibrated:
        raise SystemExit(f"seed {seed}, later day: {itself.message}")
    itself_estimate = itself.fpr_estimates["calibration_day"]["all"]["human"]
    sweep = []
    for budget in SWEEP:
        outcome = _calibrate(calib, later, previous.model_copy(update={"fpr_budget": budget}))
        if outcome.calibrated:
            day = outcome.comparison[Policy.SLICE_LEVEL].evaluation_day
            sweep.append((float(day.truth.human_fpr), float(day.overall.ivr)))
    sweep.sort()
    xs, ys = zip(*sweep, strict=True)
    extra: dict[str, Any] = {}
    if intraday:
        flags, resolves = replay_intraday(now, later)
        humans = ~later["is_bot"].to_numpy(dtype=bool)
        extra = {
            "intraday_realised_human_fpr": float(flags[humans].mean()),
            "intraday_ivr": float(flags.mean()),
            "intraday_resolves": resolves,
        }
    if guardrail:
        extra["guardrail"] = guardrail_verdicts(calib, later)
    return SeedFigures(
        seed=seed,
        budget=current.fpr_budget,
        solved_budget=now.solved_budget,
        estimated_human_fpr=estimate.value,
        estimated_human_fpr_interval=(estimate.low, estimate.high),
        purchaser_fpr=float(mine.calibration_day.overall.fpr),
        true_human_fpr=float(mine.calibration_day.truth.human_fpr),
        later_estimated_human_fpr=itself_estimate.value,
        later_estimated_human_fpr_interval=(itself_estimate.low, itself_estimate.high),
        later_true_human_fpr=float(
            itself.comparison[Policy.SLICE_LEVEL].calibration_day.truth.human_fpr
        ),
        realised_human_fpr=realised,
        realised_ratio=realised / current.fpr_budget,
        previous_realised_human_fpr=float(theirs.evaluation_day.truth.human_fpr),
        slices_with_own_threshold=len(now.thresholds),
        previous_slices_with_own_threshold=len(before.thresholds),
        ivr=float(mine.evaluation_day.overall.ivr),
        previous_ivr_at_equal_human_fpr=float(np.interp(realised, xs, ys)),
        global_ivr_at_equal_human_fpr=_global_ivr_at(later, realised),
        **extra,
    )


def against_targets(results: list[SeedFigures]) -> list[str]:
    """One line per target of issue 19: on how many seeds (or estimation problems) it is met."""

    def inside(estimate: float, interval: tuple[float, float], truth: float) -> tuple[bool, bool]:
        return abs(estimate / truth - 1) <= 0.25, _covers(interval, truth)

    problems = [
        inside(r.estimated_human_fpr, r.estimated_human_fpr_interval, r.true_human_fpr)
        for r in results
    ] + [
        inside(
            r.later_estimated_human_fpr,
            r.later_estimated_human_fpr_interval,
            r.later_true_human_fpr,
        )
        for r in results
    ]
    n, k = len(results), len(problems)
    gaps = [r.ivr - r.previous_ivr_at_equal_human_fpr for r in results]
    lines = [
        f"estimate within 25 % of the true human FPR: {sum(p[0] for p in problems)} of {k} "
        f"(the truth inside the 95 % interval: {sum(p[1] for p in problems)} of {k})",
        f"next day at most 1.25x the budget: {sum(r.realised_ratio <= 1.25 for r in results)} "
        f"of {n}",
    ]
    if all(r.intraday_realised_human_fpr is not None for r in results):
        held = sum((r.intraday_realised_human_fpr or 0.0) <= 1.25 * r.budget for r in results)
        lines.append(f"  with the intraday re-solve: {held} of {n}")
    lines += [
        f"at least 4 slices with their own thresholds: "
        f"{sum(r.slices_with_own_threshold >= 4 for r in results)} of {n}",
        f"IVR at equal human FPR no lower than the previous calibration's: "
        f"{sum(g >= 0 for g in gaps)} of {n} "
        f"({100 * min(gaps):+.2f} to {100 * max(gaps):+.2f} points)",
    ]
    return lines


def _covers(interval: tuple[float, float], truth: float) -> bool:
    return interval[0] <= truth <= interval[1]


def _versus(estimate: float, interval: tuple[float, float], truth: float) -> str:
    inside = "in" if _covers(interval, truth) else "out"
    return f"{estimate:.2%} vs {truth:.2%} ({estimate / truth - 1:+.0%}, {inside})"


def print_guardrail(results: list[SeedFigures]) -> None:
    """The budget check's verdicts per candidate, then how often each FPR refused the
    candidates over the budget (plus slack) on the truth, and those within it."""
    from guardrails.report import Status

    print(
        "\n| seed | solved at | true human FPR, later day | purchaser FPR: verdict "
        "| human FPR (est., effective n): verdict |"
    )
    print("|" + "---|" * 5)
    verdicts = [(r.seed, v) for r in results for v in r.guardrail or []]
    for seed, v in verdicts:
        mark = " (over)" if v.over_on_the_truth else ""
        print(
            f"| {seed} | {v.solved_at:.0%} | {v.true_human_fpr:.2%}{mark} | "
            f"{v.purchaser_fpr:.2%}: {v.purchaser_verdict} | "
            f"{v.human_fpr:.2%} ({v.human_n:,.0f}): {v.human_verdict} |"
        )
    for over, label in ((True, "over the budget plus slack"), (False, "within it")):
        group = [v for _, v in verdicts if v.over_on_the_truth is over]
        refused = [
            sum(v.purchaser_verdict is Status.FAILED for v in group),
            sum(v.human_verdict is Status.FAILED for v in group),
        ]
        print(
            f"candidates {label} on the truth: {len(group)}; refused on the purchaser FPR "
            f"{refused[0]}, on the human estimate {refused[1]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[301, 311, 321, 331])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--clicks-per-day", type=int, default=30_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "slidr-budget")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures per seed here")
    parser.add_argument(
        "--intraday", action="store_true", help="also replay the later day with intraday re-solves"
    )
    parser.add_argument(
        "--guardrail",
        action="store_true",
        help="also judge candidates solved at 1-3x the budget with the model guardrails' budget "
        "check, on the purchaser FPR and on the human estimate, against the truth",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    results = []
    for seed in args.seeds:
        started = time.perf_counter()
        calib, later = scored_days(seed, args.days, args.clicks_per_day, args.cache)
        print(f"seed {seed}: scored days ready ({time.perf_counter() - started:.0f} s)")
        if not args.prepare_only:
            results.append(measure_seed(seed, calib, later, args.intraday, args.guardrail))
    if args.prepare_only:
        return
    header = (
        "| seed | solved at | est. human FPR [95 %] | purchaser FPR | true human FPR | next day: "
        "true human FPR (x budget) | previous | own thresholds (previous) | IVR next day | "
        "previous at equal human FPR | global at equal human FPR |"
    )
    print(header)
    print("|" + "---|" * 11)
    for r in results:
        low, high = r.estimated_human_fpr_interval
        print(
            f"| {r.seed} | {r.solved_budget:.2%} | {r.estimated_human_fpr:.2%} "
            f"[{low:.2%}, {high:.2%}] | "
            f"{r.purchaser_fpr:.2%} | {r.true_human_fpr:.2%} | {r.realised_human_fpr:.2%} "
            f"({r.realised_ratio:.2f}x) | {r.previous_realised_human_fpr:.2%} | "
            f"{r.slices_with_own_threshold} ({r.previous_slices_with_own_threshold}) | "
            f"{r.ivr:.2%} | {r.previous_ivr_at_equal_human_fpr:.2%} | "
            f"{r.global_ivr_at_equal_human_fpr:.2%} |"
        )
    print(
        "\n| seed | est. human FPR vs true (error, truth in the 95 % interval) "
        "| later day calibrated on itself: same |"
    )
    print("|" + "---|" * 3)
    for r in results:
        print(
            f"| {r.seed} | "
            + _versus(r.estimated_human_fpr, r.estimated_human_fpr_interval, r.true_human_fpr)
            + " | "
            + _versus(
                r.later_estimated_human_fpr,
                r.later_estimated_human_fpr_interval,
                r.later_true_human_fpr,
            )
            + " |"
        )
    if args.intraday:
        print(
            "\n| seed | next day: true human FPR (x budget) | with intraday re-solve (x budget) "
            "| IVR next day | with intraday | re-solves |"
        )
        print("|" + "---|" * 6)
        for r in results:
            assert r.intraday_realised_human_fpr is not None and r.intraday_ivr is not None
            print(
                f"| {r.seed} | {r.realised_human_fpr:.2%} ({r.realised_ratio:.2f}x) | "
                f"{r.intraday_realised_human_fpr:.2%} "
                f"({r.intraday_realised_human_fpr / r.budget:.2f}x) | {r.ivr:.2%} | "
                f"{r.intraday_ivr:.2%} | {r.intraday_resolves} |"
            )
    if args.guardrail:
        print_guardrail(results)
    print()
    for line in against_targets(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
