"""When the serving model's decisions deviate sharply from what was expected of it.

An IVR (overall or one slice's) deviates when the gap to the expected figure is both large
(``min_ivr_change``) and far beyond noise (``max_z`` binomial standard errors); windows smaller
than ``min_decisions`` (``min_slice_decisions`` for a slice) are not judged at all. The share of
clicks Triton failed to score and, when training recorded one, the score histogram (population
stability index) are judged too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from slidr.serving_figures import ServingFigures
from slidr.settings import MonitorSettings
from streams.monitor.window import Tally, WindowFigures

#: Floor of a probability in the variance and in the PSI, so that an expected 0 stays finite.
_EPS = 1e-3


@dataclass(frozen=True)
class Deviation:
    rule: str
    scope: str
    observed: float
    #: The expected figure, or the limit when ``relation`` is "limit".
    reference: float
    decisions: int
    relation: str = "expected"

    def __str__(self) -> str:
        return (
            f"{self.rule} of {self.scope} is {self.observed:.3f}, {self.relation} "
            f"{self.reference:.3f} ({self.decisions} decisions)"
        )


def sharp(observed: float, expected: float, n: int, limits: MonitorSettings) -> bool:
    gap = abs(observed - expected)
    p = min(max(expected, _EPS), 1 - _EPS)
    return gap >= limits.min_ivr_change and gap / math.sqrt(p * (1 - p) / n) >= limits.max_z


def psi(observed: list[float], expected: list[float]) -> float:
    """Population stability index of two histograms given as shares."""
    total = sum(expected) or 1.0
    index = 0.0
    for o, e in zip(observed, expected, strict=True):
        o, e = max(o, _EPS), max(e / total, _EPS)
        index += (o - e) * math.log(o / e)
    return index


def _ivr(
    scope: str, tally: Tally, expected: float, minimum: int, limits: MonitorSettings
) -> Deviation | None:
    if tally.scored < minimum or not sharp(tally.ivr, expected, tally.scored, limits):
        return None
    return Deviation("IVR", scope, tally.ivr, expected, tally.scored)


def model_errors(total: Tally, limits: MonitorSettings, minimum: int) -> Deviation | None:
    """More than ``max_degraded_share`` of at least ``minimum`` decisions failed open because
    Triton did not score them (Redis outages do not count: no model is to blame)."""
    share = total.model_error_share
    if total.decisions < minimum or share <= limits.max_degraded_share:
        return None
    return Deviation(
        "model-error share", "all", share, limits.max_degraded_share, total.decisions, "limit"
    )


def deviations(
    window: WindowFigures, baseline: ServingFigures | None, limits: MonitorSettings
) -> list[Deviation]:
    """Every sharp deviation of ``window`` from ``baseline`` (None: only the error share)."""
    total = window.total
    errors = model_errors(total, limits, limits.min_decisions)
    found: list[Deviation] = [errors] if errors is not None else []
    if baseline is None:
        return found
    candidates = [_ivr("all", total, baseline.ivr, limits.min_decisions, limits)]
    candidates += [
        _ivr(name, tally, baseline.slices[name], limits.min_slice_decisions, limits)
        for name, tally in sorted(window.slices.items())
        if name in baseline.slices
    ]
    found += [d for d in candidates if d is not None]
    if baseline.score_histogram and total.scored >= limits.min_decisions:
        index = psi(total.score_shares, baseline.score_histogram)
        if index > limits.max_score_psi:
            found.append(
                Deviation("score PSI", "all", index, limits.max_score_psi, total.scored, "limit")
            )
    return found


def observed(window: WindowFigures, limits: MonitorSettings) -> ServingFigures:
    """What the window shows, as figures a later version can be judged against."""
    return ServingFigures(
        ivr=window.total.ivr,
        slices={
            name: tally.ivr
            for name, tally in sorted(window.slices.items())
            if tally.scored >= limits.min_slice_decisions
        },
        decisions=window.total.scored,
        at=datetime.now(UTC),
    )
