"""The daily cycle as one self-contained HTML page: ``report.html`` in the run directory.

It shows what the cycle's other files hold, from the same objects they were written from: the
steps, each guardrail report with its numbers, the model table at equal FPR
(``models.report.summary_rows``), the per-slice thresholds and policy comparison
(``calibration.report``), the candidate and serving figures on the later day, and every plot
embedded as a ``data:`` URI, so the page can be mailed or archived alone.

Python only arranges strings; the markup is ``templates/cycle.html.j2``, rendered by Jinja2
with autoescaping, so every value (a check's detail, a step's error) is shown as text.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from calibration.report import (
    SLICE_COLUMNS,
    comparison_columns,
    comparison_rows,
    comparison_title,
    fpr_lines,
    slice_rows,
    slice_title,
)
from guardrails.report import GuardrailReport, Status, format_value
from models.report import (
    COVERAGE_FPR_PLOT,
    HEADLINE_FPR,
    HOURLY_IVR_PLOT,
    IVR_FPR_PLOT,
    SUMMARY_CAPTION,
    summary_columns,
    summary_rows,
    summary_title,
)

if TYPE_CHECKING:
    from calibration.calibrate import CalibrationOutcome
    from models.daily import CycleResult
    from models.evaluate import Evaluation

PAGE_FILE = "report.html"
_TEMPLATE = "cycle.html.j2"
_PLOT_CAPTIONS = {
    IVR_FPR_PLOT: "IVR against FPR, every model, overall and per slice (held-out day)",
    COVERAGE_FPR_PLOT: "Robotic coverage against FPR, every model (held-out day)",
    HOURLY_IVR_PLOT: f"IVR per hour of day at FPR <= {HEADLINE_FPR:.1%} (held-out day)",
}
#: Failed checks first: they are what a reader opens the page for.
_STATUS_ORDER = {Status.FAILED: 0, Status.UNSURE: 1, Status.SKIPPED: 2, Status.PASSED: 3}


@dataclass
class CycleParts:
    """What a cycle produced on its way, for the page; a stopped cycle leaves some empty."""

    guardrails: list[GuardrailReport] = field(default_factory=list)
    evaluation: Evaluation | None = None
    calibration: CalibrationOutcome | None = None
    #: PNG files to embed, in reading order.
    plots: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("models", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _figure(value: Any) -> str:
    """A headline figure: counts with separators, rates as percentages."""
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2%}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return "[" + ", ".join(_figure(v) for v in value) + "]"
    return str(value)


def _figures_table(figures: dict[str, dict[str, Any]], day: str) -> _Table | None:
    if not figures:
        return None
    keys: list[str] = []
    for values in figures.values():
        keys += [k for k in values if k not in keys]
    rows = [[name, *(_figure(values.get(k)) for k in keys)] for name, values in figures.items()]
    return _Table(
        title=f"candidate and serving version on the later held-out day {day}, each at its "
        "own thresholds (the serving one also as calibrated, or recalibrated, when measured)",
        columns=["model", *(k.replace("_", " ") for k in keys)],
        rows=rows,
    )


def _verdict(report: GuardrailReport) -> str:
    """Passed, passed with unsure checks, or refused; with how sure the weakest verdict is."""
    if report.refused:
        sure = min((c.sure for c in report.refusing if c.sure is not None), default=None)
        how = (
            ""
            if sure is None
            else f"; the least sure refusing check is out of bounds with {sure:.1%} confidence"
        )
        unsure = len(report.failed) - len(report.refusing)
        counted = f", {unsure} of them unsure" if unsure else ""
        return f"refused ({len(report.failed)} failed){counted}{how}"
    unsure = len(report.failed)
    if unsure:
        return f"passed; {unsure} unsure: out of bounds on the point estimate only (not refused)"
    return "passed"


def _guardrail(report: GuardrailReport) -> dict[str, Any]:
    checks = sorted(report.checks, key=lambda c: _STATUS_ORDER[c.status])
    return {
        "subject": report.subject,
        "passed": not report.refused,
        "verdict": _verdict(report),
        "counts": {s.value: sum(c.status is s for c in report.checks) for s in Status},
        "checks": [
            {
                "name": c.name,
                "status": c.status.value,
                "observed": format_value(c.observed),
                "bound": c.bound,
                "detail": c.detail + (f" ({c.uncertainty()})" if c.uncertainty() else ""),
            }
            for c in checks
        ],
    }


def _calibration(outcome: CalibrationOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "message": outcome.message,
        "notes": [*fpr_lines(outcome), *outcome.notes],
        "solve_ms": f"{outcome.solve_ms:.1f}",
        "budget": f"{outcome.settings.fpr_budget:.2%}",
        "slices": _Table(slice_title(outcome), list(SLICE_COLUMNS), slice_rows(outcome)),
        "comparison": _Table(
            comparison_title(outcome),
            comparison_columns(outcome),
            comparison_rows(outcome),
            caption="global, same FPR*: picked on the held-out day at the slice-level "
            "thresholds' FPR there, the comparison at equal FPR, not a deployable policy",
        ),
    }


def _plot(path: Path) -> dict[str, str]:
    if path.name in _PLOT_CAPTIONS:
        caption = _PLOT_CAPTIONS[path.name]
    else:
        caption = f"calibration curve: {path.stem.removeprefix('curve-')}"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"caption": caption, "name": path.name, "uri": f"data:image/png;base64,{data}"}


def render_page(result: CycleResult, parts: CycleParts) -> str:
    """The page's HTML for ``result``; plots that were never written are left out."""
    if result.promoted:
        verdict = f"promoted: version {result.candidate} serves (was {result.serving_before})"
    else:
        verdict = f"refused at {result.stopped_at}: version {result.serving_before} keeps serving"
        if result.recalibrated:
            verdict += f", recalibrated (record {result.recalibrated})"
    evaluation = parts.evaluation
    context = {
        "result": result,
        "verdict": verdict,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "steps": [
            {
                "name": s.name,
                "ok": s.ok,
                "seconds": f"{s.seconds:.1f}",
                "detail": s.detail,
            }
            for s in result.steps
        ],
        "figures": _figures_table(result.figures, result.day),
        "guardrails": [_guardrail(r) for r in parts.guardrails],
        "models": None
        if evaluation is None
        else _Table(
            summary_title(evaluation, headline_fpr=HEADLINE_FPR),
            summary_columns(evaluation),
            summary_rows(evaluation, headline_fpr=HEADLINE_FPR),
            SUMMARY_CAPTION,
        ),
        "calibration": None if parts.calibration is None else _calibration(parts.calibration),
        "plots": [_plot(p) for p in parts.plots if p.is_file()],
    }
    return _environment().get_template(_TEMPLATE).render(context)


def write_page(result: CycleResult, parts: CycleParts, run_dir: Path) -> Path:
    """Write ``report.html`` into ``run_dir``; its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / PAGE_FILE
    path.write_text(render_page(result, parts), encoding="utf-8")
    return path
