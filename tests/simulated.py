"""Days of simulated traffic, trained on as `slidr train` does: the benchmarks that compare
models and calibrations over simulation seeds start from here."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from models.train import TrainOutcome, fit_and_export, prepare
from slidr.settings import Settings
from slidr.simulate.config import SimConfig
from slidr.simulate.runner import run
from slidr.simulate.sinks import ParquetSink

#: The first simulated day.
START = datetime(2026, 10, 5, tzinfo=UTC)


def train_on_simulation(
    settings: Settings, *, seed: int, days: int, clicks_per_day: int, prefix: str
) -> TrainOutcome:
    """Simulate ``days`` days from :data:`START` into a temporary archive (``prefix`` names
    it), compute features through the Redis of ``settings`` and run what `slidr train` runs
    (``prepare`` and ``fit_and_export``), without the export."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        config = SimConfig(start=START, days=days, clicks_per_day=clicks_per_day, seed=seed)
        run(config, [ParquetSink(root)])
        prepared = prepare(root, settings, say=lambda _: None)
        return fit_and_export(prepared, settings, root / "report", export=False, say=lambda _: None)
