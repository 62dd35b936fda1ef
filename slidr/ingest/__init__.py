"""Public click logs -> an archive that trains like simulated data (``slidr import``).

An import writes the archive's events (``slidr.archive``); the feature vectors of its clicks
come from the worker's own feature code, which lives outside the shared core, so an import is
handed a :class:`Featurizer` (``models.featurize.RedisFeaturizer``) by its caller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class Featurizer(Protocol):
    """Computes ``features/`` for the clicks of an archive, offline."""

    def require(self) -> None:
        """Raise (naming what to start) if features cannot be computed: called before reading."""

    def __call__(self, root: Path, on_hour: Callable[[str, str, int], None]) -> int:
        """Features for every click under ``root/clicks``; the number of clicks featurized."""
