"""``slidr import``: real click logs into an archive that trains like simulated data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import filesize
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slidr.console import make_console
from slidr.settings import get_settings

app = typer.Typer(
    help="Import public click logs (TalkingData) into an archive directory.", no_args_is_help=True
)

_LABELS = {"read": "reading", "write": "writing hours", "features": "features"}


class _Bars:
    """One progress bar per stage of the import, shown from the first report on (so that a
    file refused at its header prints its error alone)."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[shown]}"),
            TimeElapsedColumn(),
            console=make_console(stderr=True),
            disable=not enabled,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, advance: int, total: int | None) -> None:
        if not self.tasks:
            self.progress.start()
        if stage not in self.tasks:
            for earlier in self.progress.tasks:  # a stage of unknown size ends when the next starts
                if earlier.total is None:
                    self.progress.update(earlier.id, total=earlier.completed)
            self.tasks[stage] = self.progress.add_task(_LABELS[stage], total=total, shown="")
        task = self.tasks[stage]
        self.progress.update(task, advance=advance)
        done, size = self.progress.tasks[task].completed, self.progress.tasks[task].total
        if stage == "read":  # bytes
            shown = filesize.decimal(int(done)) + (
                f"/{filesize.decimal(int(size))}" if size else ""
            )
        else:
            shown = f"{int(done)}/{int(size or 0)} hours"
        self.progress.update(task, shown=shown)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.stop()


@app.command()
def talkingdata(
    source: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="FILE",
            help="A TalkingData AdTracking train CSV: ip,app,device,os,channel,click_time,"
            "attributed_time,is_attributed (train.csv, train_sample.csv, or a prefix of one).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            envvar="SLIDR_IMPORT_OUT",
            file_okay=False,
            help="Archive directory to write: clicks/, purchases/, features/ (date=/hour= "
            "Parquet) and import.json.",
        ),
    ],
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            envvar="SLIDR_IMPORT_LIMIT",
            help="Read only the first N data lines, to try a big file quickly.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            envvar="SLIDR_IMPORT_OVERWRITE",
            help="Replace an archive already in --out (only once the file has been read whole).",
        ),
    ] = False,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            envvar="SLIDR_IMPORT_PROGRESS",
            help="Progress bars on stderr.",
        ),
    ] = True,
) -> None:
    """Import a TalkingData AdTracking train CSV as clicks, purchases and features.

    Each row is one click (click_id td-LINE); an attributed click (an app download) also
    becomes a purchase at attributed_time, the human signal of the weak labels. Features come
    from the worker's own Redis code, in event-time order, so Redis must be running
    (`slidr stack up`; SLIDR_REDIS__HOST / SLIDR_REDIS__PORT). Mapping: docs/talkingdata.md.

    Rows may be in any order. A BOM or stray bytes before the header, empty lines and a
    truncated last line are handled; any other malformed value stops the import with its
    line and column, before the archive in --out is touched.
    """
    # pyarrow.dataset, pandas and the feature store take seconds to import: only when used.
    from models.featurize import RedisFeaturizer
    from slidr.ingest.talkingdata import MANIFEST_FILE, import_talkingdata

    featurize = RedisFeaturizer(get_settings().redis)
    with _Bars(progress) as bars:
        manifest = import_talkingdata(
            source, out, featurize, limit=limit, overwrite=overwrite, on_progress=bars
        )
    _print_summary(manifest, out / MANIFEST_FILE)


def _print_summary(manifest: dict[str, Any], written: Path) -> None:
    console = make_console()
    seconds = manifest["seconds"]
    total_s = sum(seconds.values())
    span = manifest["time_range"]
    console.print(
        f"[bold]{manifest['clicks']:,}[/] clicks and [bold]{manifest['purchases']:,}[/] "
        f"purchases ({manifest['attributed_share']:.3%} attributed), "
        f"{span['first_click']} to {span['last_click']}, in {total_s:.1f} s "
        f"(read {seconds['read']:.1f}, write {seconds['write']:.1f}, "
        f"features {seconds['features']:.1f})"
    )
    skipped = manifest["rows_skipped"]
    if skipped:
        console.print(
            "skipped: "
            + ", ".join(
                f"{item['count']} {reason} (line {', '.join(map(str, item['first_lines']))})"
                for reason, item in skipped.items()
            )
        )
    for item in manifest["header_repaired"]:
        found, name = item["found"], item["name"]
        console.print(f"repaired: header column {item['column']} {found!r} read as {name!r}")
    for kind, count in manifest["rows_repaired"].items():
        console.print(f"repaired: {count} {kind} (see docs/talkingdata.md)")
    slices = Table("slice", "clicks", title="per slice")
    for name, clicks in manifest["slices"].items():
        slices.add_row(name, f"{clicks:,}")
    console.print(slices)
    console.print(f"archive: {written.parent} (manifest {written})")
