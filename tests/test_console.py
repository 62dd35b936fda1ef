"""Tables stay readable when output is not a terminal (CI logs, pipes), not cut to "versi…"."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from slidr.console import PIPED_WIDTH, make_console
from tests.stack_fixtures import free_ports
from tests.worker_harness import SLIDR


def test_the_registry_table_keeps_whole_columns_through_a_pipe(repo: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env |= {
        "SLIDR_TRITON__MODEL_REPOSITORY": str(repo),
        "SLIDR_TRITON__GRPC_PORT": str(free_ports(1)[0]),  # no Triton: "loaded" reads "?"
    }
    done = subprocess.run(
        [SLIDR, "models"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    header = next(line for line in done.stdout.splitlines() if line.startswith("┃"))
    columns = ["version", "state", "kind", "registered", "IVR exp.", "IVR obs.", "loaded", "note"]
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == columns, done.stdout
    assert "velocity_heuristic" in done.stdout and "…" not in done.stdout


def test_an_explicit_columns_setting_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert make_console().width == PIPED_WIDTH  # pytest captures stdout: not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100
