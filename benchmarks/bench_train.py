"""Training time per million clicks: the SLIDR network and its baselines.

Simulates a week, computes features through the live Redis code (needs `slidr stack up`), and
fits every model on ``--rows`` clicks drawn from the earlier days (with replacement when the
week is smaller), with early stopping on the next day, exactly as `slidr train` does.

    .venv/bin/python benchmarks/bench_train.py --rows 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.table import Table

from models import baselines
from models.dataset import load_labelled
from models.featurize import featurize_dataset_sync
from models.network import Split, train_network
from models.train import plan_split, weighted_split
from slidr.console import make_console
from slidr.settings import get_settings
from slidr.simulate.config import SimConfig
from slidr.simulate.runner import run
from slidr.simulate.sinks import ParquetSink


def _draw(split: Split, rows: int, seed: int) -> Split:
    idx = np.random.default_rng(seed).choice(len(split.y), size=rows, replace=len(split.y) < rows)
    return Split(split.x[idx], split.y[idx], split.w[idx])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clicks-per-day", type=int, default=100_000)
    args = parser.parse_args()
    settings = get_settings()
    console = make_console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = SimConfig(
            start=datetime(2026, 3, 2, tzinfo=UTC), days=7, clicks_per_day=args.clicks_per_day
        )
        run(config, [ParquetSink(root)])
        featurize_dataset_sync(root, settings.redis)
        frame, labels = load_labelled(root, settings.learn)
    plan = plan_split(frame, labels, settings.learn)
    fit, _ = weighted_split(plan.fit.rows(frame), settings.learn.weight_cap)
    stop, _ = weighted_split(plan.stop.rows(frame), settings.learn.weight_cap)
    fit = _draw(fit, args.rows, settings.learn.seed)

    table = Table(title=f"training on {args.rows:,} clicks ({len(stop.y):,} early-stopping rows)")
    for column in ("model", "epochs", "seconds", "seconds per million clicks"):
        table.add_column(column, justify="right" if column != "model" else "left")
    network = train_network(fit, stop, settings.learn)
    per_million = network.seconds * 1e6 / args.rows
    table.add_row("network", str(network.epochs), f"{network.seconds:.1f}", f"{per_million:.1f}")
    for name, fit_model in (
        ("logistic_regression", baselines.logistic_regression),
        ("boosted_trees", baselines.boosted_trees),
    ):
        started = time.perf_counter()
        fit_model(fit, settings.learn.seed)
        seconds = time.perf_counter() - started
        table.add_row(name, "-", f"{seconds:.1f}", f"{seconds * 1e6 / args.rows:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
