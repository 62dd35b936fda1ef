"""``slidr calibrate`` wiring: archive days in, record and report out, exit codes.

The archive reader and the in-process scorer are replaced by synthetic scored frames (their
own tests cover them); everything from the frames on is the real code.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from calibration.errors import CalibrationError
from calibration.report import REPORT_FILE
from models.day_zero import ensure_day_zero_version
from slidr.cli.main import _register, app
from slidr.model_record import load_record
from slidr.settings import PROJECT_ROOT, LearnSettings, TritonSettings, get_settings
from tests.test_calibration import synthetic_day

CALIBRATE_DAY, EVAL_DAY = "2026-01-05", "2026-01-06"


def fake_load_labelled(
    root: Path, learn: LearnSettings, dates: Sequence[str], slice_fields: Sequence[str]
) -> tuple[pd.DataFrame, None]:
    [day] = dates
    return synthetic_day({CALIBRATE_DAY: 1, EVAL_DAY: 2}[day], day), None


def fake_score_version(
    repository: Path, model: str, version: int, frame: pd.DataFrame
) -> npt.NDArray[np.float32]:
    assert version == 1  # the serving version: the only one
    scores: npt.NDArray[np.float32] = frame["score"].to_numpy(dtype=np.float32)
    return scores  # synthetic_day scored the clicks already


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    repo = tmp_path / "repo"
    (repo / "slidr").mkdir(parents=True)
    (repo / "slidr/model.py").write_text((PROJECT_ROOT / "triton_repo/slidr/model.py").read_text())
    ensure_day_zero_version(TritonSettings(model_repository=repo))
    (tmp_path / "archive/clicks").mkdir(parents=True)
    monkeypatch.setenv("SLIDR_TRITON__MODEL_REPOSITORY", str(repo))
    monkeypatch.setenv("SLIDR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SLIDR_ARCHIVE__ROOT", str(tmp_path / "archive"))
    monkeypatch.setenv("SLIDR_CALIBRATION__MIN_PURCHASES", "100")  # the synthetic slices' size
    monkeypatch.setattr("models.dataset.load_labelled", fake_load_labelled)
    scoring = types.SimpleNamespace(score_version=fake_score_version)
    monkeypatch.setitem(sys.modules, "models.scoring", scoring)
    get_settings.cache_clear()
    _register()
    yield repo
    get_settings.cache_clear()


def calibrate(*args: str) -> Result:
    return CliRunner().invoke(
        app, ["calibrate", "--calibrate-day", CALIBRATE_DAY, "--eval-day", EVAL_DAY, *args]
    )


def test_calibrate_serves_the_thresholds_and_writes_the_report(repo: Path, tmp_path: Path) -> None:
    result = calibrate("--min-coverage", "0.3", "--report-dir", str(tmp_path / "r"))
    assert result.exit_code == 0, (result.output, result.exception)
    record = load_record(repo, "slidr", 1, default_threshold=0.5)
    assert len(set(record.thresholds.values())) == 6
    report = json.loads((tmp_path / "r" / REPORT_FILE).read_text())
    assert report["thresholds"] == record.thresholds and report["model_version"] == 1
    assert "slice-level" in result.output and "calibrated 6 slices" in result.output


def test_an_infeasible_budget_writes_nothing_and_fails(repo: Path) -> None:
    result = calibrate("--budget", "0.0001", "--min-coverage", "0.6")
    # `slidr` prints a CalibrationError as one line and exits with code 2.
    assert isinstance(result.exception, CalibrationError)
    assert "raise the budget to at least" in str(result.exception)
    assert not (repo / "slidr/1/calibration.json").exists()
    runs = list((repo.parent / "state" / "runs").glob("calibrate-*"))
    assert len(runs) == 1 and (runs[0] / REPORT_FILE).exists()  # the report says why


def test_no_write_only_reports(repo: Path) -> None:
    result = calibrate("--min-coverage", "0.3", "--no-write")
    assert result.exit_code == 0, result.exception
    assert not (repo / "slidr/1/calibration.json").exists()
