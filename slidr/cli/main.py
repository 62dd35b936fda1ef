"""Entry point of the ``slidr`` console script."""

from __future__ import annotations

import logging
import sys

import typer

from slidr.errors import SlidrError

app = typer.Typer(
    name="slidr",
    help="SLIDR: real-time detection of robotic ad clicks on Kafka, Redis and Triton.\n\n"
    "Every option can also be set by the environment variable shown beside it; service "
    "addresses come from SLIDR_* variables (see slidr/settings.py).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here so `slidr --help` stays fast and a missing optional extra only breaks the
    # subcommand that needs it.
    from slidr.cli import decisions, simulate, stack, topics, worker

    app.add_typer(stack.app, name="stack")
    app.command(name="simulate")(simulate.simulate)
    app.command(name="topics")(topics.topics)
    app.command(name="worker")(worker.worker)
    app.command(name="decisions")(decisions.decisions)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
