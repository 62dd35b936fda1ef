"""What the offline-learning commands (train, evaluate, retrain, calibrate) share: the archive
and report-directory options, and timestamped progress lines on stderr."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from slidr.archive import CLICKS
from slidr.console import make_console
from slidr.settings import Settings

console = make_console(stderr=True)

ArchiveOption = Annotated[
    Path | None,
    typer.Option(
        "--archive",
        envvar="SLIDR_ARCHIVE__ROOT",
        help="Archive root (clicks/, purchases/, decisions/ or features/; see docs/datasets.md). "
        "Default: the archive setting.",
        file_okay=False,
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report-dir",
        help="Where report.json, train.json and the PNG plots go. "
        "Default: <state_dir>/runs/<command>-<UTC time>.",
        file_okay=False,
    ),
]


def say(message: str) -> None:
    console.print(f"[dim]{datetime.now(UTC):%H:%M:%S}[/] {message}")


def archive_root(settings: Settings, archive: Path | None) -> Path:
    root = archive or settings.archive.root
    if not (root / CLICKS).is_dir():
        raise typer.BadParameter(
            f"{root} has no {CLICKS}/ directory: archive the topics with `slidr archive`, or "
            "simulate history with `slidr simulate --to parquet --out DIR`",
            param_hint="--archive",
        )
    return root


def report_dir_for(settings: Settings, given: Path | None, command: str) -> Path:
    return given or settings.state_dir / "runs" / f"{command}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
