"""The registry's one exception."""

from __future__ import annotations

from slidr.errors import SlidrError


class RegistryError(SlidrError):
    """A registry move that is not allowed, a registry that cannot be read, or a Triton that
    did not load what a move needs; the message says what to do."""
