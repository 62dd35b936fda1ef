"""What each model catches of each simulated fraud kind, at equal FPR on purchasing clicks.

The same run as ``benchmarks/bench_models.py`` (simulate ``--days`` days, features through the
live Redis code, then exactly what `slidr train` runs, without the export), and so the same
thresholds; this one reads each model's held-out scores and the simulator's ground truth, and
gives, per bot kind, the share of its held-out clicks that each model invalidates, and the
share of human clicks invalidated (true human FPR), beside bench_models' figures (AUCs, FPR
reached, IVR, robotic coverage). docs/simulator.md holds the results.

    .venv/bin/python benchmarks/bench_fraud_kinds.py --seeds 141 151
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.evaluate import Evaluation, evaluate
from models.train import NETWORK, fit_and_export, prepare
from slidr.settings import get_settings
from slidr.simulate.config import SimConfig
from slidr.simulate.runner import run
from slidr.simulate.sinks import ParquetSink
from tests.simulated import START

FPR_POINTS = (0.01, 0.02)
MODELS = (NETWORK, "logistic_regression", "velocity_heuristic", "boosted_trees")


def _scored_holdout(seed: int, days: int, clicks_per_day: int) -> tuple[Evaluation, pd.DataFrame]:
    """The held-out day's clicks with their bot kind and one score column per model."""
    settings = get_settings()
    captured: dict[str, Any] = {}

    def capture(held: pd.DataFrame, scores: Mapping[str, Any], **kwargs: Any) -> Evaluation:
        captured["held"], captured["scores"] = held, dict(scores)
        return evaluate(held, scores, **kwargs)

    with tempfile.TemporaryDirectory(prefix="slidr-bench-kinds-") as tmp:
        root = Path(tmp)
        config = SimConfig(start=START, days=days, clicks_per_day=clicks_per_day, seed=seed)
        run(config, [ParquetSink(root)])
        prepared = prepare(root, settings, say=lambda _: None)
        # fit_and_export calls evaluate once, on the held-out day, with every model's scores.
        with mock.patch("models.train.evaluate", capture):
            outcome = fit_and_export(
                prepared, settings, root / "report", export=False, say=lambda _: None
            )
        truth = ds.dataset(root / "truth", partitioning="hive").to_table(
            columns=["click_id", "bot_kind"]
        )
    held: pd.DataFrame = captured["held"][["click_id"]].copy()
    for name, values in captured["scores"].items():
        held[name] = np.asarray(values, dtype=np.float64)
    held = held.merge(truth.to_pandas(), on="click_id", how="left")
    return outcome.evaluation, held


def _invalid(evaluation: Evaluation, held: pd.DataFrame, model: str, fpr: float) -> Any:
    threshold = evaluation.models[model].at(fpr).threshold
    assert isinstance(threshold, float)  # one global threshold per FPR point
    return held[model].to_numpy() >= threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[141, 151])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--clicks-per-day", type=int, default=100_000)
    args = parser.parse_args()
    if args.days < 5:
        parser.error("--days must be at least 5 (4 complete labelled days and one unlabelled)")
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=260)
    for seed in args.seeds:
        console.print(f"seed {seed}: simulating, computing features, fitting ...")
        evaluation, held = _scored_holdout(seed, args.days, args.clicks_per_day)
        kinds = held["bot_kind"].fillna("human").to_numpy()
        names = ["human", *sorted(set(kinds) - {"human"})]
        table = Table(
            title=f"seed {seed}: share of each kind's held-out clicks invalidated "
            f"({args.days} days, {args.clicks_per_day:,} clicks per day)"
        )
        table.add_column("model")
        table.add_column("AUC purchased", justify="right")
        table.add_column("AUC bot", justify="right")
        table.add_column("FPR", justify="right")
        table.add_column("IVR", justify="right")
        table.add_column("coverage", justify="right")
        for name in names:
            table.add_column(f"{name} ({int((kinds == name).sum()):,})", justify="right")
        for fpr in FPR_POINTS:
            for model in MODELS:
                invalid = _invalid(evaluation, held, model, fpr)
                m = evaluation.models[model]
                rates = m.at(fpr).overall.rates
                row = [model, f"{m.auc_purchased:.3f}", f"{m.auc_bot or float('nan'):.3f}"]
                row += [f"{rates.fpr:.2%}", f"{rates.ivr:.1%}", f"{rates.coverage:.1%}"]
                row += [f"{invalid[kinds == name].mean():.1%}" for name in names]
                table.add_row(*row)
            table.add_section()
        console.print(table)


if __name__ == "__main__":
    main()
