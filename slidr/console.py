"""The one place rich consoles are made, so tables stay readable in CI logs and pipes."""

from __future__ import annotations

import os

from rich.console import Console

#: Width when output is not a terminal. rich would use 80 columns there and cut the columns of
#: wide tables to "versi…"; log viewers and files have no such limit.
PIPED_WIDTH = 160


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width, else ``PIPED_WIDTH`` columns.

    An explicit ``COLUMNS`` in the environment still wins, as rich does by itself.
    """
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console
