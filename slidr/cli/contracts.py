"""``slidr contracts``: write the event models' JSON Schemas to contracts/ (or check them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slidr.contracts import CONTRACTS_DIR, REGENERATE, stale_files, write_all


def contracts(
    out: Annotated[
        Path,
        typer.Option(
            help="Directory of the schema files (one <name>.schema.json per message type).",
            envvar="SLIDR_CONTRACTS_OUT",
        ),
    ] = CONTRACTS_DIR,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Write nothing; exit 1 if a file is missing, stale or of no model.",
            envvar="SLIDR_CONTRACTS_CHECK",
        ),
    ] = False,
) -> None:
    """Generate the JSON Schemas of every message on slidr's topics from the event models.

    Run it after changing a model in slidr/events.py or replay/, and commit the files.
    """
    if check:
        stale = stale_files(out)
        if stale:
            typer.echo(f"out of date in {out}: {', '.join(stale)}; run `{REGENERATE}`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out}: in sync with the models")
        return
    changed = write_all(out)
    typer.echo(f"{out}: {'updated ' + ', '.join(changed) if changed else 'already in sync'}")
