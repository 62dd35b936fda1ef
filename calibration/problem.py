"""The joint operating-point problem over all slices, compiled once and re-solved.

    maximise    sum_s w_s IVR_s(f_s)                 combined IVR (w_s: slice click share)
    subject to  sum_s p_s f_s <= budget              combined FPR (p_s: purchase share)
                lo_s <= f_s <= hi_s                  lo_s: FPR reaching the coverage floor

IVR_s is a concave quadratic or the minimum of affine pieces; both enter through one
hypograph form, ``sum_s w_s (a_s f_s^2 + b_s f_s + t_s)`` with ``t_s <= slope_sk f_s +
intercept_sk``: a quadratic slice has a single flat piece at ``c_s``, a hull slice has
``a_s = b_s = 0``. Every datum is a ``cp.Parameter`` (DPP), padded to a fixed number of slices
and pieces, so a re-solve with new curves reuses the compiled problem.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cvxpy as cp
import numpy as np
from cvxpy.atoms.affine.binary_operators import multiply
from cvxpy.atoms.affine.reshape import reshape
from cvxpy.atoms.affine.sum import sum as total
from cvxpy.atoms.elementwise.power import power

from calibration.errors import CalibrationError
from calibration.fit import FitMethod, IvrFit
from slidr.metrics import Floats

#: Statuses whose solution is used; anything else keeps the last good thresholds.
ACCEPTED = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
#: Interior point, accurate to ~1e-8 and as fast here; OSQP warned of inaccurate solutions
#: on 50-slice problems (benchmarks/bench_calibrate.py).
SOLVER = cp.CLARABEL


class SolveFailed(CalibrationError):
    """The solver gave no usable solution."""


@dataclass(frozen=True)
class SliceTerms:
    """What the problem needs of one slice."""

    click_share: float
    purchase_share: float
    fit: IvrFit


class AllocationProblem:
    """One compiled problem for up to ``slots`` slices of up to ``pieces`` hull pieces each."""

    def __init__(self, slots: int, pieces: int) -> None:
        self.slots, self.pieces = slots, pieces
        self.w = cp.Parameter(slots, nonneg=True, name="click_share")
        self.wa = cp.Parameter(slots, nonpos=True, name="w_times_a")
        self.wb = cp.Parameter(slots, name="w_times_b")
        self.p = cp.Parameter(slots, nonneg=True, name="purchase_share")
        self.lo = cp.Parameter(slots, nonneg=True, name="fpr_floor")
        self.hi = cp.Parameter(slots, nonneg=True, name="fpr_cap")
        self.slopes = cp.Parameter((slots, pieces), name="hull_slopes")
        self.intercepts = cp.Parameter((slots, pieces), name="hull_intercepts")
        self.budget = cp.Parameter(nonneg=True, name="fpr_budget")
        self.f = cp.Variable(slots, name="fpr")
        t = cp.Variable(slots, name="ivr_hypograph")
        f_by_piece = reshape(self.f, (slots, 1), order="C") @ np.ones((1, pieces))
        objective = total(
            multiply(self.wa, power(self.f, 2)) + multiply(self.wb, self.f) + multiply(self.w, t)
        )
        constraints = [
            self.p @ self.f <= self.budget,
            self.f >= self.lo,
            self.f <= self.hi,
            reshape(t, (slots, 1), order="C") @ np.ones((1, pieces))
            <= multiply(self.slopes, f_by_piece) + self.intercepts,
        ]
        self.problem = cp.Problem(cp.Maximize(objective), constraints)

    def solve(self, terms: Sequence[SliceTerms], budget: float) -> Floats:
        """Each slice's FPR operating point; raises SolveFailed without a usable solution."""
        n = len(terms)
        if n > self.slots:
            raise ValueError(f"{n} slices do not fit a problem built for {self.slots}")
        self._load(terms, budget)
        try:
            with warnings.catch_warnings():
                # Past ~200 slices cvxpy suggests giving up DPP; re-solves still skip compiling.
                warnings.filterwarnings("ignore", "Your problem has too many parameters")
                # Cold: a warm start reuses the solver of the previous data, and on flat
                # stretches of the curves the answer then depends on what was solved before.
                self.problem.solve(solver=SOLVER, warm_start=False)  # type: ignore[no-untyped-call]
        except cp.error.SolverError as exc:
            raise SolveFailed(f"the solver failed: {exc}") from exc
        value = self.f.value
        if self.problem.status not in ACCEPTED or value is None:
            raise SolveFailed(f"the solver ended with status {self.problem.status!r}")
        lo = np.array([t.fit.lo for t in terms])
        hi = np.array([t.fit.hi for t in terms])
        chosen: Floats = np.clip(np.asarray(value[:n], dtype=np.float64), lo, hi)
        return chosen

    def _load(self, terms: Sequence[SliceTerms], budget: float) -> None:
        m, k = self.slots, self.pieces
        w, wa, wb, p, lo, hi = (np.zeros(m) for _ in range(6))
        slopes, intercepts = np.zeros((m, k)), np.zeros((m, k))
        for i, term in enumerate(terms):
            fit = term.fit
            w[i], p[i], lo[i], hi[i] = term.click_share, term.purchase_share, fit.lo, fit.hi
            if fit.method is FitMethod.QUADRATIC:
                a, b, c = fit.quadratic
                wa[i], wb[i] = term.click_share * a, term.click_share * b
                intercepts[i] = c
            else:
                # Repeating the last piece pads without changing the minimum.
                used = len(fit.slopes)
                slopes[i, :used], intercepts[i, :used] = fit.slopes, fit.intercepts
                slopes[i, used:], intercepts[i, used:] = fit.slopes[-1], fit.intercepts[-1]
        self.w.value, self.wa.value, self.wb.value, self.p.value = w, wa, wb, p
        self.lo.value, self.hi.value = lo, hi
        self.slopes.value, self.intercepts.value = slopes, intercepts
        self.budget.value = budget


def _slots(n: int) -> int:
    """Slices padded to a power of two (at least 8): similar slice counts share a problem."""
    return max(8, 1 << (max(n, 1) - 1).bit_length())


@lru_cache(maxsize=8)
def _compiled(slots: int, pieces: int) -> AllocationProblem:
    return AllocationProblem(slots, pieces)


def allocation_problem(n_slices: int, pieces: int) -> AllocationProblem:
    """The process's compiled problem for ``n_slices`` slices (built on first use)."""
    return _compiled(_slots(n_slices), pieces)
