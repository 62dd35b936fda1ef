"""Options shared by the subcommands."""

from __future__ import annotations

from typing import Any

import typer


def setting_option(section: str, field: str, help: str, *decls: str, **checks: Any) -> Any:
    """An option that overrides one setting for this run, read from the setting's own variable
    (``SLIDR_<SECTION>__<FIELD>``); unset, the setting keeps its value (``help`` says which).
    ``checks`` go to ``typer.Option`` (``min``, ``max``)."""
    return typer.Option(
        None,
        *decls,
        help=help,
        envvar=f"SLIDR_{section.upper()}__{field.upper()}",
        show_default=False,
        **checks,
    )
