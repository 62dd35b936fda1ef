"""Entry point of the ``slidr`` console script."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import typer

from slidr.errors import SlidrError

app = typer.Typer(
    name="slidr",
    help="SLIDR: real-time detection of robotic ad clicks on Kafka, Redis and Triton.\n\n"
    "Environment variables: SLIDR_<SECTION>__<FIELD> (two underscores) sets a setting of "
    "slidr/settings.py for every command, e.g. SLIDR_KAFKA__PORT; SLIDR_<COMMAND>_<OPTION> "
    "(one) sets one command's option, shown beside it in that command's --help, e.g. "
    "SLIDR_REPLAY_MODEL_VERSION. A SLIDR_ variable that names no setting is refused.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here so `slidr --help` stays fast and a missing optional extra only breaks the
    # subcommand that needs it.
    from slidr.cli import (
        archive,
        billing,
        calibrate,
        contracts,
        decisions,
        importer,
        models,
        replay,
        simulate,
        stack,
        topics,
        train,
        worker,
    )

    # In the order `slidr --help` lists them; a Typer is a group of subcommands.
    commands: dict[str, typer.Typer | Callable[..., None]] = {
        "stack": stack.app,
        "simulate": simulate.simulate,
        "topics": topics.topics,
        "worker": worker.worker,
        "decisions": decisions.decisions,
        "billing": billing.billing,
        "archive": archive.archive,
        "import": importer.app,
        "train": train.train,
        "evaluate": train.evaluate,
        "calibrate": calibrate.calibrate,
        "retrain": train.retrain,
        "models": models.models,
        "promote": models.promote,
        "rollback": models.rollback,
        "monitor": models.monitor,
        "replay": replay.replay,
        "replay-agent": replay.replay_agent,
        "contracts": contracts.contracts,
    }
    for name, command in commands.items():
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name)
        else:
            app.command(name=name)(command)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # GX logs every registered function at INFO; its results are in our own reports.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def main() -> None:
    _register()
    try:
        app()
    except SlidrError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
