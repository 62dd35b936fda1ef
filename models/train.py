"""`slidr train`: archive -> weak labels -> weights -> network and baselines -> report -> export.

The labelled time is split in time order, never by shuffled rows: by whole days when the
archive has enough of them (:func:`plan_days`), else by fractions of the labelled span
(:func:`plan_span`). The network and the baselines are fitted on the same rows with the same
weights and compared on the same held-out time; the network is then exported as a new Triton
version with its metadata.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models import baselines
from models.baselines import Scorer
from models.dataset import DatasetError, LabelReport, complete_days, load_labelled
from models.evaluate import DEFAULT_FPR_POINTS, Evaluation, evaluate
from models.export import export_version
from models.featurize import featurize_dataset_sync
from models.network import Split, TrainedNetwork, predict, train_network
from models.report import HEADLINE_FPR, write_report
from models.scoring import feature_rows
from models.weights import WeightReport, sample_weights
from slidr.archive import DECISIONS, FEATURES_DATASET, has_dataset
from slidr.features import CATEGORICAL_COLUMNS, FEATURES, IDENTIFYING_COLUMNS
from slidr.metrics import curve
from slidr.settings import LearnSettings, Settings

log = logging.getLogger(__name__)

NETWORK = "network"
#: The day split: fit on the days before the last three (early stopping, report, later check).
MIN_DAYS = 4
#: The span split: the fit part holds at least a whole day, so every hour of day is trained on
#: (the sample weights balance hour-of-day cells), and every other part at least an hour.
MIN_FIT_H = 24
MIN_PART_H = 1
_HOUR = pd.Timedelta(hours=1)
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """A stretch of time [start, end) and how people call it (a day, or a range of hours)."""

    start: pd.Timestamp
    end: pd.Timestamp
    label: str

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        t = frame["event_time"]
        return frame[(t >= self.start) & (t < self.end)].reset_index(drop=True)

    def as_dict(self) -> dict[str, str]:
        return {"label": self.label, "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class TimePlan:
    """fit: training rows; stop: early stopping; holdout: the report (and calibration);
    later: the time after it, kept unseen for checking calibration. In time order, disjoint."""

    mode: str
    fit: Window
    stop: Window
    holdout: Window
    later: Window

    def parts(self) -> dict[str, Window]:
        return {"fit": self.fit, "stop": self.stop, "holdout": self.holdout, "later": self.later}

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **{name: w.as_dict() for name, w in self.parts().items()}}

    def describe(self) -> str:
        what = "days" if self.mode == "days" else "time"
        return (
            f"{what}: fit {self.fit.label}; early stopping {self.stop.label}; "
            f"held out {self.holdout.label}; later {self.later.label}"
        )


def _day(date: str) -> Window:
    start = pd.Timestamp(date, tz="UTC")
    return Window(start, start + _DAY, date)


def plan_days(days: Sequence[str]) -> TimePlan:
    """Whole days: fit on all but the last three, then one day each for stop, report, later."""
    if len(days) < MIN_DAYS:
        raise DatasetError(
            f"a split by days needs at least {MIN_DAYS} complete labelled days (fit, early "
            f"stopping, held-out, later held-out); the archive has {len(days)}: "
            f"{', '.join(days) or '-'}. Archive more days, simulate them with `slidr simulate "
            "--days 6`, or split by time (SLIDR_LEARN__SPLIT=span)"
        )
    fit = Window(_day(days[0]).start, _day(days[-3]).start, ", ".join(days[:-3]))
    return TimePlan("days", fit, _day(days[-3]), _day(days[-2]), _day(days[-1]))


def _span_edges(hours: int, fractions: Sequence[float]) -> list[int]:
    return [round(float(hours * share)) for share in np.cumsum([0.0, *fractions])]


def _span_fits(hours: int, fractions: Sequence[float]) -> bool:
    edges = _span_edges(hours, fractions)
    sizes = [b - a for a, b in itertools.pairwise(edges)]
    return sizes[0] >= MIN_FIT_H and min(sizes[1:]) >= MIN_PART_H


def min_span_h(fractions: Sequence[float]) -> int:
    """The shortest labelled span, in whole hours, that ``fractions`` can split."""
    hours = MIN_FIT_H
    while not all(_span_fits(h, fractions) for h in range(hours, hours + 48)):
        hours += 1
    return hours


def _hours_label(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} ({(end - start) / _HOUR:g} h)"


def plan_span(first: pd.Timestamp, last: pd.Timestamp, fractions: Sequence[float]) -> TimePlan:
    """The labelled span from ``first`` to ``last`` (whole hours) cut into four parts in time
    order by ``fractions`` (fit, early stopping, report, later check)."""
    start, end = first.floor("h"), last.floor("h") + _HOUR
    hours = int((end - start) / _HOUR)
    if not _span_fits(hours, fractions):
        shares = "/".join(f"{share:g}" for share in fractions)
        raise DatasetError(
            f"a split by time needs at least {min_span_h(fractions)} h of labelled clicks "
            f"(shares {shares} of fit, early stopping, held-out, later; the fit part must hold "
            f"{MIN_FIT_H} h so every hour of day is trained on, every other part "
            f"{MIN_PART_H} h); the labelled clicks span {hours} h, "
            f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}"
        )
    cuts = [start + edge * _HOUR for edge in _span_edges(hours, fractions)]
    parts = [Window(a, b, _hours_label(a, b)) for a, b in itertools.pairwise(cuts)]
    return TimePlan("span", *parts)


def plan_split(
    frame: pd.DataFrame, labels: LabelReport, learn: LearnSettings, until: str | None = None
) -> TimePlan:
    """Days when there are enough complete labelled days (or ``learn.split`` says so), else
    fractions of the labelled span; ``until`` (the daily cycle) always splits by days."""
    days = complete_days(frame, labels)
    if until is not None:
        if until not in days:
            raise DatasetError(
                f"{until} is not a complete labelled day of the archive (complete: "
                f"{', '.join(days) or 'none'}); its clicks need "
                f"{learn.attribution_window_h:g} h of purchases after the day ends"
            )
        return plan_days([d for d in days if d <= until])
    if learn.split == "days" or (learn.split == "auto" and len(days) >= MIN_DAYS):
        return plan_days(days)
    if frame.empty:
        raise DatasetError("no labelled clicks to split")
    times = frame["event_time"]
    return plan_span(times.min(), times.max(), learn.span_fractions)


@dataclass
class TrainOutcome:
    plan: TimePlan
    labels: LabelReport
    weights: WeightReport
    network: TrainedNetwork
    evaluation: Evaluation
    seconds: dict[str, float]
    report_dir: Path
    #: The held-out and later parts with the network's ``score``, for calibration.
    holdout: pd.DataFrame
    later: pd.DataFrame
    version: int | None = None
    version_dir: Path | None = None


def ensure_features(root: Path, settings: Settings, say: Callable[[str], None]) -> None:
    """Clicks never scored by a worker (e.g. simulated Parquet) get features offline."""
    if has_dataset(root, DECISIONS) or has_dataset(root, FEATURES_DATASET):
        return
    say(f"no served features in {root}: computing them through the live feature code")
    started = time.perf_counter()
    n = featurize_dataset_sync(root, settings.redis)
    say(f"features for {n:,} clicks in {time.perf_counter() - started:.1f} s")


def weighted_split(frame: pd.DataFrame, cap: float) -> tuple[Split, WeightReport]:
    weights, report = sample_weights(frame, cap)
    split = Split(
        x=feature_rows(frame),
        y=frame["label"].to_numpy(dtype=np.float32),
        w=weights.astype(np.float32),
    )
    return split, report


def data_hash(frame: pd.DataFrame) -> str:
    """Digest of exactly the rows a model was fitted on (ids, vectors, labels)."""
    ordered = frame.sort_values("click_id", kind="stable")
    digest = hashlib.sha256()
    digest.update("\n".join(ordered["click_id"]).encode())
    digest.update(feature_rows(ordered).tobytes())
    digest.update(ordered["label"].to_numpy(dtype=np.int8).tobytes())
    return digest.hexdigest()[:16]


def initial_calibration(
    frame: pd.DataFrame, scores: np.ndarray[Any, Any], budget: float
) -> dict[str, Any]:
    """A safe first record: one global threshold at the FPR budget on the held-out day.

    An uncalibrated network must never be served at a fixed 0.5: its scores are probabilities
    of the weak label, most of which is "non-human". `slidr calibrate` replaces this record.
    """
    c = curve(scores, frame["purchased"].to_numpy(), frame["robotic"].to_numpy())
    threshold = float(c.thresholds[max(c.at_fpr(budget), 1)])
    invalid = scores >= threshold
    groups = frame.groupby("slice", observed=True).indices
    return {
        "id": f"global-at-budget-{budget:g}",
        "method": "global threshold at the FPR budget on the held-out day",
        "thresholds": {str(name): threshold for name in groups},
        "budget": budget,
        "expected": {
            "ivr": float(invalid.mean()),
            "slices": {str(name): float(invalid[idx].mean()) for name, idx in groups.items()},
        },
    }


@dataclass(frozen=True)
class Prepared:
    """The labelled frame and how its time is split."""

    frame: pd.DataFrame
    labels: LabelReport
    plan: TimePlan

    def rows(self, window: Window) -> pd.DataFrame:
        return window.rows(self.frame)


def prepare(
    root: Path, settings: Settings, say: Callable[[str], None], until: str | None = None
) -> Prepared:
    """Features (if missing), weak labels and the time split; ``until`` is the last day used."""
    learn = settings.learn
    ensure_features(root, settings, say)
    frame, labels = load_labelled(root, learn, slice_fields=settings.calibration.slice_fields)
    waiting = (
        f"{labels.not_yet_labelled:,} younger than the attribution window"
        if labels.horizon_h is not None
        else f"labels final ({labels.label_source}), none waits"
    )
    say(
        f"labels: {labels.labelled:,} of {labels.clicks:,} clicks labelled "
        f"({labels.coverage:.1%}); {labels.human_by_purchase:,} human by purchase, "
        f"{labels.human_by_rfm:,} by RFM, {labels.non_human:,} non-human; {waiting}"
    )
    plan = plan_split(frame, labels, learn, until)
    say(plan.describe())
    for name, window in plan.parts().items():
        if window.rows(frame).empty:
            raise DatasetError(f"the {name} part of the split, {window.label}, has no clicks")
    return Prepared(frame, labels, plan)


def train(
    root: Path,
    settings: Settings,
    report_dir: Path,
    *,
    export: bool = True,
    say: Callable[[str], None] = log.info,
) -> TrainOutcome:
    return fit_and_export(
        prepare(root, settings, say), settings, report_dir, export=export, say=say
    )


def categorical_inputs(learn: LearnSettings, labels: LabelReport) -> tuple[int, ...]:
    """The categorical id columns every model reads (the same for all: a fair comparison).

    With ``identifying_ids`` "auto", the ids that name a user are left out when some human
    labels come from the customer's RFM score: a label given per customer is a fact about the
    user, and with the user's IP network and exact user agent as inputs the models learn which
    users are high-RFM customers rather than what humans do. Other logged-in humans then score
    as bots, and the high-RFM clicks, which stand in for humans in calibration, no longer
    represent them (docs/learning.md).
    """
    leave_out = learn.identifying_ids == "never" or (
        learn.identifying_ids == "auto" and labels.human_by_rfm > 0
    )
    dropped = set(IDENTIFYING_COLUMNS) if leave_out else set()
    return tuple(c for c in CATEGORICAL_COLUMNS if c not in dropped)


def embedding_settings(learn: LearnSettings, inputs: Sequence[int]) -> LearnSettings:
    """``learn`` with its embeddings narrowed to the ``inputs`` ids."""
    if learn.embeddings is False:
        return learn
    every = {FEATURES[c] for c in CATEGORICAL_COLUMNS}
    wanted = every if learn.embeddings is True else set(learn.embeddings)
    return learn.model_copy(
        update={"embeddings": tuple(FEATURES[c] for c in inputs if FEATURES[c] in wanted)}
    )


def fit_and_export(
    prepared: Prepared,
    settings: Settings,
    report_dir: Path,
    *,
    export: bool = True,
    say: Callable[[str], None] = log.info,
    compare: Mapping[str, Scorer] | None = None,
) -> TrainOutcome:
    """Fit the network and the baselines, report them on the held-out day, export the network.

    ``compare``: more scorers to report beside them (e.g. the serving version).
    """
    learn, plan = settings.learn, prepared.plan
    fit_rows = prepared.rows(plan.fit)
    fit, weight_report = weighted_split(fit_rows, learn.weight_cap)
    stop, _ = weighted_split(prepared.rows(plan.stop), learn.weight_cap)
    say(
        f"weights: {weight_report.cells_filled} cells filled, {weight_report.cells_empty} empty, "
        f"{weight_report.capped_rows} rows capped at {weight_report.cap:g}x the mean"
    )
    seconds: dict[str, float] = {}

    def on_epoch(epoch: int, train_loss: float, holdout_loss: float) -> None:
        say(f"epoch {epoch}: train loss {train_loss:.4f}, holdout loss {holdout_loss:.4f}")

    inputs = categorical_inputs(learn, prepared.labels)
    if len(inputs) < len(CATEGORICAL_COLUMNS):
        say(
            "ids that name a user (IP network, user agent) left out of every model: some human "
            "labels come from customers' RFM scores (learn.identifying_ids)"
        )
    network = train_network(fit, stop, embedding_settings(learn, inputs), on_epoch)
    seconds[NETWORK] = network.seconds
    say(f"network: {network.seconds:.1f} s, best epoch {network.best_epoch} of {network.epochs}")
    started = time.perf_counter()
    logreg = baselines.logistic_regression(fit, learn.seed, categorical=inputs)
    seconds["logistic_regression"] = time.perf_counter() - started
    started = time.perf_counter()
    trees = baselines.boosted_trees(fit, learn.seed, categorical=inputs)
    seconds["boosted_trees"] = time.perf_counter() - started
    say(", ".join(f"{name} {s:.1f} s" for name, s in seconds.items() if name != NETWORK))

    held = prepared.rows(plan.holdout)
    x = feature_rows(held)
    scores = {
        NETWORK: predict(network.module, x),
        "logistic_regression": logreg(x),
        "velocity_heuristic": baselines.velocity_heuristic(x),
        "boosted_trees": trees(x),
    }
    for name, scorer in (compare or {}).items():
        scores[name] = scorer(x)
    evaluation = evaluate(held, scores, fpr_points=DEFAULT_FPR_POINTS, coverage_k=learn.coverage_k)
    report_dir.mkdir(parents=True, exist_ok=True)
    context = {
        "split": plan.as_dict(),
        "rows": {"fit": len(fit.y), "stop": len(stop.y), "holdout": len(held)},
        "label_horizon_h": prepared.labels.horizon_h,
        "label_source": prepared.labels.label_source,
    }
    write_report(evaluation, report_dir, headline_fpr=HEADLINE_FPR, context=context)
    later = prepared.rows(plan.later)
    outcome = TrainOutcome(
        plan=plan,
        labels=prepared.labels,
        weights=weight_report,
        network=network,
        evaluation=evaluation,
        seconds=seconds,
        report_dir=report_dir,
        holdout=held.assign(score=scores[NETWORK]),
        later=later.assign(score=predict(network.module, feature_rows(later))),
    )
    if export:
        calibration = initial_calibration(held, scores[NETWORK], settings.calibration.fpr_budget)
        metadata = {
            "trained_at": datetime.now(UTC).isoformat(),
            "seed": learn.seed,
            "training_window": plan.as_dict(),
            "data_hash": data_hash(fit_rows),
            "rows": {"fit": len(fit.y), "stop": len(stop.y), "holdout": len(held)},
            "labels": prepared.labels.as_dict(),
            "weights": weight_report.as_dict(),
            "learn": learn.model_dump(mode="json"),
            "epochs": {"run": network.epochs, "best": network.best_epoch},
            "metrics": {
                "holdout_day": plan.holdout.label,
                "auc_purchased": evaluation.models[NETWORK].auc_purchased,
                f"at_fpr_{HEADLINE_FPR:g}": evaluation.models[NETWORK]
                .at(HEADLINE_FPR)
                .overall.to_dict(),
            },
            "expected": calibration["expected"],
        }
        outcome.version, outcome.version_dir = export_version(
            network.module,
            settings.triton.model_repository,
            settings.triton.model_name,
            metadata,
            sample=x[: min(len(x), 4096)],
            calibration=calibration,
        )
        say(f"exported version {outcome.version} to {outcome.version_dir}")
    (report_dir / "train.json").write_text(json.dumps(_summary(outcome), indent=2) + "\n")
    return outcome


def _summary(outcome: TrainOutcome) -> dict[str, Any]:
    return {
        "version": outcome.version,
        "split": outcome.plan.as_dict(),
        "labels": outcome.labels.as_dict(),
        "weights": outcome.weights.as_dict(),
        "seconds": outcome.seconds,
        "network": {
            "epochs": outcome.network.epochs,
            "best_epoch": outcome.network.best_epoch,
            "history": outcome.network.history,
        },
    }
