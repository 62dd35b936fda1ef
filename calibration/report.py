"""A calibration for people: ``calibration-report.json``, the plots, and terminal tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from calibration.calibrate import CalibrationOutcome, Policy, solved_at_phrase
from calibration.plots import plot_slices
from slidr.console import make_console
from slidr.metrics import REPORT_CONFIDENCE, Rates, TruthRates, z_two_sided

REPORT_FILE = "calibration-report.json"
_POLICY_TITLES = {
    Policy.GLOBAL_KNEE: "global, knee",
    Policy.GLOBAL_SAME_FPR: "global, same FPR",
    Policy.GLOBAL_HELD_OUT_FPR: "global, same FPR*",
    Policy.SLICE_LEVEL: "slice-level",
}


def _clean(value: Any) -> Any:
    """JSON without NaN: a rate over zero clicks is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def report_of(outcome: CalibrationOutcome) -> dict[str, Any]:
    slices = {}
    for sf in outcome.fits:
        point = outcome.points.get(sf.unit.name)
        slices[sf.unit.name] = {
            "members": list(sf.unit.members),
            "pooled": sf.unit.pooled,
            "clicks": sf.unit.clicks,
            "purchasing": sf.unit.purchasing,
            "robotic": sf.unit.robotic,
            "click_share": sf.unit.click_share,
            "purchase_share": sf.unit.purchase_share,
            "fit": {
                "method": sf.fit.method.value,
                "fpr_range": [sf.fit.lo, sf.fit.hi],
                "quadratic": list(sf.fit.quadratic),
                "quadratic_rmse": sf.fit.quadratic_rmse,
                "hull_pieces": len(sf.fit.slopes),
                "hull_rmse": sf.fit.hull_rmse,
            },
            "operating_point": None if point is None else vars(point),
        }
    report: dict[str, Any] = _clean(
        {
            "status": outcome.status.value,
            "message": outcome.message,
            "model_version": outcome.model_version,
            "settings": outcome.settings.model_dump(mode="json"),
            "min_feasible_budget": outcome.min_feasible_budget,
            "solved_budget": outcome.solved_budget,
            "thresholds": outcome.thresholds,
            "notes": outcome.notes,
            "data_window": outcome.windows,
            "solve_ms": outcome.solve_ms,
            "fpr_estimates": {
                day: {name: {k: e.as_dict() for k, e in f.items()} for name, f in figures.items()}
                for day, figures in outcome.fpr_estimates.items()
            },
            "created_at": outcome.created_at.isoformat(),
            "slices": slices,
            "comparison": {
                policy.value: {
                    "thresholds": result.thresholds,
                    "calibration_day": result.calibration_day.as_dict(),
                    "evaluation_day": result.evaluation_day.as_dict(),
                }
                for policy, result in outcome.comparison.items()
            },
        }
    )
    return report


def write_report(outcome: CalibrationOutcome, report_dir: Path) -> list[Path]:
    """The JSON report and one plot per slice in ``report_dir``; their paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / REPORT_FILE
    path.write_text(json.dumps(report_of(outcome), indent=2, allow_nan=False) + "\n")
    return [path, *plot_slices(outcome, report_dir)]


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2%}"


SLICE_COLUMNS = (
    "slice", "clicks", "purchasing", "fit", "RMSE", "FPR floor", "FPR", "threshold", "IVR",
    "coverage",
)  # fmt: skip


def slice_title(outcome: CalibrationOutcome) -> str:
    return f"operating points, calibration day {' .. '.join(outcome.windows['calibrate'])}"


def slice_rows(outcome: CalibrationOutcome) -> list[list[str]]:
    """The cells of ``slice_table``: each slice's fit and chosen threshold."""
    rows = []
    for sf in outcome.fits:
        point = outcome.points.get(sf.unit.name)
        name = sf.unit.name + (f" <- {', '.join(sf.unit.members)}" if sf.unit.pooled else "")
        chosen = (
            ["-"] * 4
            if point is None
            else [_pct(point.fpr), f"{point.threshold:.4f}", _pct(point.ivr), _pct(point.coverage)]
        )
        rows.append([
            name, f"{sf.unit.clicks:,}", f"{sf.unit.purchasing:,}", sf.fit.method.value,
            f"{sf.fit.rmse:.4f}", _pct(sf.fit.lo), *chosen,
        ])  # fmt: skip
    return rows


def slice_table(outcome: CalibrationOutcome) -> Table:
    table = Table(
        Column(SLICE_COLUMNS[0], no_wrap=True), *SLICE_COLUMNS[1:], title=slice_title(outcome)
    )
    for row in slice_rows(outcome):
        table.add_row(*row)
    return table


def _with_interval(r: Rates, metric: str) -> str:
    """A rate and its 95 % Wilson interval, in percent: "1.95% [1.31, 2.89]"."""
    value = float(getattr(r, metric))
    if math.isnan(value):
        return "-"
    low, high = r.interval(metric, z_two_sided(REPORT_CONFIDENCE))
    return f"{value:.2%} [{low * 100:.2f}, {high * 100:.2f}]"


def _rates_cells(r: Rates, truth: TruthRates | None) -> list[str]:
    cells = [_with_interval(r, m) for m in ("ivr", "fpr", "coverage")]
    if truth is not None:
        cells += [_pct(truth.bot_recall), _pct(truth.human_fpr)]
    return cells


def policy_title(policy: Policy) -> str:
    return _POLICY_TITLES[policy]


def comparison_columns(outcome: CalibrationOutcome) -> list[str]:
    results = list(outcome.comparison.values())
    has_truth = bool(results) and results[0].evaluation_day.truth is not None
    return ["policy", "slice", "IVR", "FPR", "coverage"] + (
        ["bot recall", "human FPR"] if has_truth else []
    )


def comparison_title(outcome: CalibrationOutcome) -> str:
    return f"held-out day {' .. '.join(outcome.windows['evaluate'])}"


def comparison_rows(outcome: CalibrationOutcome) -> list[list[str]]:
    """The cells of ``comparison_table``: per policy, an "all" row, then one per slice."""
    rows = []
    for result in outcome.comparison.values():
        day = result.evaluation_day
        rows.append([policy_title(result.policy), "all", *_rates_cells(day.overall, day.truth)])
        for name, r in day.per_slice.items():
            truth = None if day.per_slice_truth is None else day.per_slice_truth[name]
            rows.append(["", name, *_rates_cells(r, truth)])
    return rows


def comparison_table(outcome: CalibrationOutcome) -> Table:
    columns = comparison_columns(outcome)
    table = Table(
        Column(columns[0], no_wrap=True), Column(columns[1], no_wrap=True), *columns[2:],
        title=comparison_title(outcome),
    )  # fmt: skip
    for row in comparison_rows(outcome):
        table.add_row(*row, style="bold" if row[1] == "all" else None)
    return table


def fpr_lines(outcome: CalibrationOutcome) -> list[str]:
    """Both FPRs of the served thresholds, each day, with 95 % intervals."""
    lines = []
    for day, figures in outcome.fpr_estimates.items():
        cells = []
        for name in sorted(figures, key=lambda n: (n != "all", n)):
            p, h = figures[name]["purchaser"], figures[name]["human"]
            cells.append(
                f"{name}: purchaser {_pct(p.value)} [{_pct(p.low)}, {_pct(p.high)}], "
                f"human (est.) {_pct(h.value)} [{_pct(h.low)}, {_pct(h.high)}]"
            )
        s = outcome.settings
        margin = solved_at_phrase(s, outcome.solved_budget)
        lines.append(
            f"FPR, {day.replace('_', ' ')} (budget {s.fpr_budget:.2%} on the "
            f"{s.fpr_target} FPR{'; ' + margin if margin else ''}): " + "; ".join(cells)
        )
    return lines


def print_table(outcome: CalibrationOutcome, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(slice_table(outcome))
    console.print(comparison_table(outcome))
    if Policy.GLOBAL_HELD_OUT_FPR in outcome.comparison:
        console.print(
            "* picked on the held-out day at the slice-level thresholds' FPR there: the "
            "comparison at equal FPR, not a policy one could deploy"
        )
    for line in fpr_lines(outcome):
        console.print(line)
    for note in outcome.notes:
        console.print(f"note: {note}")
    style = "green" if outcome.calibrated else "red"
    console.print(f"[{style}]{outcome.message}[/] (solve {outcome.solve_ms:.1f} ms)")
