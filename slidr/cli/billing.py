"""``slidr billing``: the reference billing consumer, one final verdict per click_id."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from slidr.billing import read_ledger
from slidr.console import make_console
from slidr.settings import get_settings

console = make_console()


def billing(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the final decision of every click here, one JSON object per line "
            "(the Decision contract), written whole or not at all.",
            envvar="SLIDR_BILLING_OUT",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
    idle_s: Annotated[
        float,
        typer.Option(help="Stop reading after this long without a message, seconds.", min=0.1),
    ] = 3.0,
) -> None:
    """Read the decisions and replayed-decisions topics as they stand and fold them into one
    final decision per click_id: the highest revision (a replay over the live worker, a later
    replay over an earlier one), then a judged decision over a degraded one, then the first
    (docs/contracts.md, "One final decision per click")."""
    settings = get_settings()
    ledger = read_ledger(settings, idle_s=idle_s)
    summary = ledger.summary()
    if out is not None:
        staging = out.with_name(f".{out.name}.partial")
        with staging.open("wb") as f:
            for decision in ledger.final():
                f.write(decision.to_json() + b"\n")
        os.replace(staging, out)
    if as_json:
        typer.echo(orjson.dumps(dataclasses.asdict(summary)).decode())
        return
    table = Table("final decisions", "clicks")
    for name, value in dataclasses.asdict(summary).items():
        table.add_row(name.replace("_", " "), f"{value:,}")
    console.print(table)
    if out is not None:
        console.print(f"wrote {summary.clicks:,} final decisions to {out}")
