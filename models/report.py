"""An evaluation for people: ``report.json``, PNG plots and a compact terminal table.

Plots (matplotlib, imported only when a plot is drawn: it is slow to import):

- ``ivr_fpr.png``: the IVR-FPR curve of every model, overall and one panel per slice;
- ``coverage_fpr.png``: the same for robotic coverage;
- ``hourly_ivr.png``: IVR per hour of day of every model at the headline FPR point.

Dotted verticals mark the FPR points; a served threshold is a marker on its model's curve.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.table import Table

from models.evaluate import HOURS, Evaluation, EvaluationError, Figures, ModelEvaluation
from slidr.metrics import REPORT_CONFIDENCE, Rates, z_two_sided

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The FPR point the terminal table and the per-hour plot show.
HEADLINE_FPR = 0.01
REPORT_FILE = "report.json"
IVR_FPR_PLOT = "ivr_fpr.png"
COVERAGE_FPR_PLOT = "coverage_fpr.png"
HOURLY_IVR_PLOT = "hourly_ivr.png"
#: Every plot ``write_report`` draws, in the order a reader should see them.
PLOTS = (IVR_FPR_PLOT, COVERAGE_FPR_PLOT, HOURLY_IVR_PLOT)
_PANEL_COLUMNS = 3
_DPI = 110


def write_report(
    evaluation: Evaluation,
    out_dir: Path,
    *,
    headline_fpr: float = HEADLINE_FPR,
    context: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write the JSON report and the three plots into ``out_dir``; return their paths.

    ``context``: more top-level entries for ``report.json`` (e.g. the time split).
    """
    _check_headline(evaluation, headline_fpr)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / REPORT_FILE
    content = {**(context or {}), **evaluation.to_dict()}
    report.write_text(json.dumps(content, indent=2, allow_nan=False) + "\n")
    plots = [
        plot_curves(evaluation, "ivr", out_dir / IVR_FPR_PLOT),
        plot_curves(evaluation, "coverage", out_dir / COVERAGE_FPR_PLOT),
        plot_hourly_ivr(evaluation, out_dir / HOURLY_IVR_PLOT, headline_fpr=headline_fpr),
    ]
    return [report, *plots]


def _check_headline(evaluation: Evaluation, headline_fpr: float) -> None:
    if not any(math.isclose(p, headline_fpr) for p in evaluation.fpr_points):
        points = ", ".join(f"{p:g}" for p in evaluation.fpr_points)
        raise EvaluationError(
            f"headline FPR {headline_fpr:g} is not an evaluated FPR point; pick one of {points}"
        )


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}%}"


def _ci(r: Rates, metric: str, digits: int = 1) -> str:
    """A rate with its 95 % Wilson interval: "1.95% [1.3, 2.8]"."""
    value = float(getattr(r, metric))
    if math.isnan(value):
        return "n/a"
    low, high = r.interval(metric, z_two_sided(REPORT_CONFIDENCE))
    return f"{value:.{digits}%} [{low * 100:.{digits}f}, {high * 100:.{digits}f}]"


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _threshold(value: float | dict[str, float]) -> str:
    return "per slice" if isinstance(value, dict) else _num(value)


def _row(
    name: str, model: ModelEvaluation, threshold: float | dict[str, float], f: Figures
) -> list[str]:
    row = [
        name,
        _threshold(threshold),
        _num(model.auc_purchased),
        _num(model.auc_label),
        _ci(f.rates, "ivr"),
        _ci(f.rates, "fpr", 2),
        _ci(f.rates, "coverage"),
    ]
    if f.truth is not None:
        row += [_pct(f.truth.bot_recall), _pct(f.truth.precision), _pct(f.truth.human_fpr, 2)]
    return row


def summary_columns(evaluation: Evaluation) -> list[str]:
    columns = ["model", "threshold", "AUC purch.", "AUC label", "IVR", "FPR", "coverage"]
    if evaluation.has_truth:
        columns += ["bot recall", "precision", "human FPR"]
    return columns


def summary_title(evaluation: Evaluation, *, headline_fpr: float = HEADLINE_FPR) -> str:
    return f"{evaluation.clicks:,} clicks at FPR <= {headline_fpr:.1%} on purchasing clicks"


SUMMARY_CAPTION = (
    "AUC purch.: ROC-AUC of a low score for purchasing clicks; AUC label: ROC-AUC of the weak "
    "label; [low, high]: 95 % Wilson interval in %"
)


def summary_rows(evaluation: Evaluation, *, headline_fpr: float = HEADLINE_FPR) -> list[list[str]]:
    """The cells of ``summary_table``, one row per model (and per served threshold)."""
    _check_headline(evaluation, headline_fpr)
    rows = []
    for name, model in evaluation.models.items():
        point = model.at(headline_fpr)
        rows.append(_row(name, model, point.threshold, point.overall))
        if model.served is not None:
            served = model.served
            rows.append(_row(f"{name} (served)", model, served.threshold, served.overall))
    return rows


def summary_table(evaluation: Evaluation, *, headline_fpr: float = HEADLINE_FPR) -> Table:
    """Model x (threshold, AUCs, IVR, FPR, coverage[, truth]) at ``headline_fpr``, overall.

    A model with served thresholds gets a second row, "NAME (served)", at those thresholds.
    """
    table = Table(
        *summary_columns(evaluation),
        title=summary_title(evaluation, headline_fpr=headline_fpr),
        caption=SUMMARY_CAPTION,
    )
    for row in summary_rows(evaluation, headline_fpr=headline_fpr):
        table.add_row(*row)
    return table


def _bar(value: float, interval: tuple[float, float]) -> list[list[float]] | None:
    """An error bar from an interval around ``value``; None where either is not finite."""
    low, high = interval
    if not all(math.isfinite(v) for v in (value, low, high)):
        return None
    return [[max(value - low, 0.0)], [max(high - value, 0.0)]]


def _figure(panels: int) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    columns = min(panels, _PANEL_COLUMNS)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return figure, axes[:panels]


def _panel_title(evaluation: Evaluation, panel: str) -> str:
    # Click counts do not depend on the model or threshold: read them off any point.
    point = next(iter(evaluation.models.values())).at_fpr[0]
    counts = (point.overall if panel == "all" else point.slices[panel]).rates
    note = "" if counts.purchasing else ", no purchasing clicks"
    return f"{panel} ({counts.clicks:,} clicks{note})"


def plot_curves(evaluation: Evaluation, metric: Literal["ivr", "coverage"], path: Path) -> Path:
    """One panel overall and one per slice, every model's ``metric`` against FPR."""
    label = {"ivr": "IVR", "coverage": "robotic coverage"}[metric]
    panels = ["all", *evaluation.slices]
    figure, axes = _figure(len(panels))
    fpr_max = min(1.0, 2 * max(evaluation.fpr_points))
    for panel, ax in zip(panels, axes, strict=True):
        for name, model in evaluation.models.items():
            c = model.curve if panel == "all" else model.slice_curves[panel]
            (line,) = ax.plot(c.fpr, getattr(c, metric), label=name, linewidth=1.4)
            if model.served is not None:
                served = model.served.overall if panel == "all" else model.served.slices[panel]
                # The served point with its 95 % Wilson intervals on both axes.
                z = z_two_sided(REPORT_CONFIDENCE)
                x, y = served.rates.fpr, getattr(served.rates, metric)
                ax.errorbar(
                    x,
                    y,
                    xerr=_bar(x, served.rates.interval("fpr", z)),
                    yerr=_bar(y, served.rates.interval(metric, z)),
                    marker="o",
                    color=line.get_color(),
                    linestyle="none",
                    capsize=2,
                )
        for point in evaluation.fpr_points:
            ax.axvline(point, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(_panel_title(evaluation, panel), fontsize=9)
        ax.set_xlim(0.0, fpr_max)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("FPR (purchasing clicks invalidated)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, loc="lower right")
    figure.suptitle(f"{label} against FPR; dots: served thresholds, bars: 95 % intervals")
    figure.savefig(path, dpi=_DPI)
    return path


def plot_hourly_ivr(
    evaluation: Evaluation, path: Path, *, headline_fpr: float = HEADLINE_FPR
) -> Path:
    """IVR in each hour of day, every model at its ``headline_fpr`` threshold."""
    _check_headline(evaluation, headline_fpr)
    figure, (ax,) = _figure(1)
    hours = list(range(HOURS))
    for name, model in evaluation.models.items():
        ax.plot(hours, model.at(headline_fpr).hourly_ivr, marker=".", label=name)
    ax.set_xticks(hours[::3])
    ax.set_xlabel("hour of day (UTC)")
    ax.set_ylabel("IVR")
    ax.set_ylim(bottom=0.0)
    ax.set_title(f"IVR per hour at FPR <= {headline_fpr:.1%}", fontsize=9)
    ax.legend(fontsize=8)
    figure.savefig(path, dpi=_DPI)
    return path
