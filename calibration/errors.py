"""The calibration package's root exception."""

from __future__ import annotations

from slidr.errors import SlidrError


class CalibrationError(SlidrError):
    """The data cannot be calibrated as asked; the message says what to change."""
