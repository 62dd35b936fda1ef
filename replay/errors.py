"""Errors of the replay package; each message says what to change."""

from __future__ import annotations

from slidr.errors import SlidrError


class ReplayError(SlidrError):
    """A replay could not run to the end (a service failed); it can be resumed."""


class ReplayRefused(ReplayError):
    """A replay that was not started: bad range, unknown model version, too large, ..."""
