"""The CLI's environment variables follow one scheme, shown in --help, and a variable that
names no setting is refused with its name (not ignored, not a traceback)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import typer

from slidr.cli.main import _register, app
from slidr.settings import ENV_NESTING, ENV_PREFIX, Settings, unknown_variables
from tests.worker_harness import SLIDR


def _options(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(command path, parameter) of every command (typer's own click: duck-typed)."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _options(command, (*path, name))
        else:
            for param in command.params:
                yield " ".join((*path, name)), param


def _is_setting(variable: str) -> bool:
    path = variable.removeprefix(ENV_PREFIX).lower().split(ENV_NESTING)
    fields = Settings.model_fields
    if len(path) == 1:
        return path[0] in fields
    section = fields.get(path[0])
    return section is not None and path[1] in type(section.default).model_fields


def test_every_option_variable_is_a_setting_or_its_commands_own() -> None:
    _register()
    checked = 0
    for command, param in _options(typer.main.get_command(app)):
        variables = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
        for variable in variables:
            checked += 1
            if ENV_NESTING in variable:
                assert _is_setting(variable), f"{command}: {variable} names no setting"
            else:
                # --eval-day, or the argument; calibrate --calibrate-day: CALIBRATE_DAY
                name = command.split()[0]
                flag = max(param.opts, key=len).lstrip("-").removeprefix(f"{name}-")
                own = f"{ENV_PREFIX}{name}_{flag}".upper().replace("-", "_")
                assert variable == own, f"{command} {flag}: {variable}, expected {own}"
            assert getattr(param, "show_envvar", True), f"{variable} is hidden from --help"
    assert checked > 40


def test_a_variable_that_names_no_setting_is_refused_by_name() -> None:
    assert unknown_variables({"SLIDR_KAFKAA__PORT": "1", "SLIDR_KAFKA__PORT": "2"}) == [
        "SLIDR_KAFKAA__PORT"
    ]
    cases = {
        "SLIDR_KAFKAA__PORT": "SLIDR_KAFKAA__PORT is not a setting",
        "SLIDR_KAFKA__PROT": "SLIDR_KAFKA__PROT is not a setting: section kafka has no field",
        "SLIDR_KAFKA__PORT": "SLIDR_KAFKA__PORT: Input should be a valid integer",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for variable, message in cases.items():
        run = subprocess.run(
            [SLIDR, "topics"], env={**env, variable: "x"}, capture_output=True, timeout=60
        )
        assert run.returncode == 2
        assert message in run.stderr.decode(), run.stderr.decode()
        assert "Traceback" not in run.stderr.decode()


@pytest.mark.parametrize("command", [["--help"], ["replay", "--help"], ["simulate", "--help"]])
def test_help_shows_the_variables(command: list[str]) -> None:
    out = subprocess.run([SLIDR, *command], capture_output=True, timeout=60).stdout.decode()
    assert "SLIDR_" in out
