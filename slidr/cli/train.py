"""``slidr train`` and ``slidr evaluate``: offline learning on the archive."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slidr.cli.offline import ArchiveOption, ReportOption, archive_root, report_dir_for, say
from slidr.console import make_console
from slidr.settings import get_settings


def train(
    archive: ArchiveOption = None,
    report_dir: ReportOption = None,
    export: Annotated[
        bool,
        typer.Option(
            "--export/--no-export", help="Write the network as a new Triton model version."
        ),
    ] = True,
) -> None:
    """Train the SLIDR network and its baselines on the archive; export a new model version.

    Clicks get weak labels (purchase within the attribution window, or a high-RFM customer;
    every purchase when the archive's labels are final) and sample weights. The labelled time
    is split in time order: with at least 4 complete days, the last three are held out (early
    stopping, the report's day, a later day left for calibration); otherwise 70/10/10/10 % of
    the labelled span at whole hours, at least 34 h (SLIDR_LEARN__SPLIT,
    SLIDR_LEARN__SPAN_FRACTIONS). Needs Redis (`slidr stack up`) only when the archive has no
    served or offline features yet.
    """
    from models.report import HEADLINE_FPR, summary_table
    from models.train import train as run

    settings = get_settings()
    root = archive_root(settings, archive)
    out = report_dir_for(settings, report_dir, "train")
    outcome = run(root, settings, out, export=export, say=say)
    make_console().print(summary_table(outcome.evaluation, headline_fpr=HEADLINE_FPR))
    say(f"report: {out}")
    if outcome.version is not None:
        say(
            f"model version {outcome.version} is ready; calibrate it with "
            f"`slidr calibrate --version {outcome.version}`"
        )


def evaluate(
    day: Annotated[str, typer.Option("--day", help="The held-out day, YYYY-MM-DD.")],
    version: Annotated[
        list[int],
        typer.Option("--version", help="A model version to evaluate; repeat to compare."),
    ],
    archive: ArchiveOption = None,
    report_dir: ReportOption = None,
) -> None:
    """Compare model versions and the velocity heuristic on one archived day.

    Each version is scored in-process from its Triton artefact; IVR, FPR on purchasing clicks
    and robotic coverage are reported at equal FPR, overall and per slice, with ground truth
    when the archive has it (simulated data).
    """
    from models import baselines
    from models.dataset import load_labelled
    from models.evaluate import evaluate as run
    from models.report import HEADLINE_FPR, summary_table, write_report
    from models.scoring import feature_rows, score_version
    from slidr.model_record import load_record

    settings = get_settings()
    root = archive_root(settings, archive)
    frame, _ = load_labelled(
        root, settings.learn, [day], slice_fields=settings.calibration.slice_fields
    )
    repo, name = settings.triton.model_repository, settings.triton.model_name
    scores = {f"v{v}": score_version(repo, name, v, frame) for v in version}
    thresholds: dict[str, float | dict[str, float]] = {}
    for v in version:
        record = load_record(repo, name, v, settings.worker.global_threshold)
        served = {s: record.threshold(s) for s in frame["slice"].unique()}
        thresholds[f"v{v}"] = served if record.thresholds else record.default_threshold
    scores["velocity_heuristic"] = baselines.velocity_heuristic(feature_rows(frame))
    evaluation = run(frame, scores, thresholds=thresholds, coverage_k=settings.learn.coverage_k)
    out = report_dir_for(settings, report_dir, "evaluate")
    write_report(evaluation, out, headline_fpr=HEADLINE_FPR)
    make_console().print(summary_table(evaluation, headline_fpr=HEADLINE_FPR))
    say(f"report: {out}")


def _figures_line(figures: dict[str, Any]) -> str:
    """The rates as percentages, each followed by its interval where the figures carry one."""
    parts = []
    for key, value in figures.items():
        if isinstance(value, float):
            ci = figures.get(f"{key}_ci")
            parts.append(f"{key} {value:.2%}" + (f" [{ci[0]:.2%}, {ci[1]:.2%}]" if ci else ""))
    return ", ".join(parts)


def retrain(
    day: Annotated[
        str,
        typer.Option(
            "--day",
            envvar="SLIDR_RETRAIN_DAY",
            help="The newest day to learn from, YYYY-MM-DD: it is the later held-out day that "
            "checks the calibration; the model trains on the days before it.",
        ),
    ],
    archive: ArchiveOption = None,
    report_dir: ReportOption = None,
) -> None:
    """Run the daily cycle: labels, data guardrails, train, calibrate, model guardrails, promote.

    A failed or refused step stops the cycle and the serving version keeps serving; refused
    at calibrate or the model guardrails, the serving version is recalibrated on the same
    days instead, behind the same absolute checks and budget. The run directory's cycle.json
    and guardrail reports say which check failed, with the numbers; its report.html shows the
    whole run on one page (open it in a browser).
    Schedule it once a day (docs/lifecycle.md shows a cron line). Exit code 3 when refused.
    """
    from models.daily import DailyCycle
    from slidr.registry import TritonVersions

    settings = get_settings()
    root = archive_root(settings, archive)
    out = report_dir_for(settings, report_dir, f"retrain-{day}")
    cycle = DailyCycle(settings, out, TritonVersions(settings.triton), say=say)
    result = cycle.run(root, day)
    for name, figures in result.figures.items():
        say(f"{name} on {day}: {_figures_line(figures)}")
    say(f"run: {out}")
    if result.page is not None:
        say(f"report: {result.page}")
    if not result.promoted:
        again = f", recalibrated (record {result.recalibrated})" if result.recalibrated else ""
        say(f"refused at {result.stopped_at}; version {result.serving_before} keeps serving{again}")
        raise typer.Exit(3)
    say(f"version {result.candidate} is serving (was {result.serving_before})")
