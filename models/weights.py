"""Sample weights: every hour-of-day x day-of-week x logged-in x label cell weighs the same.

The article found this crucial for sparse slices such as night hours: without it, the few
night clicks barely move the loss and the model's night behaviour is left to chance. A cell
with a handful of clicks would get enormous per-click weights, so weights are capped at
``cap`` times the mean (and renormalised to mean 1); the report says how many were capped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

CELL = ("hour", "dow", "logged_in", "label")
#: All possible cells: 24 hours x 7 days x logged in or not x two labels.
N_CELLS = 24 * 7 * 2 * 2


@dataclass(frozen=True)
class WeightReport:
    cells_filled: int
    cells_empty: int
    smallest_cell: int
    capped_rows: int
    cap: float
    max_weight: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def sample_weights(frame: pd.DataFrame, cap: float) -> tuple[npt.NDArray[np.float64], WeightReport]:
    """Weights with mean 1 that give each filled cell the same total weight."""
    if frame.empty:
        raise ValueError("no rows to weight")
    cell_size = frame.groupby(list(CELL), observed=True)["click_id"].transform("size")
    filled = int(frame.groupby(list(CELL), observed=True).ngroups)
    raw = 1.0 / cell_size.to_numpy(dtype=np.float64)
    weights = raw / raw.mean()
    # Capping then renormalising can push others past the cap again; a few rounds settle it.
    capped = np.zeros(len(weights), dtype=bool)
    for _ in range(10):
        over = weights > cap
        if not over.any():
            break
        capped |= over
        weights = np.minimum(weights, cap)
        weights /= weights.mean()
    report = WeightReport(
        cells_filled=filled,
        cells_empty=N_CELLS - filled,
        smallest_cell=int(cell_size.min()),
        capped_rows=int(capped.sum()),
        cap=cap,
        max_weight=float(weights.max()),
    )
    return weights, report
