"""`slidr retrain --day D`: the daily cycle, each step behind its guardrail.

archive -> labelled frame -> data guardrails -> train (network + baselines, compared with the
serving version on the same held-out day) -> export as a candidate -> calibrate -> model
guardrails on the later day -> load in Triton -> promote. A step that fails or refuses stops
the cycle; the serving version keeps serving, and ``cycle.json`` in the run directory says
which step stopped it and with which numbers, and ``report.html`` shows the whole run on one
page (models/cycle_page.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import calibration
from calibration.calibrate import fpr_estimates
from calibration.compare import PolicyRates, measure
from calibration.human import Estimate
from calibration.intraday import calibrated_thresholds, judged_until
from calibration.record import calibration_path, write_record
from calibration.report import fpr_lines
from calibration.report import write_report as write_calibration_report
from guardrails.data import check_training_data
from guardrails.model import OVERALL, BudgetFpr, check_candidate, purchaser_fpr
from guardrails.report import GuardrailReport, Status
from models.cycle_page import CycleParts, write_page
from models.report import PLOTS
from models.scoring import feature_rows, version_scorer
from models.train import Prepared, TrainOutcome, fit_and_export, prepare
from slidr.errors import SlidrError
from slidr.metrics import Rates
from slidr.model_record import ModelRecord, load_record, read_optional
from slidr.registry import Registry, VersionLoader
from slidr.settings import Settings

log = logging.getLogger(__name__)
#: metadata.json "kind" of the velocity heuristic installed by models/day_zero.py.
DAY_ZERO_KIND = "velocity_heuristic"
#: Steps whose refusal leaves good data and a trained candidate: the serving version is
#: recalibrated on the candidate's held-out days instead.
RECALIBRATE_AFTER = ("calibrate", "model guardrails")


def scored_by(settings: Settings, version: int, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``score`` a version gives it, as Triton serves that version."""
    t = settings.triton
    scores = version_scorer(t.model_repository, t.model_name, version)(feature_rows(frame))
    return frame.assign(score=scores)


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class CycleResult:
    day: str
    serving_before: int
    candidate: int | None = None
    promoted: bool = False
    stopped_at: str | None = None
    reason: str | None = None
    steps: list[Step] = field(default_factory=list)
    #: Figures on the later held-out day at the served thresholds: candidate and serving.
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The run's HTML page, once written.
    page: str | None = None
    #: A refused candidate's cycle recalibrated the serving version instead (its record id).
    recalibrated: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CycleStopped(SlidrError):
    """A step refused or failed; the serving version is unchanged."""


def by_slice(measured: PolicyRates) -> dict[str, Rates]:
    """What the model guardrails read: overall figures under "all", then each slice's."""
    return {OVERALL: measured.overall, **measured.per_slice}


def headline(measured: PolicyRates, human: Estimate | None = None) -> dict[str, Any]:
    """The overall figures, the estimated human FPR with its 95 % interval when there is one,
    then the ground truth's where the day has it."""
    figures: dict[str, Any] = measured.overall.as_dict()
    if human is not None:
        figures["human_fpr_est"] = human.value
        figures["human_fpr_est_ci"] = [human.low, human.high]
    if measured.truth is not None:
        figures.update(measured.truth.as_dict())
    return figures


def estimated_human_fpr(estimate: Estimate) -> BudgetFpr:
    """The estimated human FPR as the model guardrails judge it: on its effective size."""
    label = f"human FPR (est.) on {estimate.n:,.0f} effective stand-ins"
    return BudgetFpr(estimate.value, estimate.n, label)


@dataclass(frozen=True)
class Recalibrated:
    """What ``recalibrate_serving`` did: its step's detail, the record written (None when
    nothing was), and the serving version's figures on the later day at the new thresholds."""

    detail: str
    record_id: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Served:
    """One version on the later day at its own calibrated thresholds, as a worker serves it."""

    record: ModelRecord
    measured: PolicyRates
    #: The estimated human FPR overall, when the budget binds it (``calibration.fpr_target``).
    human: Estimate | None
    #: At the daily calibration's thresholds, when it serves an intraday re-solve's.
    calibrated: PolicyRates | None = None

    @property
    def bound(self) -> BudgetFpr:
        """The overall FPR the budget binds, as the model guardrails judge it."""
        if self.human is None:
            return purchaser_fpr(self.measured.overall)
        return estimated_human_fpr(self.human)


class DailyCycle:
    def __init__(
        self,
        settings: Settings,
        run_dir: Path,
        loader: VersionLoader | None,
        say: Callable[[str], None] = log.info,
    ) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.registry = Registry(settings, loader)
        self.say = say

    def _served(self, version: int, later: pd.DataFrame) -> Served:
        t = self.settings.triton
        record = load_record(
            t.model_repository, t.model_name, version, self.settings.worker.global_threshold
        )
        scored = scored_by(self.settings, version, later)
        measured, human = self._measured(scored, record.thresholds, record.default_threshold)
        daily = calibrated_thresholds(self._calibration(version))
        calibrated = None if daily is None else measure(scored, daily, record.default_threshold)
        return Served(record, measured, human, calibrated)

    def _calibration(self, version: int) -> dict[str, Any]:
        """A version's calibration record as written (empty when it has none)."""
        t = self.settings.triton
        return read_optional(calibration_path(t.model_repository, t.model_name, version))

    def _measured(
        self, scored: pd.DataFrame, thresholds: dict[str, float], default: float
    ) -> tuple[PolicyRates, Estimate | None]:
        """A version's figures at ``thresholds``; with its estimated human FPR when the budget
        binds it (``calibration.fpr_target``)."""
        measured = measure(scored, thresholds, default)
        s = self.settings.calibration
        if s.fpr_target == "purchaser":
            return measured, None
        # Each model's stand-in weights come from its own scores (the low-score end per cell).
        both = fpr_estimates(scored, thresholds, default, s)
        return measured, both[OVERALL]["human"]

    def judge(
        self, candidate: int, serving: int, later: pd.DataFrame
    ) -> tuple[GuardrailReport, dict[str, dict[str, Any]]]:
        """Model guardrails: ``candidate`` and ``serving``, each at its own calibrated
        thresholds, on the later held-out day; also their headline figures for the log."""
        mine = self._served(candidate, later)
        theirs = self._served(serving, later)
        figures = {
            f"candidate v{candidate}": headline(mine.measured, mine.human),
            f"serving v{serving}": headline(theirs.measured, theirs.human),
        }
        if theirs.calibrated is not None:
            # It serves an intraday re-solve's thresholds; the change limits read both.
            figures[f"serving v{serving} as calibrated"] = headline(theirs.calibrated)
        # Change limits guard a trained model against a drifting successor; the day-zero
        # heuristic is a placeholder every first network is meant to move far from.
        day_zero = theirs.record.kind == DAY_ZERO_KIND
        if day_zero:
            self.say(f"serving v{serving} is the day-zero heuristic: change limits skipped")
        report = check_candidate(
            by_slice(mine.measured),
            None if day_zero else by_slice(theirs.measured),
            self.settings.calibration.fpr_budget,
            self.settings.guardrails,
            candidate_fpr=mine.bound,
            serving_fpr=theirs.bound,
            serving_calibrated=None if theirs.calibrated is None else by_slice(theirs.calibrated),
        )
        return report, figures

    def recalibrate_serving(
        self, serving: int, holdout: pd.DataFrame, later: pd.DataFrame, parts: CycleParts
    ) -> Recalibrated:
        """The serving version on the candidate's held-out days: calibrated on ``holdout``,
        judged on ``later`` by the absolute checks and the budget, written when it passes.
        A refused candidate must not leave the serving version on thresholds calibrated days
        ago, or tightened intraday since (calibration/intraday.py): recalibration runs daily."""
        t = self.settings.triton
        record = load_record(
            t.model_repository, t.model_name, serving, self.settings.worker.global_threshold
        )
        if record.kind == DAY_ZERO_KIND:
            return Recalibrated(f"serving v{serving} is the day-zero heuristic: kept as it is")
        # Fresher evidence wins: a re-solve on clicks newer than these days is kept until a
        # daily cycle's later day covers them.
        resolved = judged_until(self._calibration(serving))
        newest = pd.Timestamp(later["event_time"].max())
        if resolved is not None and resolved > newest:
            return Recalibrated(
                f"serving v{serving} was re-solved intraday on clicks until "
                f"{resolved:%Y-%m-%d %H:%M}Z, newer than these days: kept as it is"
            )
        later = scored_by(self.settings, serving, later)
        calibrated = calibration.run(
            scored_by(self.settings, serving, holdout),
            later,
            self.settings.calibration,
            model_version=serving,
            default_threshold=record.default_threshold,
            last_good=record.thresholds,
        )
        write_calibration_report(calibrated, self.run_dir / "calibration-serving")
        if not calibrated.calibrated:
            raise CycleStopped(f"calibration of v{serving}: {calibrated.message}")
        measured, human = self._measured(later, calibrated.thresholds, record.default_threshold)
        checked = check_candidate(
            by_slice(measured),
            None,
            self.settings.calibration.fpr_budget,
            self.settings.guardrails,
            candidate_fpr=None if human is None else estimated_human_fpr(human),
        )
        subject = f"serving v{serving} recalibrated"
        self._guard(parts, "serving guardrails", GuardrailReport(subject, checked.checks))
        written = read_optional(write_record(calibrated, t.model_repository, t.model_name))
        thresholds = ", ".join(f"{n} {v:.4f}" for n, v in sorted(calibrated.thresholds.items()))
        return Recalibrated(
            f"serving v{serving} recalibrated: {thresholds}",
            str(written.get("id")),
            headline(measured, human),
        )

    def _guard(self, parts: CycleParts, step: str, report: GuardrailReport) -> None:
        json_path, _ = report.save(self.run_dir, step.replace(" ", "-"))
        parts.guardrails.append(report)
        if report.refused:
            failed = "; ".join(c.summary() for c in report.refusing)
            raise CycleStopped(f"{step} refused: {failed} (details: {json_path})")
        unsure = [c for c in report.failed if c.status is Status.UNSURE]
        for check in unsure:
            self.say(f"{step}: unsure, not refused: {check.summary()} ({check.uncertainty()})")
        self.say(
            f"{step}: {len(report.checks) - len(unsure)} of {len(report.checks)} checks passed"
        )

    def run(self, archive: Path, day: str) -> CycleResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        serving = self.registry.serving().version
        result = CycleResult(day=day, serving_before=serving)
        parts = CycleParts()
        steps: list[tuple[str, Callable[[], str]]] = []
        state: dict[str, Any] = {}

        def load() -> str:
            state["prepared"] = prepare(archive, self.settings, self.say, until=day)
            return f"{state['prepared'].labels.labelled:,} labelled clicks"

        def data_guardrails() -> str:
            prepared: Prepared = state["prepared"]
            days = sorted(prepared.frame["date"].unique())
            window = [d for d in days if d <= day][-(self.settings.guardrails.trailing_days + 1) :]
            frame = prepared.frame[prepared.frame["date"].isin(window)]
            report = check_training_data(frame, day, self.settings.guardrails, self.run_dir)
            self._guard(parts, "data guardrails", report)
            return f"days {window[0]} .. {window[-1]}"

        def train() -> str:
            t = self.settings.triton
            current = version_scorer(t.model_repository, t.model_name, serving)
            outcome = fit_and_export(
                state["prepared"],
                self.settings,
                self.run_dir / "train",
                say=self.say,
                compare={f"serving v{serving}": current},
            )
            assert outcome.version is not None
            state["outcome"] = outcome
            parts.evaluation = outcome.evaluation
            parts.plots += [outcome.report_dir / name for name in PLOTS]
            result.candidate = outcome.version
            self.registry.register(
                outcome.version, {"run": str(self.run_dir), "day": day, "cycle": "daily"}
            )
            return f"candidate version {outcome.version}"

        def calibrate() -> str:
            outcome = state["outcome"]
            t = self.settings.triton
            default = self.settings.worker.global_threshold
            last = load_record(
                t.model_repository, t.model_name, outcome.version, default
            ).thresholds
            calibrated = calibration.run(
                outcome.holdout,
                outcome.later,
                self.settings.calibration,
                model_version=outcome.version,
                last_good=last,
            )
            written = write_calibration_report(calibrated, self.run_dir / "calibration")
            parts.calibration = calibrated
            if calibrated.thresholds:
                self.say(
                    "thresholds: "
                    + ", ".join(f"{n} {t:.4f}" for n, t in sorted(calibrated.thresholds.items()))
                )
            for line in fpr_lines(calibrated):
                self.say(line)
            parts.plots += [path for path in written if path.suffix == ".png"]
            if not calibrated.calibrated:
                raise CycleStopped(f"calibration: {calibrated.message}")
            write_record(calibrated, t.model_repository, t.model_name)
            return calibrated.message

        def model_guardrails() -> str:
            outcome = state["outcome"]
            report, result.figures = self.judge(outcome.version, serving, outcome.later)
            self._guard(parts, "model guardrails", report)
            return "within bounds"

        def promote() -> str:
            version = state["outcome"].version
            self.registry.promote(version, why=f"daily cycle for {day}")
            result.promoted = True
            deleted = self.registry.enforce_retention()
            kept = self.registry.sync_triton()
            return f"serving version {version}; loaded {sorted(kept)}; deleted {deleted or 'none'}"

        steps = [
            ("load", load),
            ("data guardrails", data_guardrails),
            ("train", train),
            ("calibrate", calibrate),
            ("model guardrails", model_guardrails),
            ("promote", promote),
        ]
        for name, action in steps:
            started = time.perf_counter()
            try:
                detail = action()
            except Exception as exc:
                # Refused or crashed, the candidate must not linger as promotable.
                result.steps.append(Step(name, False, time.perf_counter() - started, str(exc)))
                result.stopped_at, result.reason = name, str(exc)
                if result.candidate is not None:
                    self.registry.refuse(result.candidate, f"{name}: {exc}", self.run_dir)
                self.say(f"step {name!r} stopped the cycle: {exc}; version {serving} keeps serving")
                if not isinstance(exc, SlidrError):
                    self._save(result, parts)
                    raise
                break
            seconds = time.perf_counter() - started
            result.steps.append(Step(name, True, seconds, detail))
            self.say(f"step {name!r}: {detail} ({seconds:.1f} s)")
        if result.stopped_at in RECALIBRATE_AFTER:
            self._recalibrate(serving, state["outcome"], result, parts)
        self._save(result, parts)
        return result

    def _recalibrate(
        self, serving: int, outcome: TrainOutcome, result: CycleResult, parts: CycleParts
    ) -> None:
        name, started = "recalibrate serving", time.perf_counter()
        try:
            done = self.recalibrate_serving(serving, outcome.holdout, outcome.later, parts)
        except SlidrError as exc:
            result.steps.append(Step(name, False, time.perf_counter() - started, str(exc)))
            self.say(f"step {name!r}: {exc}; version {serving} keeps its thresholds")
            return
        except Exception:
            self._save(result, parts)
            raise
        seconds = time.perf_counter() - started
        result.steps.append(Step(name, True, seconds, done.detail))
        result.recalibrated = done.record_id
        if done.figures:
            result.figures[f"serving v{serving} recalibrated"] = done.figures
        self.say(f"step {name!r}: {done.detail} ({seconds:.1f} s)")

    def _save(self, result: CycleResult, parts: CycleParts) -> None:
        try:
            result.page = str(write_page(result, parts, self.run_dir))
        except Exception:
            # The page only shows what the JSON files hold; it never decides a cycle's outcome.
            log.exception("the cycle's HTML page could not be written")
        (self.run_dir / "cycle.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
