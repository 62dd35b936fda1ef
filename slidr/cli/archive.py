"""``slidr archive``: Kafka clicks, purchases and decisions -> Parquet, exactly once."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from slidr.console import make_console
from slidr.settings import get_settings

_ALL = "clicks,purchases,decisions"


def _datasets(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(_ALL.split(",")))
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown dataset(s) {', '.join(unknown) or '(none)'}; choose from {_ALL}",
            param_hint="--topics",
        )
    return list(dict.fromkeys(names))


def archive(
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            envvar="SLIDR_ARCHIVE__ROOT",
            show_default=False,
            help="Archive directory (default ~/.local/state/slidr/archive); one archiver per root.",
        ),
    ] = None,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle",
            min=0.0,
            envvar="SLIDR_ARCHIVE_UNTIL_IDLE",
            show_default=False,
            help="Stop once every partition is read to its end and nothing new came for this "
            "many seconds (the daily job). Without it, follow until SIGTERM or Ctrl-C.",
        ),
    ] = None,
    topics: Annotated[
        str,
        typer.Option(
            "--topics",
            envvar="SLIDR_ARCHIVE_TOPICS",
            help="Datasets to archive, comma-separated; each reads its topic from the settings "
            "(SLIDR_TOPICS__CLICKS, ...).",
        ),
    ] = _ALL,
) -> None:
    """Append the clicks, purchases and decisions topics to the Parquet archive, exactly once.

    Files go to ROOT/<dataset>/date=YYYY-MM-DD/hour=HH/, by each event's UTC time.

    Offsets are committed in ROOT/_offsets/: a restart, even after kill -9, resumes exactly.

    Flushes every SLIDR_ARCHIVE__FLUSH_ROWS events or SLIDR_ARCHIVE__FLUSH_EVERY_S seconds.

    Unparseable messages are logged with topic, partition and offset, and not archived.
    """
    from streams.archive.consumer import Archiver  # pyarrow and the Kafka client only when it runs

    settings = get_settings()
    archiver = Archiver(settings, root or settings.archive.root, _datasets(topics))
    stop = threading.Event()
    handlers = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        stats = archiver.run(stop, until_idle)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    table = Table(
        "dataset", "topic", "archived", "not parseable", "files", "next offsets",
        title=f"archive {archiver.root}",
    )  # fmt: skip
    for name, s in stats.items():
        offsets = " ".join(f"{p}:{o}" for p, o in sorted(s.next_offsets.items()))
        table.add_row(name, s.topic, f"{s.rows:,}", f"{s.skipped:,}", f"{s.files:,}", offsets)
    make_console().print(table)
