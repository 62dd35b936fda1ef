"""Model guardrails: refuse a candidate whose held-out figures are out of bounds.

Inputs are IVR, FPR and robotic coverage (``slidr.metrics.Rates``) per slice, and overall under
the key ``"all"``, each at that model's calibrated thresholds on the held-out day. The candidate
must stay within absolute bounds and the FPR budget, and must not move any slice too far from
what the serving model does on the same day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from guardrails.report import Check, GuardrailError, GuardrailReport, Status
from slidr.metrics import Rates
from slidr.settings import GuardrailSettings

#: The key of the overall figures in a rates mapping.
OVERALL = "all"


def _bounded(
    name: str,
    observed: float,
    *,
    low: float | None = None,
    high: float | None = None,
    detail: str = "",
) -> Check:
    """``observed`` within [low, high]; NaN (nothing to measure on the day) fails."""
    limits = [f">= {low:g}"] if low is not None else []
    limits += [f"<= {high:g}"] if high is not None else []
    bound = " and ".join(limits)
    if math.isnan(observed):
        return Check(name, Status.FAILED, observed, bound, "not measurable on the held-out day")
    ok = (low is None or observed >= low) and (high is None or observed <= high)
    return Check(name, Status.PASSED if ok else Status.FAILED, observed, bound, detail)


def _absolute(overall: Rates, settings: GuardrailSettings, budget: float) -> list[Check]:
    slack = settings.fpr_budget_slack
    return [
        _bounded("ivr", overall.ivr, low=settings.min_ivr, high=settings.max_ivr),
        _bounded(
            "fpr_budget",
            overall.fpr,
            high=budget + slack,
            detail=f"budget {budget:g} + slack {slack:g}; {overall.purchasing:,} purchasing clicks",
        ),
        _bounded("fpr_ceiling", overall.fpr, high=settings.max_fpr),
        _bounded("coverage", overall.coverage, low=settings.min_coverage),
    ]


def _change(
    name: str, candidate: Rates, serving: Rates, settings: GuardrailSettings
) -> list[Check]:
    if candidate.clicks == 0 or serving.clicks == 0:
        return [Check(f"change:{name}", Status.SKIPPED, None, "", "no clicks on the held-out day")]
    ivr = candidate.ivr - serving.ivr
    checks = [
        Check(
            f"ivr_change:{name}",
            Status.PASSED if abs(ivr) <= settings.max_ivr_change else Status.FAILED,
            ivr,
            f"|change| <= {settings.max_ivr_change:g}",
            f"candidate {candidate.ivr:.4f} vs serving {serving.ivr:.4f}",
        )
    ]
    purchasing = min(candidate.purchasing, serving.purchasing)
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
    fpr = candidate.fpr - serving.fpr
    checks.append(
        Check(
            f"fpr_increase:{name}",
            Status.PASSED if fpr <= settings.max_fpr_increase else Status.FAILED,
            fpr,
            f"<= {settings.max_fpr_increase:g}",
            f"candidate {candidate.fpr:.4f} vs serving {serving.fpr:.4f}",
        )
    )
    return checks


def check_candidate(
    candidate: Mapping[str, Rates],
    serving: Mapping[str, Rates] | None,
    budget: float,
    settings: GuardrailSettings,
) -> GuardrailReport:
    """The candidate's held-out figures against the bounds, the budget and the serving model.

    ``serving`` is None when nothing serves yet (the first model): no change is compared.
    A slice present on one side only is reported as skipped.
    """
    if not 0.0 < budget <= 1.0:
        raise GuardrailError(f"FPR budget {budget!r} must be in (0, 1], e.g. 0.02")
    checks: list[Check] = []
    if OVERALL in candidate:
        checks += _absolute(candidate[OVERALL], settings, budget)
    else:
        missing = f"no {OVERALL!r} entry in the candidate's rates"
        checks.append(Check("overall", Status.FAILED, None, "present", missing))
    if serving is None:
        checks.append(Check("change", Status.SKIPPED, None, "", "no serving model to compare with"))
        return GuardrailReport("candidate model", tuple(checks))
    # Overall first, then the slices in name order.
    for name in sorted(set(candidate) | set(serving), key=lambda n: (n != OVERALL, n)):
        if name in candidate and name in serving:
            checks += _change(name, candidate[name], serving[name], settings)
        else:
            side = "candidate" if name not in candidate else "serving model"
            checks.append(
                Check(f"change:{name}", Status.SKIPPED, None, "", f"no figures for the {side}")
            )
    return GuardrailReport("candidate model", tuple(checks))
