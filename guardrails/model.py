"""Model guardrails: refuse a candidate whose held-out figures are out of bounds.

Inputs are IVR, FPR and robotic coverage (``slidr.metrics.Rates``) per slice, and overall under
the key ``"all"``, each at that model's calibrated thresholds on the held-out day. The candidate
must stay within absolute bounds and the FPR budget, and must not move any slice too far from
what the serving model does on the same day. When the serving model is itself over the FPR
budget on that day (with the same confidence), a candidate may lower IVR by any amount: the
change limit guards a working model against a drifting successor, and keeping a model that
invalidates too many humans is the harm the budget exists to prevent.

When the monitor has re-solved the serving model's thresholds intraday (calibration/
intraday.py), the serving model is one model at two operating points: as it serves (the
re-solve's) and as the daily cycle calibrated it. A candidate is compared with the nearer of
the two on IVR and with the higher on FPR, so a tightening does not lock out a successor that
lands where the serving model was calibrated, nor one that matches the tightening.

The budget and the ceiling judge the FPR the budget binds (``BudgetFpr``): the purchaser FPR of
the rates by default, or the estimated human FPR the caller passes (``SLIDR_CALIBRATION__
FPR_TARGET=human``, calibration/human.py), a share of Kish's effective number of stand-ins.

Every figure is a rate on a sample of the day's clicks (at 1 % FPR of 500 purchasing clicks,
five of them), so a check refuses only when its bound is exceeded with the stated confidence
(``GuardrailSettings.confidence``): the one-sided Wilson bound of the rate (Newcombe's interval
for a change between two rates) lies beyond it. A point estimate beyond the bound, but not
with that confidence, is reported ``unsure`` and does not refuse. Every check carries the
two-sided interval and how sure it is that the bound is exceeded (the score test's one-sided
confidence). The rates are unweighted shares of clicks, so the click counts are the sample
sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

from guardrails.report import Check, GuardrailError, GuardrailReport, Status
from slidr.metrics import (
    REPORT_CONFIDENCE,
    Rates,
    difference_interval,
    wilson,
    z_one_sided,
    z_two_sided,
)
from slidr.settings import GuardrailSettings

#: An interval at a given z: (low, high).
Bounds = Callable[[float], tuple[float, float]]
_Z_MAX = 8.0

#: The key of the overall figures in a rates mapping.
OVERALL = "all"


def _out(bounds: Bounds, z: float, low: float | None, high: float | None) -> bool:
    """The one-sided interval at ``z`` lies wholly beyond a bound."""
    lo, hi = bounds(z)
    return (high is not None and lo > high) or (low is not None and hi < low)


def _inside(bounds: Bounds, z: float, low: float | None, high: float | None) -> bool:
    lo, hi = bounds(z)
    return (high is None or hi <= high) and (low is None or lo >= low)


def _largest_z(holds: Callable[[float], bool]) -> float:
    """The largest z in [0, _Z_MAX] at which ``holds`` (monotone: true up to some z)."""
    if holds(_Z_MAX):
        return _Z_MAX
    a, b = 0.0, _Z_MAX
    for _ in range(40):
        mid = (a + b) / 2
        a, b = (mid, b) if holds(mid) else (a, mid)
    return a


def sure_out(bounds: Bounds, low: float | None, high: float | None) -> float:
    """How sure it is that the true figure is beyond a bound: the one-sided confidence at
    which its interval just clears the bound (below 0.5 when the point is within)."""
    phi = NormalDist().cdf
    if _out(bounds, 0.0, low, high):
        return phi(_largest_z(lambda z: _out(bounds, z, low, high)))
    if _inside(bounds, 0.0, low, high):
        return 1.0 - phi(_largest_z(lambda z: _inside(bounds, z, low, high)))
    return 0.5


def judged(
    name: str,
    observed: float,
    bounds: Bounds,
    settings: GuardrailSettings,
    *,
    low: float | None = None,
    high: float | None = None,
    bound: str = "",
    detail: str = "",
) -> Check:
    """A check of an estimated figure: failed when out of bounds with confidence, unsure when
    only its point estimate is, else passed; with its interval and how sure."""
    limits = [f">= {low:g}"] if low is not None else []
    limits += [f"<= {high:g}"] if high is not None else []
    bound = bound or " and ".join(limits)
    if math.isnan(observed):
        return Check(name, Status.FAILED, observed, bound, "not measurable on the held-out day")
    if _out(bounds, z_one_sided(settings.confidence), low, high):
        status = Status.FAILED
    elif _out(bounds, 0.0, low, high):
        status = Status.UNSURE
    else:
        status = Status.PASSED
    interval = bounds(z_two_sided(REPORT_CONFIDENCE))
    sure = sure_out(bounds, low, high)
    return Check(name, status, observed, bound, detail, interval, sure)


@dataclass(frozen=True)
class BudgetFpr:
    """The FPR the budget binds, overall: a share of ``n`` clicks (purchasing clicks, or the
    effective size of the weighted human stand-ins), and what it is, for the check's detail."""

    value: float
    n: float
    #: e.g. "purchaser FPR on 464 purchasing clicks".
    label: str


def purchaser_fpr(overall: Rates) -> BudgetFpr:
    """The article's budget figure: the share of purchasing clicks invalidated."""
    label = f"purchaser FPR on {overall.purchasing:,} purchasing clicks"
    return BudgetFpr(overall.fpr, overall.purchasing, label)


def _rate_bounds(rate: float, n: float) -> Bounds:
    return lambda z: wilson(rate, n, z)


def _bounded(
    name: str,
    observed: float,
    n: float,
    settings: GuardrailSettings,
    *,
    low: float | None = None,
    high: float | None = None,
    detail: str = "",
) -> Check:
    """``observed``, a share of ``n`` clicks, within [low, high]; NaN fails."""
    bounds = _rate_bounds(observed, n)
    return judged(name, observed, bounds, settings, low=low, high=high, detail=detail)


def _fpr_budget(fpr: BudgetFpr, settings: GuardrailSettings, budget: float) -> Check:
    slack = settings.fpr_budget_slack
    return _bounded(
        "fpr_budget",
        fpr.value,
        fpr.n,
        settings,
        high=budget + slack,
        detail=f"budget {budget:g} + slack {slack:g}; {fpr.label}",
    )


def _absolute(
    overall: Rates, fpr: BudgetFpr, settings: GuardrailSettings, budget: float
) -> list[Check]:
    s = settings
    return [
        _bounded("ivr", overall.ivr, overall.clicks, s, low=s.min_ivr, high=s.max_ivr),
        _fpr_budget(fpr, s, budget),
        _bounded("fpr_ceiling", fpr.value, fpr.n, s, high=s.max_fpr, detail=fpr.label),
        _bounded("coverage", overall.coverage, overall.robotic, s, low=s.min_coverage),
    ]


def _change_bounds(candidate: tuple[float, int], serving: tuple[float, int]) -> Bounds:
    return lambda z: difference_interval(candidate, serving, z)


def _reference(
    serving: Rates, calibrated: Rates | None, distance: Callable[[Rates], float]
) -> tuple[Rates, str]:
    """The serving model's figures a change is measured from, and how the detail names them:
    as it serves, or as it was calibrated when that has the smaller ``distance``."""
    if calibrated is None or calibrated.clicks == 0 or calibrated == serving:
        return serving, "serving"
    if distance(calibrated) < distance(serving):
        return calibrated, "serving as calibrated"
    return serving, "serving (re-solved intraday)"


def _change(
    name: str,
    candidate: Rates,
    serving: Rates,
    settings: GuardrailSettings,
    *,
    serving_over_budget: bool = False,
    calibrated: Rates | None = None,
) -> list[Check]:
    if candidate.clicks == 0 or serving.clicks == 0:
        return [Check(f"change:{name}", Status.SKIPPED, None, "", "no clicks on the held-out day")]
    limit = settings.max_ivr_change
    ref, label = _reference(serving, calibrated, lambda r: abs(r.ivr - candidate.ivr))
    detail = f"candidate {candidate.ivr:.4f} vs {label} {ref.ivr:.4f}"
    if serving_over_budget:
        detail += "; the serving model is over its FPR budget: any decrease allowed"
    checks = [
        judged(
            f"ivr_change:{name}",
            candidate.ivr - ref.ivr,
            _change_bounds((candidate.ivr, candidate.clicks), (ref.ivr, ref.clicks)),
            settings,
            low=None if serving_over_budget else -limit,
            high=limit,
            bound=f"<= {limit:g}" if serving_over_budget else f"|change| <= {limit:g}",
            detail=detail,
        )
    ]
    ref, label = _reference(serving, calibrated, lambda r: -r.fpr)  # the higher FPR
    purchasing = min(candidate.purchasing, ref.purchasing)
    if purchasing < settings.min_slice_purchases:
        checks.append(
            Check(
                f"fpr_increase:{name}",
                Status.SKIPPED,
                None,
                f"<= {settings.max_fpr_increase:g}",
                f"{purchasing} purchasing clicks, fewer than {settings.min_slice_purchases}",
            )
        )
        return checks
    checks.append(
        judged(
            f"fpr_increase:{name}",
            candidate.fpr - ref.fpr,
            _change_bounds((candidate.fpr, candidate.purchasing), (ref.fpr, ref.purchasing)),
            settings,
            high=settings.max_fpr_increase,
            detail=f"candidate {candidate.fpr:.4f} vs {label} {ref.fpr:.4f}",
        )
    )
    return checks


def check_candidate(
    candidate: Mapping[str, Rates],
    serving: Mapping[str, Rates] | None,
    budget: float,
    settings: GuardrailSettings,
    *,
    candidate_fpr: BudgetFpr | None = None,
    serving_fpr: BudgetFpr | None = None,
    serving_calibrated: Mapping[str, Rates] | None = None,
) -> GuardrailReport:
    """The candidate's held-out figures against the bounds, the budget and the serving model.

    ``serving`` is None when nothing serves yet (the first model): no change is compared.
    A slice present on one side only is reported as skipped. ``candidate_fpr`` and
    ``serving_fpr`` are the overall FPR the budget binds for each model; by default their
    purchaser FPR. ``serving_calibrated``: the serving model at its daily calibration's
    thresholds when it serves an intraday re-solve's.
    """
    if not 0.0 < budget <= 1.0:
        raise GuardrailError(f"FPR budget {budget!r} must be in (0, 1], e.g. 0.02")
    checks: list[Check] = []
    if OVERALL in candidate:
        mine = candidate_fpr or purchaser_fpr(candidate[OVERALL])
        checks += _absolute(candidate[OVERALL], mine, settings, budget)
    else:
        missing = f"no {OVERALL!r} entry in the candidate's rates"
        checks.append(Check("overall", Status.FAILED, None, "present", missing))
    if serving is None:
        checks.append(Check("change", Status.SKIPPED, None, "", "no serving model to compare with"))
        return GuardrailReport("candidate model", tuple(checks))
    incumbent = serving.get(OVERALL)
    theirs = serving_fpr or (purchaser_fpr(incumbent) if incumbent is not None else None)
    over = theirs is not None and _fpr_budget(theirs, settings, budget).status is Status.FAILED
    # Overall first, then the slices in name order.
    for name in sorted(set(candidate) | set(serving), key=lambda n: (n != OVERALL, n)):
        if name in candidate and name in serving:
            checks += _change(
                name,
                candidate[name],
                serving[name],
                settings,
                serving_over_budget=over,
                calibrated=(serving_calibrated or {}).get(name),
            )
        else:
            side = "candidate" if name not in candidate else "serving model"
            checks.append(
                Check(f"change:{name}", Status.SKIPPED, None, "", f"no figures for the {side}")
            )
    return GuardrailReport("candidate model", tuple(checks))
