"""Drives a run: generator -> sinks, with progress on stderr and a summary at the end."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from slidr.console import make_console
from slidr.simulate import catalog
from slidr.simulate.config import SimConfig
from slidr.simulate.generator import KINDS, Generator
from slidr.simulate.sinks import Sink
from slidr.slices import slice_of

logger = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run produced; counts come from the generator's codes, not from re-reading files."""

    #: Clicks per (device code, logged in, kind code; 0 = human).
    counts: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros((3, 2, len(KINDS) + 1), dtype=np.int64)
    )
    purchases: int = 0

    @property
    def clicks(self) -> int:
        return int(self.counts.sum())

    @property
    def bot_clicks(self) -> int:
        return int(self.counts[:, :, 1:].sum())

    @property
    def bot_share(self) -> float:
        return self.bot_clicks / self.clicks if self.clicks else 0.0

    def per_slice(self) -> dict[str, tuple[int, int]]:
        """Slice name -> (clicks, bot clicks)."""
        out: dict[str, tuple[int, int]] = {}
        for d, device in enumerate(catalog.DEVICES):
            for logged_in in (0, 1):
                cell = self.counts[d, logged_in]
                out[slice_of(device, bool(logged_in))] = (int(cell.sum()), int(cell[1:].sum()))
        return out

    def per_kind(self) -> dict[str, int]:
        totals = self.counts.sum(axis=(0, 1))
        return {"human": int(totals[0])} | {
            k.value: int(totals[i + 1]) for i, k in enumerate(KINDS)
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "clicks": self.clicks,
            "bot_clicks": self.bot_clicks,
            "bot_share": round(self.bot_share, 6),
            "purchases": self.purchases,
            "per_kind": self.per_kind(),
            "per_slice": {
                s: {"clicks": c, "bot_clicks": b} for s, (c, b) in self.per_slice().items()
            },
        }


def manifest(config: SimConfig, summary: Summary) -> dict[str, Any]:
    """What produced a dataset; no wall-clock values, so that reruns stay byte-identical."""
    settings = asdict(config)
    settings["start"] = config.start.isoformat()
    settings["origin"] = config.origin.isoformat() if config.origin else None
    settings["bot_mix"] = {k.value: w for k, w in config.bot_mix.items()}
    return {"config": settings, "summary": summary.as_dict()}


def run(
    config: SimConfig,
    sinks: Sequence[Sink],
    show_progress: bool = False,
    console: Console | None = None,
) -> Summary:
    generator = Generator(config)
    for sink in sinks:
        sink.write_customers(generator.customers())
    summary = Summary()
    progress = Progress(
        TextColumn("[bold]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("hours  {task.fields[clicks]:,} clicks"),
        TimeRemainingColumn(),
        console=console or make_console(stderr=True),
        disable=not show_progress,
        transient=True,
    )
    with progress:
        task = progress.add_task("hours", total=config.hours, clicks=0)
        for batch in generator.hours():
            for sink in sinks:
                sink.write_hour(batch)
            summary.counts += batch.counts
            summary.purchases += batch.purchases.num_rows
            progress.update(task, advance=1, clicks=summary.clicks)
    for sink in sinks:
        sink.close()
    logger.info(
        "simulated %d clicks (%.1f%% bots) and %d purchases from %s to %s",
        summary.clicks,
        100 * summary.bot_share,
        summary.purchases,
        config.start.isoformat(),
        config.end.isoformat(),
    )
    return summary
