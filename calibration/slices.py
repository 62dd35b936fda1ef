"""Traffic slices of a labelled frame, with too-small slices pooled into a parent.

A slice needs enough purchasing clicks to estimate its FPR. One with fewer than
``min_purchases`` is pooled into its nearest ancestor that has enough ("desktop/in" ->
"desktop" -> "all", :func:`slidr.slices.slice_ancestors`): every slice under that
ancestor then shares one threshold, estimated on all of their clicks and served under the
ancestor's name, which the worker falls back to for each of them. (Keeping a big sibling's
own threshold would leave the pooled threshold estimated on clicks it does not decide.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from calibration.errors import CalibrationError
from calibration.shrink import Shrinkage, fit_shrinkage
from slidr.metrics import Curve, Floats, curve
from slidr.slices import slice_ancestors

#: Columns of the labelled click frame (docs/datasets.md) that calibration reads.
REQUIRED_COLUMNS = ("slice", "score", "purchased", "robotic")


@dataclass(frozen=True)
class SliceData:
    """One decision unit: a slice, or an ancestor whose slices were pooled into one."""

    name: str
    #: The frame's slices this unit's threshold decides.
    members: tuple[str, ...]
    pooled: bool
    #: The calibration day's threshold sweep over the unit's estimation clicks.
    curve: Curve
    #: Shares of all clicks / of all purchasing clicks that the members hold.
    click_share: float
    purchase_share: float
    clicks: int
    purchasing: int
    robotic: int


def check_frame(frame: pd.DataFrame, fields: Sequence[str], what: str) -> None:
    """Refuse a frame that lacks the columns or was sliced by other fields."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise CalibrationError(
            f"the {what} frame lacks {', '.join(missing)}: pass the labelled click frame "
            "(models.dataset.load_labelled) with a `score` column of the model's scores"
        )
    if frame.empty:
        raise CalibrationError(f"the {what} frame has no clicks: choose a day with traffic")
    depth = {name.count("/") + 1 for name in frame["slice"].unique()}
    if depth != {len(fields)}:
        raise CalibrationError(
            f"the {what} frame's slices are not named by {'/'.join(fields)}: load it with the "
            "same slice fields as the calibration settings"
        )


def _under(ancestor: str, name: str) -> bool:
    return ancestor in slice_ancestors(name)


def _unit(
    name: str,
    members: Sequence[str],
    frame: pd.DataFrame,
    pooled: bool,
    weight: Floats,
    shrinkage: Shrinkage | None = None,
) -> SliceData:
    """``weight``: each click's weight in the FPR (purchasing clicks, or weighted stand-ins)."""
    mask = frame["slice"].isin(members).to_numpy()
    rows = frame.loc[mask]
    purchased = rows["purchased"].to_numpy(dtype=bool)
    robotic = rows["robotic"].to_numpy(dtype=bool)
    c = curve(rows["score"].to_numpy(dtype=np.float64), purchased, robotic, weight[mask])
    if shrinkage is not None:
        c = shrinkage.shrink(name, c)
    return SliceData(
        name=name,
        members=tuple(sorted(members)),
        pooled=pooled,
        curve=c,
        click_share=len(rows) / len(frame),
        purchase_share=float(weight[mask].sum() / weight.sum()),
        clicks=len(rows),
        purchasing=int(purchased.sum()),
        robotic=int(robotic.sum()),
    )


def _enough(frame: pd.DataFrame, min_purchases: int) -> None:
    total_purchases = int(frame["purchased"].sum())
    if total_purchases < min_purchases:
        raise CalibrationError(
            f"the calibration day has {total_purchases} purchasing clicks, fewer than "
            f"min_purchases={min_purchases}: calibrate on a day with more traffic (or lower "
            "SLIDR_CALIBRATION__MIN_PURCHASES)"
        )


def build_shrunk_slices(
    frame: pd.DataFrame, min_purchases: int, weight: Floats, reference: float, max_strength: float
) -> tuple[list[SliceData], list[str], Shrinkage]:
    """One unit per slice of ``frame``, each with its FPR curve shrunk toward its parent."""
    _enough(frame, min_purchases)
    shrinkage = fit_shrinkage(frame, weight, reference, max_strength)
    names = sorted(str(n) for n in frame["slice"].unique())
    units = [_unit(n, [n], frame, False, weight, shrinkage) for n in names]
    levels = ", ".join(f"level {d}: {m:,.0f}" for d, m in sorted(shrinkage.strength.items()))
    notes = [
        f"FPR curves shrunk toward the parent slice (prior strength in stand-in clicks, {levels}); "
        "own weight: "
        + ", ".join(f"{u.name} {shrinkage.weight[u.name]:.2f} ({u.purchasing})" for u in units)
    ]
    return units, notes, shrinkage


def build_slices(
    frame: pd.DataFrame, min_purchases: int, weight: Floats | None = None
) -> tuple[list[SliceData], list[str]]:
    """The decision units of ``frame`` and a note per pooled unit."""
    _enough(frame, min_purchases)
    if weight is None:
        weight = frame["purchased"].to_numpy(dtype=np.float64)
    grouped = frame.groupby("slice", observed=True)["purchased"].sum()
    purchases = {str(name): int(n) for name, n in grouped.items()}
    small = {name: n for name, n in purchases.items() if n < min_purchases}

    def enough(ancestor: str) -> bool:
        under = sum(n for name, n in purchases.items() if _under(ancestor, name))
        return under >= min_purchases

    # The nearest ancestor with enough purchases; "all" always has (checked above).
    targets = {next(a for a in list(slice_ancestors(name))[1:] if enough(a)) for name in small}
    # An ancestor pooled into a higher one disappears into it.
    targets = {t for t in targets if not any(o != t and _under(o, t) for o in targets)}
    groups: dict[str, list[str]] = {}
    for name in purchases:
        unit = next((t for t in sorted(targets) if _under(t, name)), name)
        groups.setdefault(unit, []).append(name)
    notes = [
        f"{', '.join(f'{m} ({small[m]})' for m in sorted(members) if m in small)} "
        f"below min_purchases={min_purchases} purchasing clicks: pooled into {unit}, whose "
        f"slices ({', '.join(sorted(members))}) share one threshold"
        for unit, members in sorted(groups.items())
        if unit in targets
    ]
    units = [
        _unit(unit, members, frame, unit in targets, weight)
        for unit, members in sorted(groups.items())
    ]
    return units, notes
