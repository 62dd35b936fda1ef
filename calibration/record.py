"""The calibration record beside the model version it belongs to, which the worker serves.

``<repository>/<model>/<version>/calibration.json`` is replaced atomically (temporary file +
``os.replace``), so the worker, which reloads on change, never reads half a record; the
record it replaces is kept as ``calibration.prev.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from calibration.calibrate import CalibrationOutcome, Policy
from calibration.errors import CalibrationError
from slidr.model_record import CALIBRATION_FILE, model_dir

PREVIOUS_FILE = "calibration.prev.json"


def calibration_path(repository: Path, model: str, version: int) -> Path:
    return model_dir(repository, model) / str(version) / CALIBRATION_FILE


def record_of(outcome: CalibrationOutcome, model: str) -> dict[str, Any]:
    """The record's JSON content (keys ``id`` and ``thresholds`` are what serving reads)."""
    s = outcome.settings
    digest = hashlib.sha256(json.dumps(outcome.thresholds, sort_keys=True).encode()).hexdigest()[:8]
    held_out = outcome.comparison[Policy.SLICE_LEVEL].evaluation_day
    slices = {}
    for sf in outcome.fits:
        point = outcome.points[sf.unit.name]
        slices[sf.unit.name] = {
            "members": list(sf.unit.members),
            "threshold": point.threshold,
            "predicted": {"ivr": point.ivr, "fpr": point.fpr, "coverage": point.coverage},
            "target_fpr": point.target_fpr,
            "fit": {"method": sf.fit.method.value, "rmse": sf.fit.rmse},
            "click_share": sf.unit.click_share,
            "purchase_share": sf.unit.purchase_share,
            "fpr": {
                kind: e.as_dict()
                for kind, e in outcome.fpr_estimates.get("calibration_day", {})
                .get(sf.unit.name, {})
                .items()
            },
        }
    return {
        "id": f"v{outcome.model_version}-{outcome.created_at:%Y%m%dT%H%M%SZ}-{digest}",
        "model": model,
        "model_version": outcome.model_version,
        "thresholds": outcome.thresholds,
        "slice_fields": list(s.slice_fields),
        "fpr_budget": s.fpr_budget,
        # The FPR solved at: the budget less its margin at ``budget_confidence``.
        "solved_budget": outcome.solved_budget,
        # Which FPR the budget binds, and both FPRs of these thresholds with 95 % intervals.
        "fpr_target": s.fpr_target,
        "fpr": {
            day: {kind: e.as_dict() for kind, e in figures["all"].items()}
            for day, figures in outcome.fpr_estimates.items()
        },
        # Per band of hours of the calibration day: the intraday re-solve's diurnal profile.
        "fpr_by_hour_band": outcome.fpr_by_hour_band,
        "min_coverage": s.min_coverage,
        "slices": slices,
        "pooled": {
            member: sf.unit.name
            for sf in outcome.fits
            if sf.unit.pooled
            for member in sf.unit.members
        },
        "data_window": outcome.windows,
        "created_at": outcome.created_at.isoformat(),
        # The monitor's baseline (slidr.serving_figures.ServingFigures): the later held-out day.
        "expected": {
            "ivr": held_out.overall.ivr,
            "slices": {name: r.ivr for name, r in held_out.per_slice.items()},
            "score_histogram": outcome.score_histogram,
        },
    }


def write_record(outcome: CalibrationOutcome, repository: Path, model: str) -> Path:
    """Serve ``outcome``'s thresholds for its model version; refuse an outcome without any."""
    if not outcome.calibrated:
        raise CalibrationError(f"no calibration record written: {outcome.message}")
    path = calibration_path(repository, model, outcome.model_version)
    if not path.parent.is_dir():
        raise CalibrationError(
            f"model {model!r} has no version {outcome.model_version} in {repository}: "
            "calibrate a version that exists"
        )
    return replace_record(path, record_of(outcome, model))


def replace_record(path: Path, record: dict[str, Any]) -> Path:
    """Serve ``record`` at ``path`` (a version's ``calibration.json``): the daily calibration
    and the monitor's intraday re-solve (calibration/intraday.py) both write through here."""
    staging = path.with_name(CALIBRATION_FILE + ".partial")
    staging.write_text(json.dumps(record, indent=2) + "\n")
    if path.exists():
        previous = path.with_name(PREVIOUS_FILE + ".partial")
        shutil.copyfile(path, previous)
        os.replace(previous, path.with_name(PREVIOUS_FILE))
    os.replace(staging, path)
    return path
