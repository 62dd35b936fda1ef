"""`slidr train`: archive -> weak labels -> weights -> network and baselines -> report -> export.

Days are split by time, never by shuffled rows (see :func:`plan_days`). The network and the
baselines are fitted on the same rows with the same weights and compared on the same held-out
day; the network is then exported as a new Triton version with its metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
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
from slidr.metrics import curve
from slidr.settings import Settings
from streams.archive.tables import FEATURES_DATASET

log = logging.getLogger(__name__)

NETWORK = "network"
MIN_DAYS = 4


@dataclass(frozen=True)
class DayPlan:
    """fit: training rows; stop: early stopping; holdout: the report (and calibration);
    later: the day after, kept unseen for checking calibration."""

    fit: tuple[str, ...]
    stop: str
    holdout: str
    later: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_days(days: Sequence[str]) -> DayPlan:
    if len(days) < MIN_DAYS:
        raise DatasetError(
            f"training needs at least {MIN_DAYS} complete labelled days (fit, early stopping, "
            f"held-out, later held-out); the archive has {len(days)}: {', '.join(days) or '-'}. "
            "Archive more days, or simulate them with `slidr simulate --days 6`"
        )
    return DayPlan(fit=tuple(days[:-3]), stop=days[-3], holdout=days[-2], later=days[-1])


@dataclass
class TrainOutcome:
    plan: DayPlan
    labels: LabelReport
    weights: WeightReport
    network: TrainedNetwork
    evaluation: Evaluation
    seconds: dict[str, float]
    report_dir: Path
    #: The held-out and later days with the network's ``score``, for calibration.
    holdout: pd.DataFrame
    later: pd.DataFrame
    version: int | None = None
    version_dir: Path | None = None


def ensure_features(root: Path, settings: Settings, say: Callable[[str], None]) -> None:
    """Clicks never scored by a worker (e.g. simulated Parquet) get features offline."""
    if (root / "decisions").is_dir() or (root / FEATURES_DATASET).is_dir():
        return
    say(f"no served features in {root}: computing them through the live feature code")
    started = time.perf_counter()
    n = featurize_dataset_sync(root / "clicks", root, settings.redis)
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
    """The labelled frame and how its days are split."""

    frame: pd.DataFrame
    labels: LabelReport
    plan: DayPlan

    def day(self, date: str) -> pd.DataFrame:
        return self.frame[self.frame["date"] == date].reset_index(drop=True)


def prepare(
    root: Path, settings: Settings, say: Callable[[str], None], until: str | None = None
) -> Prepared:
    """Features (if missing), weak labels and the day split; ``until`` is the last day used."""
    learn = settings.learn
    ensure_features(root, settings, say)
    frame, labels = load_labelled(root, learn, slice_fields=settings.calibration.slice_fields)
    say(
        f"labels: {labels.labelled:,} of {labels.clicks:,} clicks labelled "
        f"({labels.coverage:.1%}); {labels.human_by_purchase:,} human by purchase, "
        f"{labels.human_by_rfm:,} by RFM, {labels.non_human:,} non-human; "
        f"{labels.not_yet_labelled:,} younger than the attribution window"
    )
    days = complete_days(frame, labels, learn.attribution_window_h)
    if until is not None:
        if until not in days:
            raise DatasetError(
                f"{until} is not a complete labelled day of the archive (complete: "
                f"{', '.join(days) or 'none'}); its clicks need {learn.attribution_window_h:g} h "
                "of purchases after the day ends"
            )
        days = [d for d in days if d <= until]
    plan = plan_days(days)
    say(
        f"days: fit {', '.join(plan.fit)}; early stopping {plan.stop}; held out {plan.holdout}; "
        f"later {plan.later}"
    )
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
    learn, plan, frame = settings.learn, prepared.plan, prepared.frame
    fit_rows = frame[frame["date"].isin(plan.fit)]
    fit, weight_report = weighted_split(fit_rows, learn.weight_cap)
    stop, _ = weighted_split(prepared.day(plan.stop), learn.weight_cap)
    say(
        f"weights: {weight_report.cells_filled} cells filled, {weight_report.cells_empty} empty, "
        f"{weight_report.capped_rows} rows capped at {weight_report.cap:g}x the mean"
    )
    seconds: dict[str, float] = {}

    def on_epoch(epoch: int, train_loss: float, holdout_loss: float) -> None:
        say(f"epoch {epoch}: train loss {train_loss:.4f}, holdout loss {holdout_loss:.4f}")

    network = train_network(fit, stop, learn, on_epoch)
    seconds[NETWORK] = network.seconds
    say(f"network: {network.seconds:.1f} s, best epoch {network.best_epoch} of {network.epochs}")
    started = time.perf_counter()
    logreg = baselines.logistic_regression(fit, learn.seed)
    seconds["logistic_regression"] = time.perf_counter() - started
    started = time.perf_counter()
    trees = baselines.boosted_trees(fit, learn.seed)
    seconds["boosted_trees"] = time.perf_counter() - started
    say(", ".join(f"{name} {s:.1f} s" for name, s in seconds.items() if name != NETWORK))

    held = prepared.day(plan.holdout)
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
    write_report(evaluation, report_dir, headline_fpr=HEADLINE_FPR)
    later = prepared.day(plan.later)
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
                "holdout_day": plan.holdout,
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
        "days": outcome.plan.as_dict(),
        "labels": outcome.labels.as_dict(),
        "weights": outcome.weights.as_dict(),
        "seconds": outcome.seconds,
        "network": {
            "epochs": outcome.network.epochs,
            "best_epoch": outcome.network.best_epoch,
            "history": outcome.network.history,
        },
    }
