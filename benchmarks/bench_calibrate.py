"""Solve time of the slice-level calibration problem for 5, 50 and 500 slices.

    .venv/bin/python benchmarks/bench_calibrate.py [--slices 5,50,500] [--resolves 20]

Synthetic curves: two slices in three concave quadratics, one in three concave hulls of
``--pieces`` pieces. "first solve" compiles the problem (once per process); "re-solve" is the
daily recalibration case, new curves into the same compiled problem (median and worst of
``--resolves`` solves, each with freshly drawn curves and budget).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from rich.table import Table

from calibration.fit import FitMethod, IvrFit
from calibration.problem import SliceTerms, allocation_problem
from slidr.console import make_console


def synthetic_terms(n: int, pieces: int, rng: np.random.Generator) -> list[SliceTerms]:
    clicks = rng.dirichlet(np.ones(n))
    purchases = rng.dirichlet(np.ones(n))
    terms = []
    for i in range(n):
        lo = float(rng.uniform(0.0, 0.01))
        a, b, c = -rng.uniform(5, 50), rng.uniform(1, 5), rng.uniform(0.05, 0.3)
        knots = np.linspace(lo, 0.1, pieces + 1)
        values = (a * knots + b) * knots + c  # a concave curve: its chords make a hull
        slopes = np.diff(values) / np.diff(knots)
        fit = IvrFit(
            method=FitMethod.HULL if i % 3 == 0 else FitMethod.QUADRATIC,
            lo=lo,
            hi=0.1,
            quadratic=(a, b, c),
            slopes=tuple(map(float, slopes)),
            intercepts=tuple(map(float, values[:-1] - slopes * knots[:-1])),
            quadratic_rmse=0.0,
            hull_rmse=0.0,
        )
        terms.append(SliceTerms(float(clicks[i]), float(purchases[i]), fit))
    return terms


def measure(n: int, pieces: int, resolves: int, rng: np.random.Generator) -> list[str]:
    def budget() -> float:
        return float(rng.uniform(0.01, 0.05))

    started = time.perf_counter()
    problem = allocation_problem(n, pieces)
    problem.solve(synthetic_terms(n, pieces, rng), budget())
    first_ms = (time.perf_counter() - started) * 1e3
    times = []
    for _ in range(resolves):
        terms = synthetic_terms(n, pieces, rng)
        started = time.perf_counter()
        problem.solve(terms, budget())
        times.append((time.perf_counter() - started) * 1e3)
    return [
        str(n),
        str(problem.slots),
        f"{first_ms:,.1f}",
        f"{statistics.median(times):.1f}",
        f"{max(times):.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--slices", default="5,50,500")
    parser.add_argument("--pieces", type=int, default=16)
    parser.add_argument("--resolves", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    table = Table(
        "slices", "padded to", "first solve ms (compiles)", "re-solve ms, median",
        "re-solve ms, max",
        title=f"calibration problem, {args.pieces} hull pieces, Clarabel",
    )  # fmt: skip
    for n in (int(s) for s in args.slices.split(",")):
        table.add_row(*measure(n, args.pieces, args.resolves, rng))
    make_console().print(table)


if __name__ == "__main__":
    main()
