"""What a model version's decisions look like in serving: the figures the monitor judges.

IVR overall and per slice, optionally the score histogram. Three parties agree on this one
shape: training and calibration predict a version's **expected** figures on the held-out day
and write them into its ``metadata.json`` / ``calibration.json`` (``"expected"``); the online
monitor (``streams/monitor/``) computes the **observed** figures of the serving version from its
window and judges them against the expected ones; the registry keeps each version's observed
figures, the baseline of the version after it. The monitor owns the rules; the data model lives
here because the registry stores it and ``slidr/`` never imports ``streams/``.

Not to be confused with :class:`models.evaluate.Figures`: offline rates of one threshold on a
labelled day, with intervals and ground truth.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from slidr.model_record import CALIBRATION_FILE, read_optional

log = logging.getLogger(__name__)

#: Bins of a score histogram in expected figures (equal bins over [0, 1]).
SCORE_BINS = 10


class ServingFigures(BaseModel):
    """IVR overall and per slice, optionally the score histogram (``SCORE_BINS`` equal bins
    over [0, 1], counts or shares). Expected figures come from training or calibration;
    observed ones are written by the monitor, with how many decisions and when."""

    ivr: float = Field(ge=0.0, le=1.0)
    slices: dict[str, float] = {}
    score_histogram: list[float] | None = Field(None, min_length=SCORE_BINS, max_length=SCORE_BINS)
    decisions: int | None = None
    at: datetime | None = None


def expected_figures(version_dir: Path, metadata: Mapping[str, Any]) -> ServingFigures | None:
    """The figures predicted for a version: its calibration's (``calibration.json`` in
    ``version_dir``) if recorded and well-formed, else training's (``metadata``)."""
    for source in (read_optional(version_dir / CALIBRATION_FILE), metadata):
        if "expected" in source:
            try:
                return ServingFigures.model_validate(source["expected"])
            except ValidationError as exc:
                log.warning("ignoring malformed expected figures of version %s: %s",
                            version_dir.name, exc)  # fmt: skip
    return None
