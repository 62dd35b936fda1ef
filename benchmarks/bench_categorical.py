"""What the categorical ids cost the worker per click (issue 14 item 3).

The worker computes the hashed bucket ids of the categorical click fields from the click alone
(``streams.feature_store.batch.clicks_local_features``, no Redis). This times that function on
simulated clicks, in the worker's batch sizes, with the categorical columns and, in the same
run, without them (the reference: time features and login only), so the difference is what
the ids add. Cache warm: after one pass over the clicks (most values repeat); cold: every
value new (the caches emptied before each batch), the worst case.

    .venv/bin/python benchmarks/bench_categorical.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from models.featurize import click_hours, clicks_of
from slidr.events import Click
from slidr.simulate.config import SimConfig
from slidr.simulate.runner import run
from slidr.simulate.sinks import ParquetSink
from streams.feature_store import batch as feature_batch
from streams.feature_store.batch import clicks_local_features, epoch_ms


def _clicks(n: int, seed: int) -> list[Click]:
    with tempfile.TemporaryDirectory(prefix="slidr-bench-categorical-") as tmp:
        start = datetime(2026, 3, 2, tzinfo=UTC)
        run(SimConfig(start=start, days=1, clicks_per_day=n, seed=seed), [ParquetSink(Path(tmp))])
        clicks: list[Click] = []
        for _, _, table in click_hours(Path(tmp)):
            clicks += clicks_of(table)
        return clicks


def _per_click_us(batches: list[list[Click]], repeats: int, cold: bool) -> float:
    ms = [np.array([epoch_ms(c.event_time) for c in b]) for b in batches]
    best = float("inf")
    for _ in range(repeats):
        spent = 0.0
        for b, m in zip(batches, ms, strict=True):
            if cold:
                for _, ids in feature_batch._CATEGORICAL:
                    ids.cache.clear()
            started = time.perf_counter()
            clicks_local_features(b, m)
            spent += time.perf_counter() - started
        best = min(best, spent)
    return best * 1e6 / sum(len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[50, 460])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    clicks = _clicks(args.clicks, args.seed)
    print(f"{len(clicks):,} simulated clicks; best of {args.repeats} passes; µs per click")
    print("| batch | reference (time, login) | with the ids, warm | ids warm | ids cold |")
    print("|---|---|---|---|---|")
    categorical = feature_batch._CATEGORICAL
    for size in args.batch:
        batches = [clicks[i : i + size] for i in range(0, len(clicks), size)]
        feature_batch._CATEGORICAL = []
        reference = _per_click_us(batches, args.repeats, cold=False)
        feature_batch._CATEGORICAL = categorical
        _per_click_us(batches, 1, cold=False)  # fill the caches
        warm = _per_click_us(batches, args.repeats, cold=False)
        cold = _per_click_us(batches, max(1, args.repeats // 2), cold=True)
        print(
            f"| {size} | {reference:.2f} | {warm:.2f} | {warm - reference:.2f} "
            f"| {cold - reference:.2f} |"
        )


if __name__ == "__main__":
    main()
